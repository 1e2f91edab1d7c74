"""Parity with the reference implementations: DAFormer's feature-distance cell mask, rare-class
sampling and optimiser parameter groups, and CRST's class-balanced pseudo-label selection. Each
test computes the reference's behaviour independently (its formula written out here) and compares
drsl's output on fixed inputs."""

from __future__ import annotations

import re
from itertools import islice
from pathlib import Path

import numpy as np
import pytest
import torch

from drsl.config import load_config
from drsl.configs import resolve_config_path
from drsl.data.classes import bind_class_set
from drsl.engine.optim import build_optimizer
from drsl.models.segmentor import build_segmentor
from drsl.training import build_module

IGNORE = 255


def reference_downscale_label_ratio(labels: np.ndarray, scale: int, min_ratio: float, num_classes: int) -> np.ndarray:
    """DAFormer's downscale_label_ratio written out: one-hot with ignore as one more class, the
    mean of each scale x scale cell, its largest entry, ignore where that share < min_ratio."""
    batch, height, width = labels.shape
    values = np.where(labels == IGNORE, num_classes, labels)
    one_hot = np.eye(num_classes + 1)[values]  # B, H, W, C + 1
    cells = one_hot.reshape(batch, height // scale, scale, width // scale, scale, num_classes + 1).mean(axis=(2, 4))
    ratio, out = cells.max(-1), cells.argmax(-1)
    out = np.where(out == num_classes, IGNORE, out)
    return np.where(ratio < min_ratio, IGNORE, out)


@pytest.mark.parity
def test_feature_distance_cells_follow_downscale_label_ratio(tmp_path: Path) -> None:
    """DAFormer mmseg/models/utils/dacs_transforms.py ``downscale_label_ratio`` with
    mmseg/models/uda/dacs.py's fdist_scale_min_ratio 0.75 and ``torch.any(gt == fdclasses)``: the
    distance is averaged over the cells where one class covers >= 75% (ignore counting) and that
    class is a feature-distance class."""
    config = load_config(resolve_config_path("synth/mix"), ["model.light_width=1"])
    bind_class_set(config)
    weights = tmp_path / "imagenet.pth"
    torch.manual_seed(0)
    torch.save(build_segmentor(config.model).encoder.state_dict(), weights)
    config = load_config(resolve_config_path("synth/mix"), [
        "model.light_width=1", f"model.pretrained={weights}", "adapt.feature_distance.weight=0.005", "init_checkpoint=null",
    ])
    module = build_module(config).eval()
    distance = module.imagenet_distance
    assert distance is not None
    images = torch.rand(1, 3, 32, 32)
    with torch.no_grad():
        frozen = build_module(config).eval().segmentor.encode(images)[-1]
    features = frozen + torch.randn_like(frozen)
    assert features.shape[-2:] == (4, 4)  # 8 x 8 label pixels per cell
    labels = np.zeros((1, 32, 32), dtype=np.int64)  # road (not a feature-distance class)
    cells = [(0, 0, 13, 64), (0, 1, 13, 56), (0, 2, 13, 48), (0, 3, 13, 44), (1, 0, 11, 49), (1, 1, 11, 47),
             (1, 2, 18, 64), (2, 0, 13, 40)]
    for row, col, cls, pixels in cells:  # the first `pixels` of the cell's 64 take the class
        block = labels[0, row * 8:(row + 1) * 8, col * 8:(col + 1) * 8].reshape(-1)
        block[:pixels] = cls
        labels[0, row * 8:(row + 1) * 8, col * 8:(col + 1) * 8] = block.reshape(8, 8)
    labels[0, 16:24, 8:16] = IGNORE  # a cell half ignore, half car
    labels[0, 16:20, 8:16] = 13
    labels[0, 24:32, 0:8] = 13  # a car cell with 12 ignored pixels: 52 / 64 = 81% car
    labels[0, 24:26, 0:6] = IGNORE
    cell_labels = reference_downscale_label_ratio(labels, 8, 0.75, 19)
    mask = np.isin(cell_labels, config.adapt.feature_distance.classes)
    norms = (features - frozen).norm(dim=1).numpy()
    expected = norms[mask].mean()
    assert 0 < mask.sum() < (cell_labels != IGNORE).sum()  # some cells are left out, some counted
    got = distance(module.segmentor, features, images, torch.from_numpy(labels))
    assert got.item() == pytest.approx(float(expected), rel=1e-5)
    assert config.adapt.feature_distance.cell_min_share == 0.75  # DAFormer's fdist_scale_min_ratio


def mmcv_paramwise(name: str, custom_keys: dict[str, dict[str, float]]) -> dict[str, float]:
    """mmcv DefaultOptimizerConstructor.add_params: keys sorted alphabetically, then by length
    (longest first, a stable sort); the first key contained in the full name sets lr_mult and
    decay_mult (default 1)."""
    for key in sorted(sorted(custom_keys), key=len, reverse=True):
        if key in name:
            return {"lr_mult": custom_keys[key].get("lr_mult", 1.0), "decay_mult": custom_keys[key].get("decay_mult", 1.0)}
    return {"lr_mult": 1.0, "decay_mult": 1.0}


@pytest.mark.parity
def test_daformer_optimizer_groups_follow_mmcv_custom_keys() -> None:
    """DAFormer configs/_base_/schedules/adamw.py and its final GTA->Cityscapes config's
    ``paramwise_cfg=dict(custom_keys=dict(head=dict(lr_mult=10.0), pos_block=dict(decay_mult=0.0),
    norm=dict(decay_mult=0.0)))`` under mmcv's DefaultOptimizerConstructor: drsl's encoder is
    mmseg's ``backbone``, its decoder (and the MMDL head) the ``decode_head``; the decode head's
    normalisation layers are decayed, the encoder's are not."""
    config = load_config(resolve_config_path("gta5_cityscapes/daformer_drsl_mix"), [
        "model.backbone=mit_b0", "model.pretrained=null", "adapt.feature_distance.weight=0",
    ])
    module = build_module(config)
    optimizer = build_optimizer(module, config.optim)
    got = {id(p): (g["lr"], g["weight_decay"]) for g in optimizer.param_groups for p in g["params"]}
    custom_keys = {"head": {"lr_mult": 10.0}, "pos_block": {"decay_mult": 0.0}, "norm": {"decay_mult": 0.0}}
    norms = (torch.nn.LayerNorm, torch.nn.BatchNorm2d)
    decoder_norms = {id(p) for m in module.segmentor.decoder.modules() if isinstance(m, norms) for p in m.parameters()}
    checked = 0
    for name, param in module.named_parameters():
        if not param.requires_grad:
            continue
        mmseg_name = re.sub(r"^segmentor\.encoder\.", "backbone.", re.sub(r"^segmentor\.decoder\.", "decode_head.", name))
        mmseg_name = re.sub(r"^regularizer\.", "decode_head.regularizer.", mmseg_name)
        rule = mmcv_paramwise(mmseg_name, custom_keys)
        assert got[id(param)] == pytest.approx((6e-5 * rule["lr_mult"], 0.01 * rule["decay_mult"])), name
        checked += 1
    assert checked == len(got)
    assert decoder_norms and all(got[i][1] == 0.01 for i in decoder_norms)  # head wins over norm


def reference_rcs(counts: np.ndarray, temperature: float, min_pixels: int) -> tuple[list[int], np.ndarray, dict[int, list[int]]]:
    """DAFormer mmseg/datasets/uda_dataset.py ``get_rcs_class_probs`` and the ``samples_with_class``
    filter written out: classes with pixels sorted by pixel count, softmax((1 - f) / T), and per
    class the images with more than min_pixels of it."""
    totals = {c: int(counts[:, c].sum()) for c in range(counts.shape[1]) if counts[:, c].sum() > 0}
    ordered = sorted(totals, key=lambda c: totals[c])
    freq = np.array([totals[c] for c in ordered], dtype=np.float64) / sum(totals.values())
    logits = (1 - freq) / temperature
    prob = np.exp(logits - logits.max())
    holders = {c: [i for i in range(len(counts)) if counts[i, c] > min_pixels] for c in ordered}
    return ordered, prob / prob.sum(), holders


@pytest.mark.parity
def test_rare_class_probabilities_and_holders_follow_daformer_at_gta5_resolution() -> None:
    """DAFormer mmseg/datasets/uda_dataset.py ``get_rcs_class_probs`` and ``UDADataset.__init__``
    (rare_class_sampling min_pixels 3000, class_temp 0.01) on per-image statistics of
    tools/convert_datasets/gta.py (full-resolution 1914x1052 labels): drsl's default shares give
    the same classes, probabilities and images, 3000 pixels excluded and 3001 included."""
    from drsl.config import SourceSamplingConfig
    from drsl.data.class_balance import rare_class_sampling

    pixels = 1914 * 1052
    rng = np.random.default_rng(0)
    counts = np.zeros((40, 19), dtype=np.int64)
    counts[:, :5] = rng.integers(100_000, 400_000, size=(40, 5))
    counts[:, 5:] = rng.integers(0, 9000, size=(40, 14)) * (rng.random((40, 14)) < 0.5)
    counts[0, 12], counts[1, 12], counts[2, 12] = 3000, 3001, 2999  # at DAFormer's min_pixels
    counts[3:, 12] = 0
    config = SourceSamplingConfig(mode="class_balanced")
    sampling = rare_class_sampling(counts, np.full(40, pixels), config)
    classes, prob, holders = reference_rcs(counts, 0.01, 3000)
    got = dict(zip(sampling.classes.tolist(), sampling.probabilities))
    assert sorted(got) == sorted(classes)
    np.testing.assert_allclose([got[c] for c in classes], prob, rtol=1e-9)
    for c, images in zip(sampling.classes.tolist(), sampling.holders):
        assert images.tolist() == holders[c], c
    assert holders[12] == [1]
    # The crop must hold more than 0.5 * 3000 pixels: 1500 is too few, 1501 enough.
    assert 1500 <= sampling.min_crop_pixels[0] < 1501


@pytest.mark.parity
def test_rare_class_crops_are_made_again_until_they_hold_the_class() -> None:
    """DAFormer mmseg/datasets/uda_dataset.py ``get_rare_class_sample``: the drawn image is
    cropped, then, while the crop holds no more than min_pixels * min_crop_ratio pixels of the
    drawn class, cropped again, up to 10 times (the last crop unchecked). A 16x64 image with the
    rare class in its last 4 columns, 16x16 crops without scaling or flips: a crop holds enough
    of it (2 columns) at 3 of its 49 offsets, so the sampled crops hold it with probability
    1 - (46/49)^11, checked within a binomial 99.9% interval."""
    from drsl.config import AugmentConfig, SourceSamplingConfig
    from drsl.data.class_balance import RareClassCrops, rare_class_sampling
    from drsl.data.transforms import build_train_transform
    from drsl.engine.sampling import ResumableSampler, SeededView

    label = torch.zeros(16, 64, dtype=torch.long)
    label[:, 60:] = 5
    images = [{"image": torch.zeros(3, 16, 64, dtype=torch.uint8), "label": label.clone()} for _ in range(2)]
    images[1]["label"][:] = 0
    counts = np.stack([np.bincount(s["label"].reshape(-1).numpy(), minlength=19) for s in images])
    config = SourceSamplingConfig(mode="class_balanced", min_share=0.05, min_crop_ratio=0.5)  # 25.6 pixels
    sampling = rare_class_sampling(counts, np.full(2, 16 * 64), config)
    transform = build_train_transform(AugmentConfig(crop_size=[16, 16], scale_range=[1.0, 1.0], hflip=False, photometric=False))
    view = RareClassCrops(SeededView(images, transform), sampling)  # type: ignore[arg-type]
    draws = 200
    keys = [key for key in islice(ResumableSampler(2, 1, seed=4, draw=sampling.draw), draws) if key[2] == 5]
    held = np.mean([int((view[key]["label"] == 5).sum()) > 25.6 for key in keys])
    expected = 1 - (46 / 49) ** 11
    margin = 3.29 * np.sqrt(expected * (1 - expected) / len(keys))
    assert len(keys) > 0.99 * draws  # the rare class is drawn almost always at temperature 0.01
    assert abs(held - expected) < margin, (held, expected)


def reference_crst(prob: np.ndarray, portion: float) -> tuple[np.ndarray, np.ndarray]:
    """CRST crst_seg.py ``kc_parameters`` (kc_policy cb, kc_value conf, ds_rate 1) and
    ``label_selection`` written out on one probability map (C, H, W): per class, the confidences
    of its predicted pixels sorted in descending order, threshold = the floor(N * portion)-th of
    them (1 where that is 0); each pixel labelled argmax_c p_c / t_c, kept where that ratio >= 1."""
    num_classes = prob.shape[0]
    pred, conf = prob.argmax(0), prob.max(0)
    thresholds = np.ones(num_classes)
    for c in range(num_classes):
        ranked = sorted(conf[pred == c].tolist(), reverse=True)
        count = int(np.floor(len(ranked) * portion))
        if count != 0:
            thresholds[c] = ranked[count - 1]
    weighted = prob / thresholds[:, None, None]
    return np.where(weighted.max(0) >= 1, weighted.argmax(0), IGNORE), thresholds


@pytest.mark.parity
@pytest.mark.parametrize("portion", [0.2, 0.5])
def test_cbst_pseudo_labels_follow_crst_label_selection(tmp_path: Path, portion: float) -> None:
    """CRST (yzou2/CRST) crst_seg.py ``kc_parameters`` and ``label_selection`` with kc_policy
    "cb": drsl's pseudo-label set gives the same thresholds and labels on a fixed three-class
    probability map whose confidences fall on drsl's levels (every class keeps at least one pixel
    and every threshold is above 1/3, where the two stored classes decide CRST's rule). Class 2 is
    predicted with low confidence, so its threshold falls below 0.5 and other pixels whose runner-up
    it is are labelled 2; CRST subsamples each class's confidences by ds_rate 4 for memory, drsl
    counts them all (ds_rate 1 here)."""
    from drsl.adaptation.pseudo_labels import LEVELS_PER_NAT, PseudoLabelWriter, level_confidence, load_pseudo_label

    rng = np.random.default_rng(3)
    shape = (40, 50)
    top = rng.choice(3, size=shape, p=[0.45, 0.35, 0.2])
    second = (top + rng.integers(1, 3, size=shape)) % 3
    p1 = np.where(top == 2, rng.uniform(0.34, 0.48, shape), rng.uniform(0.5, 0.95, shape))
    p2 = rng.uniform((1 - p1) / 2 + 0.005, np.minimum(p1, 1 - p1) - 0.005)
    levels = np.rint(-np.log1p(-p1) * LEVELS_PER_NAT).astype(np.int32)
    second_levels = np.rint(-np.log1p(-p2) * LEVELS_PER_NAT).astype(np.int32)
    p1 = np.vectorize(level_confidence)(levels)
    p2 = np.vectorize(level_confidence)(second_levels)
    p3 = 1 - p1 - p2
    assert (p3 >= 0).all() and (p3 < p2).all() and (p2 < p1).all()
    prob = np.zeros((3, *shape))
    np.put_along_axis(prob, top[None], p1[None], axis=0)
    np.put_along_axis(prob, second[None], p2[None], axis=0)
    np.put_along_axis(prob, (3 - top - second)[None], p3[None], axis=0)
    expected, thresholds = reference_crst(prob, portion)
    assert thresholds.min() > 1 / 3 and thresholds[2] < 0.5
    writer = PseudoLabelWriter(tmp_path, 3, "parity")
    writer.add(["image"], top[None].astype(np.uint8), levels[None], second[None].astype(np.uint8), second_levels[None])
    manifest = writer.finalize(portion)
    got = [t["confidence"] for t in manifest["thresholds"].values()]
    np.testing.assert_allclose(got, thresholds, rtol=1e-12)
    label = load_pseudo_label(tmp_path, "image")
    assert ((expected != IGNORE) & (expected != top)).sum() > 0  # the runner-up decides some pixels
    np.testing.assert_array_equal(label, expected)
