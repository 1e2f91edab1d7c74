"""drsl predict and drsl export on tiny checkpoints trained on fixture data."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from drsl.api import load_model
from drsl.commands import export, predict
from drsl.config import ConfigError, load_config
from drsl.configs import resolve_config_path
from drsl.training import run_training
from fixtures import CITYSCAPES19, random_image, save_image, write_uda_root

SIZE = (40, 56)
KINDS = ("labels", "color", "overlay", "confidence")


def train_tiny_runs(root: Path) -> dict[str, Path]:
    """Fixture data under ``root`` and two 2-iteration run directories: source_only and drsl."""
    write_uda_root(root, source=4, target_train=2, size=SIZE)
    common = [
        f"data.source.root={root}/src", f"data.target.root={root}/tgt", f"data.val.root={root}/tgt",
        "data.batch_size=2", "data.num_workers=0", "train.iterations=2", "train.checkpoint_every=2",
        "train.log_every=1", "model.light_width=1", "adapt.rounds=2",
        "data.source_augment.crop_size=[32,32]", "data.target_augment.crop_size=[32,32]",
    ]
    runs = {"source_only": root / "source_only", "drsl": root / "drsl"}
    run_training(load_config(resolve_config_path("synth/source_only"), [*common, f"work_dir={runs['source_only']}"]))
    init = runs["source_only"] / "checkpoints" / "latest.pt"
    drsl = [*common, f"work_dir={runs['drsl']}", f"init_checkpoint={init}"]
    run_training(load_config(resolve_config_path("synth/drsl"), drsl))
    return runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return train_tiny_runs(tmp_path_factory.mktemp("runs"))


def checkpoint(runs: dict[str, Path], method: str) -> Path:
    return runs[method] / "checkpoints" / "latest.pt"


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command")
    predict.add_parser(sub)
    export.add_parser(sub)
    return parser.parse_args(list(argv))


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, Path]:
    """A folder with a nested sub-folder (PNG and JPEG, two sizes) and a loose file."""
    rng = np.random.default_rng(1)
    folder = tmp_path / "images"
    paths = {
        "a": save_image(folder / "a.png", random_image(SIZE, rng)),
        "b": save_image(folder / "b.png", random_image(SIZE, rng)),
        "sub/deep/c": save_image(folder / "sub" / "deep" / "c.JPG", random_image((24, 30), rng)),
        "loose": save_image(tmp_path / "loose.jpeg", random_image((33, 47), rng)),
    }
    (folder / "notes.txt").write_text("not an image")
    return paths


def outputs(out: Path, kind: str) -> list[str]:
    return sorted(p.relative_to(out / kind).with_suffix("").as_posix() for p in (out / kind).rglob("*") if p.is_file())


def test_predict_writes_every_output(runs: dict[str, Path], inputs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = parse("predict", str(checkpoint(runs, "drsl")), str(tmp_path / "images"), str(inputs["loose"]),
                 "--out", str(out))
    assert predict.run(args) == 0
    names = sorted(inputs)
    for kind in (*KINDS, "modes", "modes_raw"):
        assert outputs(out, kind) == names, kind
    assert sorted(p.name for p in out.iterdir()) == sorted([*KINDS, "modes", "modes_raw"])
    for name, source in inputs.items():
        image = np.asarray(Image.open(source))
        labels = np.asarray(Image.open(out / "labels" / f"{name}.png"))
        assert labels.shape == image.shape[:2] and labels.dtype == np.uint8
        assert labels.max() < CITYSCAPES19.num_classes
        np.testing.assert_array_equal(np.asarray(Image.open(out / "color" / f"{name}.png")), CITYSCAPES19.colorize(labels))
        assert Image.open(out / "overlay" / f"{name}.jpg").size == Image.open(source).size
        confidence = Image.open(out / "confidence" / f"{name}.png")
        assert confidence.size == Image.open(source).size and confidence.mode == "L"
        modes = np.asarray(Image.open(out / "modes_raw" / f"{name}.png"))
        assert modes.shape == labels.shape and modes.max() < 3
        assert np.asarray(Image.open(out / "modes" / f"{name}.png")).shape == (*labels.shape, 3)


def test_source_only_checkpoint_has_no_modes(runs: dict[str, Path], inputs: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "out"
    args = parse("predict", str(checkpoint(runs, "source_only")), str(inputs["a"]), "--out", str(out), "--panels")
    assert predict.run(args) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted([*KINDS, "panel"])
    assert outputs(out, "panel") == ["a"]


def test_batching_and_test_time_options(runs: dict[str, Path], inputs: dict[str, Path], tmp_path: Path) -> None:
    folder = str(tmp_path / "images")
    ckpt = str(checkpoint(runs, "drsl"))
    predict.run(parse("predict", ckpt, folder, "--out", str(tmp_path / "one"), "--batch-size", "1"))
    predict.run(parse("predict", ckpt, folder, "--out", str(tmp_path / "four"), "--batch-size", "4"))
    for name in ("a", "b", "sub/deep/c"):
        one = np.asarray(Image.open(tmp_path / "one" / "labels" / f"{name}.png"))
        four = np.asarray(Image.open(tmp_path / "four" / "labels" / f"{name}.png"))
        np.testing.assert_array_equal(one, four)
    slide = parse("predict", ckpt, folder, "--out", str(tmp_path / "slide"), "--mode", "slide",
                  "--crop-size", "16", "16", "--stride", "8", "8", "--flip", "--scales", "1", "0.75")
    assert predict.run(slide) == 0
    assert np.asarray(Image.open(tmp_path / "slide" / "labels" / "a.png")).shape == SIZE


def test_bad_inputs_are_skipped_counted_and_named(
    runs: dict[str, Path], inputs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "images" / "sub" / "broken.png"
    broken.write_bytes(b"not a png")
    out = tmp_path / "out"
    args = parse("predict", str(checkpoint(runs, "source_only")), str(tmp_path / "images"),
                 str(tmp_path / "missing.png"), "--out", str(out))
    assert predict.run(args) == 1
    captured = capsys.readouterr()
    assert str(broken) in captured.err and "missing.png" in captured.err
    assert "2 input(s) failed" in captured.out
    assert outputs(out, "labels") == ["a", "b", "sub/deep/c"]


def test_output_names_cannot_escape(tmp_path: Path) -> None:
    for bad in ("../x", "a/../../x", "/etc/x", ""):
        with pytest.raises(ValueError):
            predict.check_name(bad)
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "out" / "labels").mkdir(parents=True)
    (tmp_path / "out" / "labels" / "link").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ValueError, match="escape"):
        predict.output_path(tmp_path / "out", "labels", "link/x", ".png")
    assert predict.output_path(tmp_path / "out", "labels", "sub/x", ".png").parent.name == "sub"


def test_export_round_trip(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    original = checkpoint(runs, "drsl")
    exported = tmp_path / "slim.pt"
    assert export.run(parse("export", str(original), str(exported))) == 0
    assert "MB" in capsys.readouterr().out
    assert exported.stat().st_size < original.stat().st_size
    image = random_image(SIZE, np.random.default_rng(2))
    full, slim = load_model(original, device="cpu"), load_model(exported, device="cpu")
    assert slim.classes == full.classes and slim.classes.name == "cityscapes19"  # the class set travels
    labels = full.segment(image)
    np.testing.assert_array_equal(labels, slim.segment(image))
    np.testing.assert_array_equal(full.mode_map(image, labels), slim.mode_map(image, labels))


def test_a_checkpoint_whose_stored_config_is_outdated_needs_config(runs: dict[str, Path], tmp_path: Path) -> None:
    """A checkpoint written by a drsl version with a config key since removed: one error naming the
    file and the key, and ``config=`` (``--config``) loads it."""
    state = torch.load(checkpoint(runs, "source_only"), weights_only=True)
    state["config"]["adapt"]["pseudo_label"]["save_confidence"] = True
    old = tmp_path / "old.pt"
    torch.save(state, old)
    with pytest.raises(ConfigError, match=r"old\.pt stores a config .*save_confidence.*pass --config"):
        load_model(old, device="cpu")
    current = tmp_path / "current.yaml"
    state["config"]["adapt"]["pseudo_label"].pop("save_confidence")
    current.write_text(yaml.safe_dump(state["config"]))
    assert load_model(old, config=current, device="cpu").classes.name == "cityscapes19"


def test_pseudo_label_uses_the_runs_own_fusion_and_says_which(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from drsl.cli import main

    state = torch.load(checkpoint(runs, "drsl"), weights_only=True)
    state["config"]["adapt"]["pseudo_label"]["fusion"] = "confident"
    confident = tmp_path / "confident.pt"
    torch.save(state, confident)
    assert main(["pseudo-label", str(confident), "--out", str(tmp_path / "run_fusion"), "--device", "cpu"]) == 0
    assert "fusion confident, the run's adapt.pseudo_label.fusion" in capsys.readouterr().out
    assert json.loads((tmp_path / "run_fusion" / "manifest.json").read_text())["fusion"] == "confident"
    out = tmp_path / "given"
    assert main(["pseudo-label", str(confident), "--out", str(out), "--fusion", "none", "--device", "cpu"]) == 0
    assert "fusion none, given by --fusion" in capsys.readouterr().out


def test_a_checkpoint_recorded_with_the_old_method_name_loads(runs: dict[str, Path], tmp_path: Path) -> None:
    state = torch.load(checkpoint(runs, "source_only"), weights_only=True)
    state["config"]["adapt"]["method"] = "cbst"  # self_training's former name
    old = tmp_path / "old_method.pt"
    torch.save(state, old)
    assert load_model(old, device="cpu").config.adapt.method == "self_training"
