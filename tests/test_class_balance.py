"""Class-balanced source sampling: the two-stage draw (a class, then an image holding it), the
sampler's determinism/resume/rank split, and the cached label counts."""

from __future__ import annotations

import json
from itertools import islice
from pathlib import Path

import numpy as np
import pytest

from drsl.config import ConfigError, DatasetConfig, SourceSamplingConfig
from drsl.data.class_balance import RareClassSampling, cached_class_pixel_counts, rare_class_sampling
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


def _sampling(counts: np.ndarray, temperature: float = 0.01, min_share: float = 0.0, ratio: float = 0.5) -> RareClassSampling:
    config = SourceSamplingConfig(mode="class_balanced", temperature=temperature, min_share=min_share, min_crop_ratio=ratio)
    return rare_class_sampling(counts, counts.sum(axis=1), config)


def test_draws_follow_a_class_then_an_image_holding_it() -> None:
    counts = _counts({0: 100}, {0: 90, 1: 10}, {0: 99, 2: 1}, {1: 50, 3: 50})
    sampling = _sampling(counts, temperature=0.5, min_share=0.05)
    holds = [[c for c in range(19) if counts[i, c] > 0.05 * counts[i].sum()] for i in range(4)]
    classes = sorted({c for h in holds for c in h})
    assert sampling.classes.tolist() == classes  # class 2 covers 1% of image 2 (< min_share): not drawable
    share = counts.sum(0) / counts.sum()
    p = np.exp([(1 - share[c]) / 0.5 for c in classes])
    np.testing.assert_allclose(sampling.probabilities, p / p.sum())
    images, drawn = sampling.draw(np.random.default_rng(0), 100_000)
    assert all(c in holds[i] for i, c in zip(images[:1000], drawn[:1000]))
    frequency = np.array([(drawn == c).mean() for c in classes])
    np.testing.assert_allclose(frequency, p / p.sum(), atol=0.01)
    for c in classes:  # an image holding the class, uniformly
        holders = [i for i in range(4) if c in holds[i]]
        share_of = np.bincount(images[drawn == c], minlength=4)[holders] / (drawn == c).sum()
        np.testing.assert_allclose(share_of, 1 / len(holders), atol=0.02)


def test_rare_classes_dominate_at_low_temperature() -> None:
    counts = _counts(*([{0: 1000}] * 9 + [{0: 900, 5: 100}]))
    images, _ = _sampling(counts).draw(np.random.default_rng(1), 10_000)
    assert (images == 9).mean() > 0.99  # the only image holding the rare class 5


def test_a_share_no_image_reaches_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="data.source_sampling.min_share"):
        _sampling(_counts({0: 10}, {1: 10}), min_share=1.0)


def test_rare_class_sampler_is_deterministic_resumable_and_split_over_ranks() -> None:
    sampling = _sampling(_counts({0: 100}, {0: 90, 1: 10}, {0: 99, 2: 1}, {1: 50, 3: 50}), temperature=0.5, min_share=0.05)
    full = list(islice(ResumableSampler(4, 2, seed=3, draw=sampling.draw), 4000))
    assert all(len(key) == 3 for key in full)  # (index, sample seed, drawn class)
    again = list(islice(ResumableSampler(4, 2, seed=3, draw=sampling.draw), 4000))
    assert again == full
    resumed = list(islice(ResumableSampler(4, 2, seed=3, start_batch=5, draw=sampling.draw), 10))
    assert resumed == full[10:20]
    ranks = [list(islice(ResumableSampler(4, 1, 3, rank=r, world_size=2, draw=sampling.draw), 10)) for r in (0, 1)]
    interleaved = [ranks[r][k] for k in range(10) for r in (0, 1)]
    assert interleaved == full[:20]


def test_label_counts_are_cached_and_recomputed_when_stale(tmp_path: Path) -> None:
    write_gta5(tmp_path / "src", n=4, size=(10, 12))
    dataset = build_dataset(DatasetConfig(layout="gta5", root=str(tmp_path / "src")), load_class_set("cityscapes19"))
    cache = tmp_path / "counts.json"
    counts, pixels = cached_class_pixel_counts(dataset, cache, is_main=True)
    for i in range(len(dataset)):
        _, label = dataset.load(i)
        np.testing.assert_array_equal(counts[i], np.bincount(label.ravel(), minlength=256)[:19])
        assert pixels[i] == label.size
    stored = json.loads(cache.read_text())
    stored["counts"][0][0] += 7
    cache.write_text(json.dumps(stored))
    assert cached_class_pixel_counts(dataset, cache, is_main=True)[0][0, 0] == counts[0, 0] + 7
    stored["names"] = stored["names"][:-1]
    cache.write_text(json.dumps(stored))
    np.testing.assert_array_equal(cached_class_pixel_counts(dataset, cache, is_main=True)[0], counts)
    cache.write_text("{not json")  # a damaged cache is counted again, not a traceback
    np.testing.assert_array_equal(cached_class_pixel_counts(dataset, cache, is_main=True)[0], counts)


def test_relabelled_files_under_the_same_names_are_counted_again(tmp_path: Path) -> None:
    write_gta5(tmp_path / "src", n=3, size=(10, 12))
    dataset = build_dataset(DatasetConfig(layout="gta5", root=str(tmp_path / "src")), load_class_set("cityscapes19"))
    cache = tmp_path / "counts.json"
    before, _ = cached_class_pixel_counts(dataset, cache, is_main=True)
    write_gta5(tmp_path / "src", n=3, size=(10, 12), seed=7)
    dataset = build_dataset(DatasetConfig(layout="gta5", root=str(tmp_path / "src")), load_class_set("cityscapes19"))
    after, _ = cached_class_pixel_counts(dataset, cache, is_main=True)
    for i in range(len(dataset)):
        _, label = dataset.load(i)
        np.testing.assert_array_equal(after[i], np.bincount(label.ravel(), minlength=256)[:19])
    assert not np.array_equal(before, after)
