"""Class-balanced pseudo-labels: threshold rule, histograms, writer, online selection, quality."""

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
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from drsl.adaptation.pseudo_labels import (
    KEEP_NOTHING,
    ClassConfidenceHistogram,
    PseudoLabelQuality,
    PseudoLabelWriter,
    is_complete,
    keep_count,
    portion_for_round,
    pseudo_label_quality,
    quantize,
    read_manifest,
    select_class_balanced,
)
from drsl.adaptation.pseudo_labels import writer as writer_module
from drsl.config import PseudoLabelConfig
from fixtures import CITYSCAPES19


def brute_thresholds(levels: np.ndarray, pred: np.ndarray, num_classes: int, permille: int):
    """Sort-based rule: the k-th largest level of each class, k = ceil(permille / 1000 * N)."""
    out = []
    for c in range(num_classes):
        values = np.sort(levels[pred == c].astype(np.int64))[::-1]
        k = -(-permille * values.size // 1000)
        out.append(KEEP_NOTHING if k == 0 else int(values[k - 1]))
    return np.array(out)


def reference_quantize(conf: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(conf.astype(np.float64) * 65535), 0, 65535).astype(np.uint16)


def random_probs(rng: np.random.Generator, num_classes: int, h: int, w: int) -> np.ndarray:
    logits = rng.normal(size=(num_classes, h, w)).astype(np.float32) * 3
    e = np.exp(logits - logits.max(0))
    return (e / e.sum(0)).astype(np.float32)


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
    np.testing.assert_array_equal(hist.thresholds(permille / 1000), expected)


@pytest.mark.parametrize("portion", [0.0, 0.05, 0.2, 0.5, 0.9, 1.0])
def test_float_confidences_thresholds_for_several_portions(portion):
    rng = np.random.default_rng(1)
    conf = rng.random((3, 40, 50)).astype(np.float32)
    pred = rng.integers(0, 6, conf.shape)
    pred[pred == 4] = 3  # class 4 gets no pixels: threshold keeps nothing
    hist = ClassConfidenceHistogram(6)
    hist.update(torch.from_numpy(conf), torch.from_numpy(pred))
    levels = reference_quantize(conf)
    expected = brute_thresholds(levels, pred, 6, round(portion * 1000))
    thresholds = hist.thresholds(portion)
    np.testing.assert_array_equal(thresholds, expected)
    assert thresholds[4] == KEEP_NOTHING
    for c in range(6):  # at least ceil(portion * N_c) kept, and no higher threshold would do
        kept = (levels[pred == c] >= thresholds[c]).sum()
        assert kept >= keep_count(portion, (pred == c).sum())


def test_quantize_and_keep_count_edges():
    np.testing.assert_array_equal(
        quantize(np.array([0.0, 1.0, -0.1, 1.5, 0.5, 1 / 65535])), [0, 65535, 0, 65535, 32768, 1]
    )
    assert keep_count(0.1, 10) == 1 and keep_count(0.2 + 0.1, 10) == 3 and keep_count(0.5, 0) == 0
    with pytest.raises(ValueError):
        keep_count(1.5, 10)
    with pytest.raises(ValueError):
        quantize(torch.tensor([float("nan")]))
    with pytest.raises(TypeError):
        quantize(np.array([1], dtype=np.uint16))
    hist = ClassConfidenceHistogram(3)
    with pytest.raises(ValueError):
        hist.update(np.ones((2, 2)), np.full((2, 2), 3))
    hist.update(np.ones((2, 2)), np.full((2, 2), 255), valid_mask=np.zeros((2, 2), bool))
    assert hist.totals().sum() == 0


def test_merged_shards_equal_whole_and_state_dict_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    conf = rng.random((8, 32, 32))
    pred = rng.integers(0, 19, conf.shape)
    whole = ClassConfidenceHistogram(19)
    whole.update(conf, pred)
    shards = [ClassConfidenceHistogram(19) for _ in range(3)]
    for i in range(8):
        shards[i % 3].update(conf[i], pred[i])
    merged = ClassConfidenceHistogram(19)
    for shard in shards:
        merged.merge(shard)
    np.testing.assert_array_equal(merged.counts, whole.counts)
    np.testing.assert_array_equal(merged.thresholds(0.3), whole.thresholds(0.3))
    torch.save(merged.state_dict(), tmp_path / "hist.pt")
    restored = ClassConfidenceHistogram(19)
    restored.load_state_dict(torch.load(tmp_path / "hist.pt", weights_only=True))
    np.testing.assert_array_equal(restored.counts, whole.counts)
    with pytest.raises(ValueError):
        ClassConfidenceHistogram(19, bins=256).load_state_dict(merged.state_dict())
    with pytest.raises(ValueError):
        merged.merge(ClassConfidenceHistogram(18))


def test_memory_constant_while_streaming():
    rng = np.random.default_rng(3)
    conf = rng.random((20, 64, 64)).astype(np.float32)
    pred = rng.integers(0, 19, conf.shape)
    hist = ClassConfidenceHistogram(19)
    nbytes = hist.counts.nbytes
    start = time.perf_counter()
    for i in range(2000):
        hist.update(conf[i % 20], pred[i % 20])
    assert time.perf_counter() - start < 10
    assert hist.counts.nbytes == nbytes and hist.counts.shape == (19, 65536)
    assert hist.totals().sum() == 2000 * 64 * 64
    assert set(vars(hist)) == {"num_classes", "bins", "_shift", "counts"}


def _distributed_worker(rank: int, port: int, out_dir: str, probs: np.ndarray, result: str):
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2,
        timeout=datetime.timedelta(seconds=60),
    )
    try:
        writer = PseudoLabelWriter(out_dir, 4, 0, "ckpt.pt")
        for i in range(rank, len(probs), 2):
            writer.add(f"img{i}", probs[i])
        writer.finalize(0.4)
        if rank == 0:
            np.save(result, writer.histogram.counts)
    finally:
        dist.destroy_process_group()


def test_distributed_finalize_equals_single_process(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "0")
    rng = np.random.default_rng(4)
    probs = np.stack([random_probs(rng, 4, 16, 24) for _ in range(5)])
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = str(tmp_path / "counts.npy")
    args = (port, str(tmp_path / "ddp"), probs, result)
    mp.start_processes(_distributed_worker, args=args, nprocs=2, start_method="spawn")
    single = PseudoLabelWriter(tmp_path / "single", 4, 0, "ckpt.pt")
    for i in range(5):
        single.add(f"img{i}", probs[i])
    single.finalize(0.4)
    np.testing.assert_array_equal(np.load(result), single.histogram.counts)
    assert tree_bytes(tmp_path / "ddp") == tree_bytes(tmp_path / "single")


# ---------------------------------------------------------------- writer


def tree_bytes(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


NAMES = ["aachen/a_000", "aachen/a_001", "bochum/b_000", "c_000", "c_001"]


def make_probs(seed: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [random_probs(rng, 19, 24 + i, 32) for i in range(len(NAMES))]


def run_writer(out_dir: Path, probs: list[np.ndarray], portion: float = 0.3, **kwargs) -> dict:
    kwargs.setdefault("class_names", CITYSCAPES19.names)
    writer = PseudoLabelWriter(out_dir, 19, 1, "round0/last.pt", {"seed": 0}, **kwargs)
    for name, p in zip(NAMES, probs):
        if writer.done(name):
            writer.add_existing(name)
        else:
            writer.add(name, torch.from_numpy(p))
    return writer.finalize(portion)


def test_writer_round_trip_matches_numpy_thresholding(tmp_path):
    probs = make_probs()
    manifest = run_writer(tmp_path, probs, portion=0.3)
    preds = [p.argmax(0) for p in probs]
    levels = [reference_quantize(p.max(0)) for p in probs]
    flat_levels = np.concatenate([q.ravel() for q in levels])
    flat_pred = np.concatenate([p.ravel() for p in preds])
    thresholds = brute_thresholds(flat_levels, flat_pred, 19, 300)
    kept_total = 0
    for name, pred, q in zip(NAMES, preds, levels):
        with Image.open(tmp_path / "labels" / f"{name}.png") as image:
            assert image.mode == "L"
            label = np.asarray(image)
        assert label.dtype == np.uint8
        np.testing.assert_array_equal(label, np.where(q >= thresholds[pred], pred, 255))
        kept_total += (label != 255).sum()
        with Image.open(tmp_path / "confidence" / f"{name}.png") as image:
            assert image.mode == "I;16"
            np.testing.assert_array_equal(np.asarray(image), q)
    assert not (tmp_path / "raw").exists() and is_complete(tmp_path)
    assert read_manifest(tmp_path) == manifest
    assert manifest["round"] == 1 and manifest["checkpoint"] == "round0/last.pt"
    assert manifest["num_images"] == 5 and manifest["images"] == sorted(NAMES)
    assert manifest["extra"] == {"seed": 0} and manifest["portion"] == 0.3
    assert [t["level"] for t in manifest["thresholds"].values()] == thresholds.tolist()
    assert manifest["thresholds"]["road"]["confidence"] == thresholds[0] / 65535
    counts = manifest["counts"]
    assert sum(c["kept"] for c in counts.values()) == kept_total
    assert counts["car"]["predicted"] == sum((p == 13).sum() for p in preds)
    assert manifest["coverage"] == pytest.approx(kept_total / flat_pred.size)


def test_writer_without_confidence_valid_mask_and_config(tmp_path):
    probs = make_probs(6)[0]
    mask = np.zeros(probs.shape[1:], bool)
    mask[:, :16] = True
    config = PseudoLabelConfig(save_confidence=False, fusion="product")
    writer = PseudoLabelWriter.from_config(tmp_path, config, 19, 0, "ckpt")
    writer.add("x", probs, valid_mask=mask)
    manifest = writer.finalize(1.0)
    label = np.asarray(Image.open(tmp_path / "labels" / "x.png"))
    np.testing.assert_array_equal(label[:, 16:], 255)
    np.testing.assert_array_equal(label[:, :16], probs.argmax(0)[:, :16])  # portion 1 keeps all
    assert sum(c["predicted"] for c in manifest["counts"].values()) == mask.sum()
    assert manifest["confidence"] is None and manifest["fusion"] == "product"
    assert not (tmp_path / "confidence").exists() and not (tmp_path / "raw").exists()


def test_resume_after_kill_gives_identical_bytes(tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    probs = make_probs()
    run_writer(tmp_path / "ref", probs)
    reference = tree_bytes(tmp_path / "ref")
    assert "manifest.json" in reference and len(reference) == 1 + 2 * len(NAMES)

    # killed during pass 1, after three images
    out = tmp_path / "killed_pass1"
    writer = PseudoLabelWriter(out, 19, 1, "round0/last.pt", {"seed": 0})
    for name, p in list(zip(NAMES, probs))[:3]:
        writer.add(name, p)
    resumed = PseudoLabelWriter(out, 19, 1, "round0/last.pt", {"seed": 0})
    assert [resumed.done(n) for n in NAMES] == [True, True, True, False, False]
    run_writer(out, [np.full_like(p, np.nan) if i < 3 else p for i, p in enumerate(probs)])
    assert tree_bytes(out) == reference  # the NaN maps were never used: raw files were re-read

    # killed during pass 2, just before the manifest
    out = tmp_path / "killed_pass2"

    def killed_at_manifest(path, data):
        if Path(path).name == "manifest.json":
            raise KeyboardInterrupt
        write_json(path, data)

    write_json = writer_module.atomic_write_json
    monkeypatch.setattr(writer_module, "atomic_write_json", killed_at_manifest)
    with pytest.raises(KeyboardInterrupt):
        run_writer(out, probs)
    monkeypatch.undo()
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    (out / "labels" / "aachen" / ".a_000.png.x.tmp").write_bytes(b"partial")
    assert not is_complete(out)
    run_writer(out, [np.full_like(p, np.nan) for p in probs])
    assert tree_bytes(out) == reference

    # a complete set is protected; deleting its manifest and some files makes it regenerate
    with pytest.raises(FileExistsError):
        run_writer(out, probs)
    (out / "manifest.json").unlink()
    (out / "labels" / "c_000.png").unlink()
    (out / "confidence" / "aachen" / "a_001.png").unlink()
    run_writer(out, probs)
    assert tree_bytes(out) == reference
    run_writer(out, probs, overwrite=True)
    assert tree_bytes(out) == reference


def test_resume_refuses_raw_files_of_another_run(tmp_path):
    writer = PseudoLabelWriter(tmp_path, 19, 0, "a.pt")
    writer.add("x", make_probs()[0])
    with pytest.raises(ValueError, match="a.pt"):
        PseudoLabelWriter(tmp_path, 19, 0, "b.pt")
    with pytest.raises(ValueError, match="already added"):
        writer.add_existing("x")


@pytest.mark.parametrize(
    "name", ["../x", "/etc/x", "a/../../x", "a/./b", "a//b", "", "a\\..\\b", "C:x", "a/"]
)
def test_names_escaping_the_folder_are_rejected(tmp_path, name):
    writer = PseudoLabelWriter(tmp_path / "out", 19, 0, "ckpt")
    with pytest.raises(ValueError):
        writer.add(name, make_probs()[0])
    with pytest.raises(ValueError):
        writer.done(name)
    assert not any(p.suffix == ".png" for p in tmp_path.rglob("*"))


# ---------------------------------------------------------------- online selection


def test_select_class_balanced_matches_histogram_rule_exactly():
    rng = np.random.default_rng(7)
    b, c, h, w = 2, 5, 20, 30
    pred = rng.integers(0, c, (b, h, w))
    pred[pred == 2] = 1  # an empty class
    levels = rng.integers(0, 40, (b, h, w)) * 1000 + 20000  # many ties, on quantisation levels
    conf = levels / 65535.0
    probs = rng.random((b, c, h, w)) * 0.9 * conf[:, None]
    np.put_along_axis(probs, pred[:, None], conf[:, None], axis=1)
    for portion in (0.1, 0.25, 0.5, 1.0):
        labels = select_class_balanced(torch.from_numpy(probs), portion).numpy()
        hist = ClassConfidenceHistogram(c)
        hist.update(conf, pred)
        thresholds = hist.thresholds(portion)
        expected = np.where(levels >= thresholds[pred], pred, 255)
        np.testing.assert_array_equal(labels, expected)
        assert labels.dtype == np.int64


def test_select_class_balanced_agrees_up_to_quantisation():
    rng = np.random.default_rng(8)
    probs = torch.softmax(torch.from_numpy(rng.normal(size=(2, 6, 32, 32))).float() * 4, dim=1)
    conf, pred = probs.max(1)
    hist = ClassConfidenceHistogram(6)
    hist.update(conf, pred)
    levels = torch.from_numpy(quantize(conf).astype(np.int64))
    for portion in (0.2, 0.5):
        thresholds = torch.from_numpy(hist.thresholds(portion))
        exact = select_class_balanced(probs, portion, ignore_index=-1)
        by_hist = levels >= thresholds[pred]
        kept = exact != -1
        assert torch.equal(exact[kept], pred[kept]) and not (kept & ~by_hist).any()
        # pixels only the histogram keeps share the threshold level (a quantisation tie)
        assert (levels[by_hist & ~kept] == thresholds[pred][by_hist & ~kept]).all()
        for k in range(6):
            assert (kept & (pred == k)).sum() == keep_count(portion, int((pred == k).sum()))


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


def test_online_selection_ignores_vetoed_pixels() -> None:
    probs = torch.zeros(1, 2, 1, 4)
    probs[0, 0, 0, :2] = torch.tensor([0.9, 0.6])
    probs[0, 1, 0, :2] = 1 - probs[0, 0, 0, :2]
    labels = select_class_balanced(probs, portion=0.5)
    assert labels.tolist() == [[[0, 255, 255, 255]]]
