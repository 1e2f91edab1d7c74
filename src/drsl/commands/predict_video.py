"""``drsl predict`` on video files: frames are segmented in batches and written as an overlay
video (``overlay/NAME.mp4``) and, on request, one label PNG per frame (``labels/NAME/000000.png``)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from drsl.data.video import VideoReader
from drsl.engine.logging import progress
from drsl.fileio import atomic_write_png
from drsl.viz.overlay import label_overlay
from drsl.viz.video import VideoWriter

if TYPE_CHECKING:
    from drsl.api import SegmentationModel


def segment_frames(model: SegmentationModel, frames: list[np.ndarray]) -> np.ndarray:
    """Class ids (B, H, W) uint8 of a batch of same-size RGB frames, in one forward pass."""
    import torch

    batch = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)
    return model.probabilities(batch).argmax(1).to(torch.uint8).cpu().numpy()


def predict_video(
    model: SegmentationModel, path: Path, name: str, out_dir: Path, batch_size: int, alpha: float, frame_labels: bool
) -> int:
    """Segment every frame of ``path`` into the outputs called ``name``; returns the number of
    frames written."""
    with VideoReader(path) as reader, VideoWriter(out_dir / "overlay" / f"{name}.mp4", reader.fps) as writer:
        bar = progress(total=reader.frame_count, desc=f"predict {path.name}", unit="frame")
        with bar:
            for frames in reader.batches(batch_size):
                for frame, labels in zip(frames, segment_frames(model, frames)):
                    writer.write(label_overlay(frame, labels, model.classes, alpha))
                    if frame_labels:
                        atomic_write_png(out_dir / "labels" / name / f"{writer.frames - 1:06d}.png", labels)
                bar.update(len(frames))
        return writer.frames
