"""Our 19-class IoUs agree with the official Cityscapes evaluator (cityscapesscripts)."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from drsl.data.classes import load_class_set
from drsl.data.labels import apply_lookup
from drsl.evaluation.metrics import ConfusionMatrix, mean_iou, per_class_iou

CLASSES = load_class_set("cityscapes19")
CLASS_NAMES = CLASSES.names
CITYSCAPES_TABLE = CLASSES.mapping("cityscapes").table()

cs_eval = pytest.importorskip("cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling")

CITIES = ("aachen", "bochum", "ulm")
BUS, TRUCK, TRAIN = 28, 27, 31  # label ids used to build the special cases below
IGNORED_IDS = (0, 1, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30)


def _random_pair(rng: np.random.Generator, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(gt, pred) in Cityscapes label ids with these special cases:

    * train (31) never appears in gt or prediction: IoU NaN, left out of the mean;
    * bus (28) is predicted but never in gt: IoU 0, kept in the mean;
    * truck (27) is predicted only where gt is ignored: IoU NaN (no FP on ignored gt);
    * some predictions are non-evaluated ids (0, 4, ...): misses for the gt class.
    """
    gt_ids = [i for i in range(34) if i not in (TRAIN, BUS, TRUCK)]
    gt = rng.choice(gt_ids, size=shape).astype(np.uint8)
    pred = rng.choice([i for i in range(34) if i not in (TRAIN, TRUCK)], size=shape)
    agree = rng.random(shape) < 0.5  # make IoUs non-trivial
    pred = np.where(agree, gt, pred)
    pred = np.where(np.isin(gt, IGNORED_IDS) & (rng.random(shape) < 0.3), TRUCK, pred)
    return gt, pred.astype(np.uint8)


def _write_dataset(root: Path, seed: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Write gtFine/val/<city>/*_gtFine_labelIds.png and results/*.png; return (gt, pred)."""
    rng = np.random.default_rng(seed)
    pairs = []
    for index, city in enumerate(CITIES):
        gt, pred = _random_pair(rng, (48, 96))
        stem = f"{city}_{index:06d}_{19 + index:06d}"
        gt_dir = root / "gtFine" / "val" / city
        gt_dir.mkdir(parents=True)
        (root / "results").mkdir(exist_ok=True)
        Image.fromarray(gt).save(gt_dir / f"{stem}_gtFine_labelIds.png")
        Image.fromarray(pred).save(root / "results" / f"{stem}_leftImg8bit.png")
        pairs.append((gt, pred))
    return pairs


def _official(root: Path) -> dict:
    """Run evalPixelLevelSemanticLabeling programmatically: quiet, no JSON, no instance scores."""
    args = copy.copy(cs_eval.args)
    args.cityscapesPath = str(root)
    args.groundTruthSearch = str(root / "gtFine" / "val" / "*" / "*_gtFine_labelIds.png")
    args.predictionPath = str(root / "results")
    args.predictionWalk = None
    args.exportFile = str(root / "result.json")
    args.evalInstLevelScore = False
    args.evalPixelAccuracy = False
    args.JSONOutput = False
    args.quiet = True
    args.colorized = False
    args.bold = args.nocol = ""
    gt_files = sorted(str(p) for p in root.glob("gtFine/val/*/*_gtFine_labelIds.png"))
    pred_files = [cs_eval.getPrediction(args, gt) for gt in gt_files]
    return cs_eval.evaluateImgLists(pred_files, gt_files, args)


@pytest.mark.parametrize("seed", [0, 1])
def test_miou_matches_cityscapesscripts(tmp_path: Path, seed: int) -> None:
    pairs = _write_dataset(tmp_path, seed)
    official = _official(tmp_path)

    cm = ConfusionMatrix(CLASSES.num_classes)
    for gt, pred in pairs:
        cm.update(apply_lookup(CITYSCAPES_TABLE, pred), apply_lookup(CITYSCAPES_TABLE, gt))
    ours = per_class_iou(cm.matrix)

    for name, value in zip(CLASS_NAMES, ours):
        theirs = official["classScores"][name]
        assert math.isnan(value) == math.isnan(theirs), name
        if not math.isnan(value):
            assert value == pytest.approx(theirs, abs=1e-4), name
    assert mean_iou(cm.matrix) == pytest.approx(official["averageScoreClasses"], abs=1e-4)
    # The special cases really occurred.
    assert math.isnan(ours[CLASS_NAMES.index("train")])
    assert math.isnan(ours[CLASS_NAMES.index("truck")])
    assert ours[CLASS_NAMES.index("bus")] == 0.0
    assert cm.matrix[:, -1].sum() > 0
