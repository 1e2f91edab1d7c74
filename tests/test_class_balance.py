"""Class-balanced source sampling: weights against a simulation of the two-stage draw, the
weighted sampler's determinism/resume/rank split, and the cached label counts."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import numpy as np
import pytest

from drsl.config import DatasetConfig
from drsl.data.class_balance import cached_class_pixel_counts, class_balanced_weights
from drsl.data.classes import load_class_set
from drsl.data.registry import build_dataset
from drsl.engine.sampling import ResumableSampler
from fixtures import write_gta5


def _counts(*rows: dict[int, int]) -> np.ndarray:
    counts = np.zeros((len(rows), 19), dtype=np.int64)
    for i, row in enumerate(rows):
        for c, n in row.items():
            counts[i, c] = n
    return counts


def test_weights_match_drawing_a_class_then_an_image_holding_it() -> None:
    counts = _counts({0: 100}, {0: 90, 1: 10}, {0: 99, 2: 1}, {1: 50, 3: 50})
    temperature, min_share = 0.5, 0.05
    weights = class_balanced_weights(counts, temperature, min_share)
    # Independent simulation of the two-stage draw.
    holds = [[c for c in range(19) if counts[i, c] >= min_share * counts[i].sum()] for i in range(4)]
    classes = sorted({c for h in holds for c in h})
    share = counts.sum(0) / counts.sum()
    p = np.exp([(1 - share[c]) / temperature for c in classes])
    p /= p.sum()
    rng = np.random.default_rng(0)
    drawn = np.zeros(4)
    for c in rng.choice(classes, size=100_000, p=p):
        drawn[rng.choice([i for i in range(4) if c in holds[i]])] += 1
    np.testing.assert_allclose(weights, drawn / drawn.sum(), atol=0.01)
    assert weights.sum() == pytest.approx(1.0)
    # Class 2 covers 1% of image 2 (< min_share): it does not make image 2 special.
    assert weights[2] == pytest.approx(weights[0])


def test_rare_classes_dominate_at_low_temperature() -> None:
    counts = _counts(*([{0: 1000}] * 9 + [{0: 900, 5: 100}]))
    weights = class_balanced_weights(counts, temperature=0.01, min_share=0.0)
    assert weights[-1] > 0.99  # the only image holding the rare class 5


def test_weights_reject_bad_temperature() -> None:
    with pytest.raises(ValueError, match="temperature"):
        class_balanced_weights(_counts({0: 1}), temperature=0.0, min_share=0.0)


def test_weighted_sampler_is_deterministic_resumable_and_split_over_ranks() -> None:
    weights = np.array([0.5, 0.0, 0.3, 0.2])
    full = [i for i, _ in islice(ResumableSampler(4, 2, seed=3, weights=weights), 4000)]
    assert 1 not in full  # zero weight: never drawn
    frequency = np.bincount(full, minlength=4) / len(full)
    np.testing.assert_allclose(frequency, weights, atol=0.03)
    again = [i for i, _ in islice(ResumableSampler(4, 2, seed=3, weights=weights), 4000)]
    assert again == full
    resumed = [i for i, _ in islice(ResumableSampler(4, 2, seed=3, start_batch=5, weights=weights), 10)]
    assert resumed == full[10:20]
    ranks = [list(islice(ResumableSampler(4, 1, 3, rank=r, world_size=2, weights=weights), 10)) for r in (0, 1)]
    interleaved = [ranks[r][k][0] for k in range(10) for r in (0, 1)]
    assert interleaved == full[:20]
    with pytest.raises(ValueError, match="3 sampling weights for 4 samples"):
        ResumableSampler(4, 2, seed=0, weights=np.ones(3) / 3)


def test_label_counts_are_cached_and_recomputed_when_stale(tmp_path: Path) -> None:
    write_gta5(tmp_path / "src", n=4, size=(10, 12))
    dataset = build_dataset(DatasetConfig(layout="gta5", root=str(tmp_path / "src")), load_class_set("cityscapes19"))
    cache = tmp_path / "counts.json"
    counts = cached_class_pixel_counts(dataset, cache, is_main=True)
    for i in range(len(dataset)):
        _, label = dataset.load(i)
        np.testing.assert_array_equal(counts[i], np.bincount(label.ravel(), minlength=256)[:19])
    stored = json.loads(cache.read_text())
    stored["counts"][0][0] += 7
    cache.write_text(json.dumps(stored))
    assert cached_class_pixel_counts(dataset, cache, is_main=True)[0, 0] == counts[0, 0] + 7
    stored["names"] = stored["names"][:-1]
    cache.write_text(json.dumps(stored))
    np.testing.assert_array_equal(cached_class_pixel_counts(dataset, cache, is_main=True), counts)
