"""Confusion matrix and IoU metrics: property tests against naive definitions."""

from __future__ import annotations

import json
import math
import os
import random

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from drsl.data.classes import load_class_set
from drsl.data.labels import IGNORE_INDEX
from drsl.evaluation.metrics import (
    ConfusionMatrix,
    format_table,
    mean_iou,
    per_class_iou,
    pixel_accuracy,
    summarize,
)

FAST = settings(max_examples=40, deadline=None)
CLASSES = load_class_set("cityscapes19")
CLASS_NAMES = CLASSES.names
CLASS_SUBSETS = CLASSES.subsets


@st.composite
def pairs(draw: st.DrawFn, num_classes: int, max_side: int = 6) -> tuple[np.ndarray, np.ndarray]:
    """(pred, label) of one random shape, with ignored labels and out-of-range predictions."""
    shape = draw(hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=max_side))
    values = st.one_of(st.integers(-1, num_classes + 1), st.just(IGNORE_INDEX))
    pred = draw(hnp.arrays(np.int64, shape, elements=values))
    label = draw(hnp.arrays(np.int64, shape, elements=values))
    return pred, label


def naive_matrix(pred: np.ndarray, label: np.ndarray, num_classes: int) -> np.ndarray:
    matrix = np.zeros((num_classes, num_classes + 1), dtype=np.int64)
    for p, g in zip(pred.ravel().tolist(), label.ravel().tolist()):
        if 0 <= g < num_classes:
            matrix[g, p if 0 <= p < num_classes else num_classes] += 1
    return matrix


def naive_iou(matrix: np.ndarray, c: int) -> float:
    tp = matrix[c, c]
    fn = matrix[c].sum() - tp
    fp = matrix[: matrix.shape[0], c].sum() - tp
    return math.nan if tp + fp + fn == 0 else tp / (tp + fp + fn)


@FAST
@given(st.integers(1, 6).flatmap(lambda c: st.tuples(st.just(c), pairs(c))))
def test_matrix_equals_naive_count(case: tuple[int, tuple[np.ndarray, np.ndarray]]) -> None:
    num_classes, (pred, label) = case
    expected = naive_matrix(pred, label, num_classes)
    for convert in (np.asarray, torch.from_numpy):
        cm = ConfusionMatrix(num_classes)
        cm.update(convert(pred), convert(label))
        assert cm.matrix.dtype == np.int64
        np.testing.assert_array_equal(cm.matrix, expected)
    iou = per_class_iou(expected)
    for c in range(num_classes):
        assert np.isnan(iou[c]) == math.isnan(naive_iou(expected, c))
        if not np.isnan(iou[c]):
            assert iou[c] == pytest.approx(naive_iou(expected, c))
            assert 0.0 <= iou[c] <= 1.0
    miou = mean_iou(expected, range(num_classes))
    assert math.isnan(miou) or 0.0 <= miou <= 1.0


@FAST
@given(st.lists(pairs(5), min_size=1, max_size=4))
def test_merge_equals_update_on_concatenation(batches: list[tuple[np.ndarray, np.ndarray]]) -> None:
    merged = ConfusionMatrix(5)
    for pred, label in batches:
        part = ConfusionMatrix(5)
        part.update(pred, label)
        merged.merge(part)
    whole = ConfusionMatrix(5)
    whole.update(
        np.concatenate([p.ravel() for p, _ in batches]),
        np.concatenate([g.ravel() for _, g in batches]),
    )
    np.testing.assert_array_equal(merged.matrix, whole.matrix)


@FAST
@given(st.lists(pairs(19), min_size=1, max_size=4), st.randoms(use_true_random=False))
def test_miou_invariant_to_image_order(batches: list, rnd: random.Random) -> None:
    forward = ConfusionMatrix(19)
    for pred, label in batches:
        forward.update(pred, label)
    shuffled = list(batches)
    rnd.shuffle(shuffled)
    backward = ConfusionMatrix(19)
    for pred, label in shuffled:
        backward.update(torch.from_numpy(pred), torch.from_numpy(label))
    for ids in CLASS_SUBSETS.values():
        a, b = mean_iou(forward.matrix, ids), mean_iou(backward.matrix, ids)
        assert (math.isnan(a) and math.isnan(b)) or a == b


@FAST
@given(hnp.arrays(np.uint8, hnp.array_shapes(max_dims=3, max_side=8), elements=st.integers(0, 20)))
def test_perfect_prediction_has_miou_one(label: np.ndarray) -> None:
    cm = ConfusionMatrix(19)
    cm.update(label, label)
    for ids in CLASS_SUBSETS.values():
        present = np.isin(label, ids).any()
        assert mean_iou(cm.matrix, ids) == 1.0 if present else math.isnan(mean_iou(cm.matrix, ids))
    if (label < 19).any():
        assert pixel_accuracy(cm.matrix) == 1.0


@FAST
@given(st.lists(pairs(19, max_side=8), min_size=1, max_size=3), st.sampled_from([16, 13]))
def test_subset_miou_equals_matrix_on_subset_indices(batches: list, k: int) -> None:
    """The 16/13-class mIoU read from the 19-class matrix equals the mIoU of a matrix built
    directly on the subset's classes (its classes renumbered 0..k-1, every other class merged
    into one extra class k, ignored pixels still ignored)."""
    ids = CLASS_SUBSETS[k]
    remap = np.full(257, IGNORE_INDEX, dtype=np.int64)  # index -1 (last) stays ignored
    remap[:19] = k
    remap[list(ids)] = np.arange(k)
    full, sub = ConfusionMatrix(19), ConfusionMatrix(k + 1)
    for pred, label in batches:
        full.update(pred, label)
        sub.update(np.where((pred >= 0) & (pred < 19), remap[pred], -1), remap[label])
    a, b = mean_iou(full.matrix, ids), mean_iou(sub.matrix, range(k))
    assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b)


def test_iou_nan_only_when_absent_from_gt_and_prediction() -> None:
    cm = ConfusionMatrix(4)
    # class 0 right, class 1 predicted on class 0 (IoU 0), class 2 predicted only on ignored
    # pixels (NaN), class 3 never seen (NaN), one class-0 pixel predicted as 255 (a miss).
    cm.update(np.array([0, 0, 1, 2, 0]), np.array([0, 0, 255, 255, 0]))
    cm.update(np.array([1, 255]), np.array([0, 0]))
    iou = per_class_iou(cm.matrix)
    assert iou[0] == pytest.approx(3 / 5)
    assert iou[1] == 0.0
    assert np.isnan(iou[2]) and np.isnan(iou[3])
    assert mean_iou(cm.matrix, range(4)) == pytest.approx(0.3)
    assert pixel_accuracy(cm.matrix) == pytest.approx(3 / 5)
    # A square matrix (no void column) is accepted too: the void miss is then not counted.
    np.testing.assert_allclose(per_class_iou(cm.matrix[:, :4])[:2], [3 / 4, 0.0])


def test_summary_is_json_ready_and_table_marks_subsets() -> None:
    rng = np.random.default_rng(0)
    label = rng.integers(0, 19, size=(2, 16, 16))
    label[label == CLASS_NAMES.index("train")] = IGNORE_INDEX
    pred = np.where(rng.random(label.shape) < 0.7, label, rng.integers(0, 19, label.shape))
    pred[pred == CLASS_NAMES.index("train")] = 0
    cm = ConfusionMatrix(19)
    cm.update(pred, label)
    summary = summarize(cm.matrix, CLASSES, [19, 16, 13])
    json.loads(json.dumps(summary, allow_nan=False))
    assert set(summary["miou"]) == {"19", "16", "13"}
    assert list(summary["per_class_iou"]) == list(CLASS_NAMES)
    assert summary["per_class_iou"]["train"] is None
    assert summary["num_pixels"] == int((label != IGNORE_INDEX).sum())
    assert summary["miou"]["16"] == pytest.approx(mean_iou(cm.matrix, CLASS_SUBSETS[16]))
    assert summary["unit"] == "fraction" and summary["class_set"] == "cityscapes19"
    table = format_table(summary, "a run")
    assert table.splitlines()[0] == "== a run ==" and "IoU %" in table
    for name in CLASS_NAMES:
        assert name in table
    terrain = next(line for line in table.splitlines() if line.startswith("terrain"))
    assert terrain.split()[-3:] == ["x", "-", "-"]
    wall = next(line for line in table.splitlines() if line.startswith("wall"))
    assert wall.split()[-3:] == ["x", "x", "-"]
    assert "mIoU (13)" in table


def test_state_dict_round_trip(tmp_path) -> None:
    cm = ConfusionMatrix(3)
    cm.update(np.array([0, 1, 2, 9]), np.array([0, 2, 2, 1]))
    torch.save(cm.state_dict(), tmp_path / "cm.pt")
    restored = ConfusionMatrix(3)
    restored.load_state_dict(torch.load(tmp_path / "cm.pt", weights_only=True))
    np.testing.assert_array_equal(restored.matrix, cm.matrix)
    with pytest.raises(ValueError):
        ConfusionMatrix(4).load_state_dict(cm.state_dict())


def test_rejects_bad_inputs() -> None:
    cm = ConfusionMatrix(3)
    with pytest.raises(ValueError):
        cm.update(np.zeros(3, dtype=np.int64), np.zeros(4, dtype=np.int64))
    with pytest.raises(TypeError):
        cm.update(torch.zeros(3), torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError):
        cm.merge(ConfusionMatrix(4))
    with pytest.raises(ValueError):
        mean_iou(cm.matrix, [0, 5])


def test_all_reduce_is_noop_without_distributed() -> None:
    cm = ConfusionMatrix(2)
    cm.update(np.array([0, 1]), np.array([1, 1]))
    before = cm.matrix.copy()
    cm.all_reduce()
    np.testing.assert_array_equal(cm.matrix, before)


def _all_reduce_worker(rank: int, world_size: int, init_file: str, out_dir: str) -> None:
    dist.init_process_group(
        "gloo", init_method=f"file://{init_file}", rank=rank, world_size=world_size
    )
    try:
        cm = ConfusionMatrix(3)
        cm.update(np.array([rank, 2]), np.array([rank, 0]))
        cm.all_reduce()
        np.save(os.path.join(out_dir, f"{rank}.npy"), cm.matrix)
    finally:
        dist.destroy_process_group()


def test_all_reduce_sums_over_ranks(tmp_path) -> None:
    # fork: the children reuse the imported torch instead of importing it again (seconds).
    mp.start_processes(
        _all_reduce_worker,
        args=(2, str(tmp_path / "init"), str(tmp_path)),
        nprocs=2,
        start_method="fork",
    )
    expected = ConfusionMatrix(3)
    expected.update(np.array([0, 2, 1, 2]), np.array([0, 0, 1, 0]))
    for rank in range(2):
        np.testing.assert_array_equal(np.load(tmp_path / f"{rank}.npy"), expected.matrix)
