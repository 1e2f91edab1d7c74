"""Class-balanced pseudo-labels: confidence scores, threshold rule, histograms, the one-pass
writer and its fingerprint, the veto at label resolution, online selection, quality."""

from __future__ import annotations

import datetime
import socket
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from drsl.adaptation.posterior import fuse, runner_up
from drsl.adaptation.pseudo_labels import (
    KEEP_NOTHING,
    LEVELS_PER_NAT,
    ClassConfidenceHistogram,
    PseudoLabelQuality,
    PseudoLabelWriter,
    complete_set,
    confidence_score,
    is_complete,
    keep_count,
    level_confidence,
    load_pseudo_label,
    portion_for_round,
    pseudo_label_quality,
    quantize,
    read_manifest,
    select_class_balanced,
)
from drsl.config import PseudoLabelConfig
from fixtures import CITYSCAPES19


def brute_thresholds(levels: np.ndarray, pred: np.ndarray, num_classes: int, permille: int):
    """Sort-based rule: the k-th largest level of each class, k = floor(permille / 1000 * N) (CRST)."""
    out = []
    for c in range(num_classes):
        values = np.sort(levels[pred == c].astype(np.int64))[::-1]
        k = permille * values.size // 1000
        out.append(KEEP_NOTHING if k == 0 else int(values[k - 1]))
    return np.array(out)


def random_probs(rng: np.random.Generator, num_classes: int, h: int, w: int, scale: float = 3.0) -> np.ndarray:
    logits = rng.normal(size=(num_classes, h, w)).astype(np.float32) * scale
    e = np.exp(logits - logits.max(0))
    return (e / e.sum(0)).astype(np.float32)


def maps_of(probs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(pred uint8, levels int32, runner-up uint8, its levels int32) of probabilities
    (..., C, H, W) through :func:`fuse` and :func:`runner_up`."""
    batch = torch.from_numpy(probs if probs.ndim == 4 else probs[None])
    second, second_score = runner_up(batch, batch.shape[1], "none")
    pred, score = fuse(batch, batch.shape[1], "none")
    return (pred.numpy().astype(np.uint8), quantize(score).numpy(), second.numpy().astype(np.uint8),
            quantize(second_score).numpy())


def crst_on_top_two(pred, levels, second, second_levels, thresholds: np.ndarray) -> np.ndarray:
    """CRST's label_selection on the two stored classes: the argmax of p / t over them (the lower
    class first, so that a tie goes to it), kept where it is >= 1; t of a class keeping nothing is
    infinite."""
    t = np.array([np.inf if x == KEEP_NOTHING else level_confidence(int(x)) for x in thresholds])
    p = lambda q: np.array([level_confidence(int(x)) for x in q.ravel()]).reshape(q.shape)  # noqa: E731
    first, other = np.minimum(pred, second), np.maximum(pred, second)
    p_first = np.where(pred <= second, p(levels), p(second_levels))
    p_other = np.where(pred <= second, p(second_levels), p(levels))
    ratios = np.stack([p_first / t[first], p_other / t[other]])
    label = np.where(ratios.argmax(0) == 0, first, other)
    return np.where(ratios.max(0) >= 1, label, 255)


def confident_logits(rng: np.random.Generator, margin: float, num_classes: int, shape: tuple[int, ...]) -> np.ndarray:
    """float64 logits whose top class leads the runner-up by about ``margin`` (spread 1)."""
    logits = rng.normal(size=(num_classes, *shape))
    top = rng.integers(0, num_classes, shape)
    lead = margin + rng.uniform(-0.5, 0.5, shape)
    np.put_along_axis(logits, top[None], logits.max(0, keepdims=True) + lead[None], axis=0)
    return logits


def exact_score(logits: np.ndarray) -> np.ndarray:
    """-log(1 - p_top) in float64 from logits: logsumexp(all) - logsumexp(others)."""
    top = logits.argmax(0)
    others = logits.copy()
    np.put_along_axis(others, top[None], -np.inf, axis=0)
    lse = lambda x: x.max(0) + np.log(np.exp(x - x.max(0)).sum(0))  # noqa: E731
    return lse(logits) - lse(others)


# ---------------------------------------------------------------- scores near certainty


@pytest.mark.parametrize("margin", [12.0, 16.0, 30.0])
def test_scores_resolve_confident_maps(margin):
    rng = np.random.default_rng(int(margin))
    logits = confident_logits(rng, margin, 19, (64, 64))
    probs = torch.softmax(torch.from_numpy(logits).float(), 0)[None]
    pred, score = fuse(probs, 19, "none")
    assert (pred[0].numpy() == logits.argmax(0)).all()
    np.testing.assert_allclose(score[0].numpy(), exact_score(logits), rtol=1e-4, atol=1e-4)
    # confidences quantised linearly (the old uint16 levels round(p * 65535)) keep a handful of
    # distinct values; the scores keep thousands
    linear = np.rint(probs.max(1).values.double().numpy() * 65535)
    assert len(np.unique(linear)) <= 10
    assert len(np.unique(quantize(score).numpy())) > 500


@pytest.mark.parametrize("margin", [12.0, 16.0, 30.0])
@pytest.mark.parametrize("portion", [0.2, 0.5])
def test_class_portions_within_one_percent_on_confident_maps(margin, portion, tmp_path):
    """Writer (histogram of levels) and online rule (exact sort) both keep each class's portion."""
    rng = np.random.default_rng(1000 + int(margin))
    num_classes, images = 5, 4
    logits = np.stack([confident_logits(rng, margin, num_classes, (48, 64)) for _ in range(images)])
    probs = torch.softmax(torch.from_numpy(logits).float(), 1)
    second, second_score = runner_up(probs, num_classes, "none")
    pred, score = fuse(probs, num_classes, "none")
    # sort-based reference on float64 scores from the logits
    reference = exact_score(np.moveaxis(logits, 1, 0))
    ref_pred = logits.argmax(1)
    writer = PseudoLabelWriter(tmp_path, num_classes, "fp")
    writer.add([f"i{k}" for k in range(images)], pred, quantize(score), second, quantize(second_score))
    writer.finalize(portion)
    online = select_class_balanced(pred, score, num_classes, portion)
    for k in range(images):
        label = load_pseudo_label(tmp_path, f"i{k}")
        assert ((label == 255) | (label == ref_pred[k])).all()
    labels = np.stack([load_pseudo_label(tmp_path, f"i{k}") for k in range(images)])
    for c in range(num_classes):
        members = ref_pred == c
        n = members.sum()
        order = np.sort(reference[members])[::-1]
        ref_threshold = order[keep_count(portion, n) - 1]
        for kept in (labels == c, online.numpy() == c):
            assert abs(kept.sum() / n - portion) <= 0.01
            # what is kept is the top of the sort-based order, up to one quantisation step
            assert reference[kept].min() >= ref_threshold - 1.0 / LEVELS_PER_NAT


def test_quantize_levels_and_confidence_score():
    scores = torch.tensor([0.0, 1.0, -0.5, 64.0, 100.0, 0.5 / LEVELS_PER_NAT])
    assert quantize(scores).tolist() == [0, LEVELS_PER_NAT, 0, 65535, 65535, 0]
    assert quantize(scores).dtype == torch.int32
    np.testing.assert_allclose(confidence_score(np.array([0.0, 0.5, 0.9])).numpy(), [0.0, np.log(2), np.log(10)])
    with pytest.raises(ValueError):
        quantize(torch.tensor([float("nan")]))
    with pytest.raises(TypeError):
        quantize(np.array([1], dtype=np.uint16))
    assert keep_count(0.1, 10) == 1 and keep_count(0.2 + 0.1, 10) == 3 and keep_count(0.5, 0) == 0
    assert keep_count(0.25, 10) == 2 and keep_count(0.2, 4) == 0  # floor, as CRST
    with pytest.raises(ValueError):
        keep_count(1.5, 10)


def test_fuse_agree_vetoes_and_product_ranks_the_fused_posterior():
    seg = torch.tensor([[0.7, 0.2, 0.1], [0.5, 0.3, 0.2], [0.1, 0.1, 0.8]]).T.reshape(1, 3, 1, 3)
    mmdl = torch.tensor([[0.6, 0.3, 0.1], [0.1, 0.8, 0.1], [0.2, 0.2, 0.6]]).T.reshape(1, 3, 1, 3)
    stacked = torch.cat([seg, mmdl], 1)
    pred, score = fuse(stacked, 3, "agree")
    assert pred.flatten().tolist() == [0, 255, 2]
    np.testing.assert_allclose(score.flatten().numpy(), -np.log1p(-seg.amax(1).flatten().numpy()), rtol=1e-5)
    pred, score = fuse(stacked, 3, "product")
    product = (seg * mmdl) / (seg * mmdl).sum(1, keepdim=True)
    assert pred.flatten().tolist() == product.argmax(1).flatten().tolist() == [0, 1, 2]
    np.testing.assert_allclose(score.flatten().numpy(), -np.log1p(-product.amax(1).flatten().numpy()), rtol=1e-5)
    assert torch.equal(fuse(stacked, 3, "none")[0], seg.argmax(1))


def test_fuse_confident_vetoes_only_where_the_mmdl_head_is_the_surer_one():
    generator = torch.Generator().manual_seed(0)
    seg = torch.softmax(4 * torch.randn(2, 5, 6, 7, generator=generator), 1)
    mmdl = torch.softmax(4 * torch.randn(2, 5, 6, 7, generator=generator), 1)
    pred, score = fuse(torch.cat([seg, mmdl], 1), 5, "confident")
    seg_np, mmdl_np = seg.numpy(), mmdl.numpy()
    disagree = seg_np.argmax(1) != mmdl_np.argmax(1)
    surer = mmdl_np.max(1) > seg_np.max(1)
    expected = np.where(disagree & surer, 255, seg_np.argmax(1))
    assert (disagree & surer).any() and (disagree & ~surer).any()  # both branches are exercised
    np.testing.assert_array_equal(pred.numpy(), expected)
    others = np.sort(seg_np.astype(np.float64), axis=1)[:, :-1].sum(1)  # 1 - p, exactly
    np.testing.assert_allclose(score.numpy(), np.log(others + seg_np.max(1)) - np.log(others), rtol=1e-4)
    agree = fuse(torch.cat([seg, mmdl], 1), 5, "agree")[0].numpy()
    assert ((agree == 255) >= (pred.numpy() == 255)).all()  # a subset of agree's vetoes


# ---------------------------------------------------------------- threshold rule and histogram


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    num_classes=st.integers(1, 5),
    size=st.integers(0, 300),
    top=st.sampled_from([3, 200, 65535]),
    permille=st.integers(0, 1000),
    bins=st.sampled_from([65536, 256, 2]),
)
def test_thresholds_equal_sort_based_rule(seed, num_classes, size, top, permille, bins):
    rng = np.random.default_rng(seed)
    levels = rng.integers(0, top + 1, size).astype(np.uint16)
    pred = rng.integers(0, num_classes, size)
    hist = ClassConfidenceHistogram(num_classes, bins=bins)
    hist.update_levels(levels, pred)
    shift = 16 - (bins.bit_length() - 1)
    binned = (levels >> shift) << shift  # with fewer bins the rule holds at bin resolution
    expected = brute_thresholds(binned, pred, num_classes, permille)
    thresholds = hist.thresholds(permille / 1000)
    np.testing.assert_array_equal(thresholds, expected)


def test_histogram_validation_merge_and_state_dict(tmp_path):
    rng = np.random.default_rng(2)
    levels = rng.integers(0, 65536, (8, 32, 32)).astype(np.uint16)
    pred = rng.integers(0, 19, levels.shape)
    whole = ClassConfidenceHistogram(19)
    whole.update_levels(levels, pred)
    shards = [ClassConfidenceHistogram(19) for _ in range(3)]
    for i in range(8):
        shards[i % 3].update_levels(levels[i], pred[i])
    merged = ClassConfidenceHistogram(19)
    for shard in shards:
        merged.merge(shard)
    assert torch.equal(merged.counts, whole.counts)
    torch.save(merged.state_dict(), tmp_path / "hist.pt")
    restored = ClassConfidenceHistogram(19)
    restored.load_state_dict(torch.load(tmp_path / "hist.pt", weights_only=True))
    assert torch.equal(restored.counts, whole.counts)
    with pytest.raises(ValueError):
        ClassConfidenceHistogram(19, bins=256).load_state_dict(merged.state_dict())
    with pytest.raises(ValueError):
        merged.merge(ClassConfidenceHistogram(18))
    with pytest.raises(ValueError):
        whole.update_levels(levels[0], np.full((32, 32), 19))
    with pytest.raises(TypeError):
        whole.update_levels(levels[0].astype(np.float32), pred[0])
    whole.update_levels(levels[0], np.full((32, 32), 255), valid_mask=np.zeros((32, 32), bool))
    assert whole.totals().sum() == 8 * 32 * 32


def test_memory_constant_while_streaming():
    rng = np.random.default_rng(3)
    levels = torch.from_numpy(rng.integers(0, 65536, (20, 64, 64)).astype(np.int32))
    pred = torch.from_numpy(rng.integers(0, 19, levels.shape))
    hist = ClassConfidenceHistogram(19)
    nbytes = hist.counts.nbytes
    start = time.perf_counter()
    for i in range(1000):
        hist.update_levels(levels[i % 20], pred[i % 20])
    assert time.perf_counter() - start < 10
    assert hist.counts.nbytes == nbytes and hist.counts.shape == (19, 65536)
    assert hist.totals().sum() == 1000 * 64 * 64


# ---------------------------------------------------------------- writer


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


NAMES = ["aachen/a_000", "aachen/a_001", "bochum/b_000", "c_000", "c_001"]


def make_probs(seed: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [random_probs(rng, 19, 24, 32) for _ in NAMES]


def run_writer(out_dir: Path, probs: list[np.ndarray], portion: float = 0.3, fingerprint: str = "fp", **kwargs) -> dict:
    kwargs.setdefault("class_names", CITYSCAPES19.names)
    writer = PseudoLabelWriter(out_dir, 19, fingerprint, {"round": 1, "checkpoint": "round0/last.pt"}, **kwargs)
    for name, p in zip(NAMES, probs):
        if not (writer.done(name) and writer.add_existing(name)):
            writer.add([name], *maps_of(p))
    return writer.finalize(portion)


def test_writer_round_trip_matches_numpy_thresholding(tmp_path):
    probs = make_probs()
    manifest = run_writer(tmp_path, probs, portion=0.3)
    preds = [p.argmax(0) for p in probs]
    maps = [[m[0] for m in maps_of(p)] for p in probs]
    levels = [m[1] for m in maps]
    thresholds = brute_thresholds(
        np.concatenate([q.ravel() for q in levels]), np.concatenate([p.ravel() for p in preds]), 19, 300
    )
    kept_total = 0
    for name, pred, q in zip(NAMES, preds, levels):
        with Image.open(tmp_path / "pred" / f"{name}.png") as image:
            assert image.mode == "L"
            np.testing.assert_array_equal(np.asarray(image), pred)
        with Image.open(tmp_path / "score" / f"{name}.png") as image:
            assert image.mode == "I;16"
            np.testing.assert_array_equal(np.asarray(image), q)
        label = load_pseudo_label(tmp_path, name)
        assert label.dtype == np.uint8
        np.testing.assert_array_equal(label, crst_on_top_two(*maps[NAMES.index(name)], thresholds))
        kept_total += (label != 255).sum()
    assert is_complete(tmp_path) and read_manifest(tmp_path) == manifest
    assert manifest["round"] == 1 and manifest["checkpoint"] == "round0/last.pt"
    assert manifest["num_images"] == 5 and manifest["images"] == sorted(NAMES)
    assert manifest["portion"] == 0.3 and manifest["fingerprint"] == "fp"
    assert [t["level"] for t in manifest["thresholds"].values()] == thresholds.tolist()
    assert manifest["thresholds"]["road"]["confidence"] == pytest.approx(1 - np.exp(-thresholds[0] / LEVELS_PER_NAT))
    counts = manifest["counts"]
    assert sum(c["kept"] for c in counts.values()) == kept_total
    assert counts["car"]["predicted"] == sum((p == 13).sum() for p in preds)
    assert manifest["coverage"] == pytest.approx(kept_total / (5 * 24 * 32))
    assert not (tmp_path / "quality.json").exists()


def test_vetoed_pixels_are_never_selected_nor_counted(tmp_path):
    probs = make_probs(6)[0]
    pred, levels, second, second_levels = maps_of(probs)
    pred[0, :, 16:] = 255  # vetoed by a fusion rule
    writer = PseudoLabelWriter(tmp_path, 19, "fp")
    writer.add(["x"], pred, levels, second, second_levels)
    manifest = writer.finalize(1.0)
    label = load_pseudo_label(tmp_path, "x")
    np.testing.assert_array_equal(label[:, 16:], 255)
    # portion 1 keeps every pixel: as the predicted class or, where its ratio is larger, the runner-up
    assert ((label[:, :16] == probs.argmax(0)[:, :16]) | (label[:, :16] == maps_of(probs)[2][0][:, :16])).all()
    assert sum(c["predicted"] for c in manifest["counts"].values()) == 24 * 16
    online = select_class_balanced(torch.from_numpy(pred).long(), torch.rand(pred.shape), 19, 1.0)
    assert (online[0, :, 16:] == 255).all() and (online[0, :, :16] != 255).all()


def test_quality_of_a_set_equals_quality_of_its_labels(tmp_path):
    rng = np.random.default_rng(9)
    probs = make_probs(7)
    truths = [np.where(rng.random((24, 32)) < 0.6, p.argmax(0), rng.integers(0, 19, (24, 32))) for p in probs]
    truths[0][:4] = 255
    writer = PseudoLabelWriter(tmp_path, 19, "fp")
    for name, p in zip(NAMES, probs):
        writer.add([name], *maps_of(p))
    writer.finalize(0.4, truth=lambda name: truths[NAMES.index(name)])
    reference = PseudoLabelQuality(19)
    for name, truth in zip(NAMES, truths):
        reference.update(load_pseudo_label(tmp_path, name), truth)
    expected, measured = reference.result(), read_manifest_quality(tmp_path)
    for key in ("precision", "coverage", "kept", "valid"):
        assert measured[key] == pytest.approx(expected[key]), key
    np.testing.assert_allclose(measured["per_class_precision"], expected["per_class_precision"])
    np.testing.assert_allclose(measured["per_class_coverage"], expected["per_class_coverage"])


def read_manifest_quality(folder: Path) -> dict:
    import json

    return json.loads((folder / "quality.json").read_text())


def test_resume_after_kill_gives_identical_bytes(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    probs = make_probs()
    run_writer(tmp_path / "ref", probs)
    reference = tree_bytes(tmp_path / "ref")
    assert "manifest.json" in reference and len(reference) == 2 + 4 * len(NAMES)

    # killed after three images: the resumed pass re-reads them (NaN maps would fail if used)
    out = tmp_path / "killed"
    writer = PseudoLabelWriter(out, 19, "fp", {"round": 1, "checkpoint": "round0/last.pt"})
    for name, p in list(zip(NAMES, probs))[:3]:
        writer.add([name], *maps_of(p))
    writer._flush()
    (out / "pred" / "aachen" / ".a_000.png.x.tmp").write_bytes(b"partial")
    resumed = PseudoLabelWriter(out, 19, "fp")
    assert [resumed.done(n) for n in NAMES] == [True, True, True, False, False]
    run_writer(out, [np.full_like(p, np.nan) if i < 3 else p for i, p in enumerate(probs)])
    assert tree_bytes(out) == reference

    # a map lost by a crash before the final sync (empty file) is computed again
    (out / "score" / "c_000.png").write_bytes(b"")
    (out / "manifest.json").unlink()
    run_writer(out, probs)
    assert tree_bytes(out) == reference


def test_fingerprint_mismatch_regenerates_or_refuses(tmp_path):
    probs, other = make_probs(), make_probs(8)
    manifest = run_writer(tmp_path, probs, fingerprint="weights-A")
    assert complete_set(tmp_path, "weights-A", 0.3) == manifest
    assert complete_set(tmp_path, "weights-B", 0.3) is None
    assert complete_set(tmp_path, "weights-A", 0.4) is None
    # another fingerprint: refused unless the folder may be replaced, then nothing stale remains
    with pytest.raises(FileExistsError, match="another checkpoint"):
        PseudoLabelWriter(tmp_path, 19, "weights-B")
    run_writer(tmp_path, other, fingerprint="weights-B", replace=True)
    for name, p in zip(NAMES, other):
        np.testing.assert_array_equal(np.asarray(Image.open(tmp_path / "pred" / f"{name}.png")), p.argmax(0))
    assert read_manifest(tmp_path)["fingerprint"] == "weights-B"
    # the same maps at another portion: thresholds again from the stored maps, no model needed
    again = run_writer(tmp_path, [np.full_like(p, np.nan) for p in other], portion=0.6, fingerprint="weights-B")
    assert again["portion"] == 0.6 and sum(c["kept"] for c in again["counts"].values()) > sum(
        c["kept"] for c in manifest["counts"].values()
    )
    # a folder of foreign files (no run.json) is never adopted
    foreign = tmp_path / "foreign"
    (foreign / "pred").mkdir(parents=True)
    with pytest.raises(FileExistsError):
        PseudoLabelWriter(foreign, 19, "weights-A")


def _distributed_worker(rank: int, port: int, out_dir: str, probs: np.ndarray) -> None:
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        writer = PseudoLabelWriter(out_dir, 4, "fp") if rank == 0 else None
        dist.barrier()  # rank 0 claims the folder first, as the pseudo-label pass does
        writer = writer or PseudoLabelWriter(out_dir, 4, "fp")
        for i in range(rank, len(probs), 2):
            writer.add([f"img{i}"], *maps_of(probs[i]))
        writer.finalize(0.4)
    finally:
        dist.destroy_process_group()


def test_distributed_finalize_equals_single_process(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    rng = np.random.default_rng(4)
    probs = np.stack([random_probs(rng, 4, 16, 24) for _ in range(5)])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    mp.start_processes(_distributed_worker, args=(port, str(tmp_path / "ddp"), probs), nprocs=2, start_method="spawn")
    single = PseudoLabelWriter(tmp_path / "single", 4, "fp")
    for i in range(5):
        single.add([f"img{i}"], *maps_of(probs[i]))
    single.finalize(0.4)
    assert tree_bytes(tmp_path / "ddp") == tree_bytes(tmp_path / "single")


@pytest.mark.parametrize("name", ["../x", "/etc/x", "a/../../x", "a/./b", "a//b", "", "a\\..\\b", "C:x", "a/"])
def test_names_escaping_the_folder_are_rejected(tmp_path, name):
    writer = PseudoLabelWriter(tmp_path / "out", 19, "fp")
    with pytest.raises(ValueError):
        writer.add([name], *maps_of(make_probs()[0]))
    with pytest.raises(ValueError):
        writer.done(name)
    assert not any(p.suffix == ".png" for p in tmp_path.rglob("*"))


# ---------------------------------------------------------------- online selection


def test_select_class_balanced_matches_histogram_rule_on_levels():
    rng = np.random.default_rng(7)
    b, c, h, w = 2, 5, 20, 30
    pred = rng.integers(0, c, (b, h, w))
    pred[pred == 2] = 1  # an empty class
    levels = rng.integers(0, 40, (b, h, w)) * 1000 + 2000  # many ties, on quantisation levels
    score = torch.from_numpy(levels / LEVELS_PER_NAT)
    for portion in (0.1, 0.25, 0.5, 1.0):
        labels = select_class_balanced(torch.from_numpy(pred), score, c, portion).numpy()
        hist = ClassConfidenceHistogram(c)
        hist.update_levels(levels.astype(np.int32), pred)
        thresholds = hist.thresholds(portion)
        np.testing.assert_array_equal(labels, np.where(levels >= thresholds[pred], pred, 255))
        assert labels.dtype == np.int64


def test_portion_schedule():
    config = PseudoLabelConfig(portion_start=0.2, portion_step=0.1, portion_max=0.5)
    assert [portion_for_round(config, r) for r in range(5)] == [0.2, 0.3, 0.4, 0.5, 0.5]


# ---------------------------------------------------------------- quality


def test_quality_on_a_hand_made_case():
    truth = np.array([[0, 0, 1, 1], [2, 2, 255, 1]])
    pseudo = np.array([[0, 1, 1, 255], [2, 255, 0, 1]], dtype=np.uint8)
    # valid truth: 7 pixels; kept among them: 5 (0->0, 0->1, 1->1, 2->2, 1->1); correct: 4
    result = pseudo_label_quality(pseudo, truth, 3)
    assert result["precision"] == pytest.approx(4 / 5)
    assert result["coverage"] == pytest.approx(5 / 7)
    assert result["per_class_precision"] == pytest.approx([1.0, 2 / 3, 1.0])
    assert result["per_class_coverage"] == pytest.approx([1.0, 2 / 3, 0.5])
    accumulated = PseudoLabelQuality(3)
    accumulated.update(pseudo[:1], truth[:1])
    accumulated.update(pseudo[1:], truth[1:])
    assert accumulated.result() == result
    empty = pseudo_label_quality(np.full((2, 2), 255), np.full((2, 2), 255), 3)
    assert np.isnan(empty["precision"]) and empty["kept"] == 0
    with pytest.raises(ValueError):
        pseudo_label_quality(np.full((2, 2), 7), np.zeros((2, 2)), 3)


def test_upsampled_veto_matches_an_independent_computation():
    """The veto is decided on both heads' posteriors after upsampling, pixel by pixel."""
    rng = np.random.default_rng(11)
    seg = torch.from_numpy(random_probs(rng, 4, 6, 8))[None]
    mmdl = torch.from_numpy(random_probs(rng, 4, 6, 8))[None]
    up = lambda x: F.interpolate(x, size=(48, 64), mode="bilinear", align_corners=False)  # noqa: E731
    pred, _ = fuse(up(torch.cat([seg, mmdl], 1)), 4, "agree")
    expected = torch.where(up(seg).argmax(1) == up(mmdl).argmax(1), up(seg).argmax(1), 255)
    assert torch.equal(pred, expected)
    # the feature-resolution veto, upsampled, is not the same set of pixels
    coarse = (seg.argmax(1) == mmdl.argmax(1)).float()[None]
    assert not torch.equal(up(coarse)[0] > 0, pred != 255)
