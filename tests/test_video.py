"""drsl predict on a short generated video: an overlay video with every frame, per-frame labels on
request equal to segmenting the decoded frames one by one, whatever the batch size."""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image

from drsl.api import load_model
from drsl.commands import predict
from drsl.data.video import VideoReader
from test_predict import train_tiny_runs

FRAMES, SIZE = 7, (40, 56)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_runs(tmp_path_factory.mktemp("video"))["source_only"] / "checkpoints" / "latest.pt"


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    """A 7-frame MP4 of a bright square moving over a gradient (written with OpenCV)."""
    path = tmp_path / "drive.mp4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (SIZE[1], SIZE[0]))
    gradient = np.linspace(0, 200, SIZE[1], dtype=np.uint8)[None, :, None].repeat(SIZE[0], 0).repeat(3, 2)
    for index in range(FRAMES):
        frame = gradient.copy()
        frame[10:25, 4 + 5 * index:19 + 5 * index] = (255, 220, 40)
        writer.write(frame)
    writer.release()
    return path


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    predict.add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(["predict", *argv])


def decoded_frames(path: Path) -> list[np.ndarray]:
    with VideoReader(path) as reader:
        return [frame for batch in reader.batches(100) for frame in batch]


def test_video_gives_an_overlay_video_and_frame_labels(checkpoint: Path, clip: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert predict.run(parse(str(checkpoint), str(clip), "--out", str(out), "--batch-size", "3", "--frame-labels")) == 0
    overlay = decoded_frames(out / "overlay" / "drive.mp4")
    assert len(overlay) == FRAMES and overlay[0].shape == (*SIZE, 3)
    labels = sorted((out / "labels" / "drive").glob("*.png"))
    assert [p.name for p in labels] == [f"{i:06d}.png" for i in range(FRAMES)]
    model = load_model(checkpoint, device="cpu")
    for frame, path in zip(decoded_frames(clip), labels):
        np.testing.assert_array_equal(np.asarray(Image.open(path)), model.segment(frame))
    assert not list((out / "overlay").glob(".*"))  # no partial file left


def test_batch_size_does_not_change_the_labels(checkpoint: Path, clip: Path, tmp_path: Path) -> None:
    for batch in ("1", "4"):
        assert predict.run(parse(str(checkpoint), str(clip), "--out", str(tmp_path / batch), "--batch-size", batch, "--frame-labels")) == 0
    for index in range(FRAMES):
        one, four = (np.asarray(Image.open(tmp_path / b / "labels" / "drive" / f"{index:06d}.png")) for b in ("1", "4"))
        np.testing.assert_array_equal(one, four)


def test_an_unreadable_video_is_skipped_and_named(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video")
    assert predict.run(parse(str(checkpoint), str(broken), "--out", str(tmp_path / "out"))) == 1
    assert str(broken) in capsys.readouterr().err
