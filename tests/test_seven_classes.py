"""The generated benchmark with another class set (7 classes, Cityscapes' categories): train,
adapt, evaluate, predict and report from the command line, so the non-Cityscapes-19 path runs."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from drsl.cli import main
from drsl.data.classes import load_class_set

TINY = [
    "data.batch_size=2", "data.num_workers=0", "train.iterations=2", "train.checkpoint_every=2",
    "train.log_every=1", "model.light_width=1", "adapt.rounds=2",
    "data.source_augment.crop_size=[32,32]", "data.target_augment.crop_size=[32,32]",
]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("seven")
    data = root / "data"
    assert main(["data", "synth", str(data), "--num-source", "4", "--num-target-train", "4",
                 "--num-target-val", "2", "--workers", "1"]) == 0
    roots = [f"data.source.root={data}/source", f"data.target.root={data}/target", f"data.val.root={data}/target"]
    assert main(["train", "synth7/source_only", *roots, *TINY, f"work_dir={root}/runs/so"]) == 0
    checkpoint = f"init_checkpoint={root}/runs/so/checkpoints/latest.pt"
    assert main(["train", "synth7/drsl", *roots, *TINY, checkpoint, f"work_dir={root}/runs/drsl"]) == 0
    return root


def test_runs_are_seven_class_runs(runs: Path) -> None:
    names = list(load_class_set("cityscapes7").names)
    for run in ("so", "drsl"):
        summary = json.loads((runs / "runs" / run / "eval.json").read_text())
        assert list(summary["miou"]) == ["7"] and list(summary["per_class_iou"]) == names
        assert len(summary["confusion_matrix"]) == 7 and summary["class_set"] == "cityscapes7"
        assert load_class_set(str(runs / "runs" / run / "classes.yaml")).names == tuple(names)
    manifest = json.loads((runs / "runs" / "drsl" / "pseudo_labels" / "round_1" / "manifest.json").read_text())
    assert list(manifest["thresholds"]) == names


def test_evaluate_predict_and_report(runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    checkpoint = runs / "runs" / "drsl" / "checkpoints" / "latest.pt"
    assert main(["evaluate", str(checkpoint), "--out", str(runs / "eval.json")]) == 0
    assert "mIoU (7)" in capsys.readouterr().out
    assert json.loads((runs / "eval.json").read_text())["class_set"] == "cityscapes7"
    assert main(["evaluate", str(checkpoint), "--head", "mmdl", "--out", str(runs / "eval_mmdl.json")]) == 0
    assert "mmdl head" in capsys.readouterr().out
    assert json.loads((runs / "eval_mmdl.json").read_text())["head"] == "mmdl"
    assert main(["pseudo-label", str(checkpoint), "--out", str(runs / "pl"), "--portion", "0.5"]) == 0
    assert "% of the predicted pixels kept" in capsys.readouterr().out
    manifest = json.loads((runs / "pl" / "manifest.json").read_text())
    assert list(manifest["thresholds"]) == list(load_class_set("cityscapes7").names)
    image = sorted((runs / "data" / "target" / "leftImg8bit" / "val").rglob("*.png"))[0]
    assert main(["predict", str(checkpoint), str(image), "--out", str(runs / "pred")]) == 0
    labels = np.asarray(Image.open(next((runs / "pred" / "labels").glob("*.png"))))
    colours = np.asarray(Image.open(next((runs / "pred" / "color").glob("*.png"))))
    assert labels.max() < 7
    np.testing.assert_array_equal(colours, load_class_set("cityscapes7").colorize(labels))
    assert main(["report", str(runs / "runs" / "so"), str(runs / "runs" / "drsl"), "--samples", "1"]) == 0
    html = (runs / "runs" / "report.html").read_text()  # the folder holding both runs
    assert all(name in html for name in ("flat", "construction", "vehicle", "mIoU 7", "change vs source-only"))
