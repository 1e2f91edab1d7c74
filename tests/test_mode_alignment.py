"""Stochastic mode alignment: sampling within (class, mode), loss values, detach, rng replay."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from drsl.adaptation.drsl import DRSLRegularizer
from drsl.adaptation.drsl.mode_alignment import ModeSample, sample_pairs, sma_loss
from drsl.config import DRSLConfig

NUM_KEYS = 6


def _keys(counts: list[int], gen: torch.Generator) -> torch.Tensor:
    """Shuffled keys with ``counts[k]`` pixels of key k."""
    keys = torch.cat([torch.full((n,), k) for k, n in enumerate(counts)]).long()
    return keys[torch.randperm(len(keys), generator=gen)]


def _sample(gen: torch.Generator, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, ModeSample]:
    src = _keys([50, 3, 10, 0, 7, 40], gen)
    tgt = _keys([9, 20, 2, 6, 0, 40], gen)
    valid = lambda keys: torch.ones_like(keys, dtype=torch.bool)  # noqa: E731
    sample = sample_pairs(src, valid(src), tgt, valid(tgt), NUM_KEYS, 4, 8, torch.Generator().manual_seed(seed))
    return src, tgt, sample


def _mean_loss(*args: object) -> torch.Tensor:
    total, count = sma_loss(*args)  # type: ignore[arg-type]
    return total / count.clamp_min(1)


def test_samples_stay_within_their_class_and_mode() -> None:
    src, tgt, sample = _sample(torch.Generator().manual_seed(0))
    # key 1: 3 source px, key 2: 2 target px, 3/4 absent
    assert sample.aligned.nonzero()[:, 0].tolist() == [0, 5]
    assert torch.equal(sample.src_key, src) and torch.equal(sample.tgt_key, tgt)
    assert set(tgt[sample.tgt_drawn].tolist()) == {0, 5}
    assert set(src[sample.src_drawn].tolist()) == {0, 2, 4, 5}  # every key with >= 4 source pixels
    assert torch.bincount(tgt[sample.tgt_drawn], minlength=NUM_KEYS).tolist() == [8, 0, 0, 0, 0, 8]
    assert torch.bincount(src[sample.src_drawn], minlength=NUM_KEYS).tolist() == [8, 0, 8, 0, 7, 8]


def test_unlabelled_pixels_are_never_drawn_nor_counted() -> None:
    keys = torch.tensor([0] * 6 + [1] * 6)
    valid = torch.tensor([True] * 3 + [False] * 3 + [True] * 6)
    sample = sample_pairs(keys, valid, keys, valid, 2, 4, 8, torch.Generator().manual_seed(0))
    assert sample.aligned.tolist() == [False, True]  # key 0 has only 3 labelled pixels
    assert not (sample.src_drawn & ~valid).any() and not (sample.tgt_drawn & ~valid).any()
    assert sample.tgt_drawn.tolist() == [False] * 6 + [True] * 6


def test_sampling_is_random_and_replayable() -> None:
    src, tgt, first = _sample(torch.Generator().manual_seed(0), seed=0)
    _, _, same = _sample(torch.Generator().manual_seed(0), seed=0)
    _, _, other = _sample(torch.Generator().manual_seed(0), seed=1)
    assert torch.equal(first.src_drawn, same.src_drawn)
    assert torch.equal(first.tgt_drawn, same.tgt_drawn)
    assert not torch.equal(first.src_drawn, other.src_drawn)


def _vectors(n: int, seed: int) -> torch.Tensor:
    return F.normalize(torch.randn(n, 4, generator=torch.Generator().manual_seed(seed)), dim=1)


@pytest.mark.parametrize("distance", ["centroid_cosine", "pairwise"])
def test_zero_when_target_equals_source(distance: str) -> None:
    gen = torch.Generator().manual_seed(0)
    src_keys, tgt_keys = _keys([10, 10, 6, 0, 0, 9], gen), _keys([7, 12, 5, 0, 0, 4], gen)
    points = _vectors(NUM_KEYS, 3)  # one point per key: identical source and target points
    src, tgt = points[src_keys], points[tgt_keys].requires_grad_()
    every = lambda keys: torch.ones_like(keys, dtype=torch.bool)  # noqa: E731
    sample = sample_pairs(src_keys, every(src_keys), tgt_keys, every(tgt_keys), NUM_KEYS, 4, 8, gen)
    loss = _mean_loss(src, tgt, sample, NUM_KEYS, distance, True, 0.0)
    assert loss.item() == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("distance", ["centroid_cosine", "pairwise"])
def test_loss_matches_brute_force(distance: str) -> None:
    src_keys, tgt_keys, sample = _sample(torch.Generator().manual_seed(0))
    src, tgt = _vectors(len(src_keys), 1), _vectors(len(tgt_keys), 2)
    per_key = []
    for key in sample.aligned.nonzero()[:, 0].tolist():
        s = src[sample.src_drawn & (src_keys == key)]
        t = tgt[sample.tgt_drawn & (tgt_keys == key)]
        if distance == "centroid_cosine":
            centre = s.mean(0) / s.mean(0).norm()
            per_key.append((1 - t @ centre).mean())
        else:
            per_key.append(torch.cdist(t, s).pow(2).mean())
    expected = torch.stack(per_key).mean()
    loss = _mean_loss(src, tgt, sample, NUM_KEYS, distance, True, 0.0)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_margin_pushes_only_violating_target_pixels() -> None:
    # source centroids: key 0 at e0, key 1 at e1; target pixels of key 0
    src = torch.tensor([[1.0, 0.0]] * 4 + [[0.0, 1.0]] * 4)
    src_keys = torch.tensor([0] * 4 + [1] * 4)
    near = torch.tensor([[1.0, 0.0]] * 4)
    ambiguous = F.normalize(torch.tensor([[1.0, 0.9]] * 4), dim=1)
    tgt_keys = torch.zeros(4, dtype=torch.long)
    sample = sample_pairs(src_keys, src_keys >= 0, tgt_keys, tgt_keys >= 0, 2, 4, 8, torch.Generator())
    violation = 0.5 - (1.0 - 0.9) / 1.81**0.5  # other cos - (own cos - margin)
    for tgt, extra in ((near, 0.0), (ambiguous, violation)):
        pull = _mean_loss(src, tgt, sample, 2, "centroid_cosine", True, 0.0)
        pushed = _mean_loss(src, tgt, sample, 2, "centroid_cosine", True, 0.5)
        assert (pushed - pull).item() == pytest.approx(extra, abs=1e-5)


def test_no_aligned_mode_gives_connected_zero() -> None:
    src_keys, tgt_keys = torch.tensor([0, 0, 0, 0]), torch.tensor([1, 1, 1, 1])
    tgt = _vectors(4, 0).requires_grad_()
    sample = sample_pairs(src_keys, src_keys >= 0, tgt_keys, tgt_keys >= 0, 2, 4, 8, torch.Generator())
    loss, count = sma_loss(_vectors(4, 1), tgt, sample, 2, "centroid_cosine", True, 0.0)
    assert count.item() == 0 and loss.item() == 0.0
    loss.backward()
    assert torch.equal(tgt.grad, torch.zeros_like(tgt))


@pytest.mark.parametrize("detach", [True, False])
def test_detach_source_blocks_source_gradient(detach: bool) -> None:
    src_keys, tgt_keys, sample = _sample(torch.Generator().manual_seed(0))
    src = _vectors(len(src_keys), 1).requires_grad_()
    tgt = _vectors(len(tgt_keys), 2).requires_grad_()
    _mean_loss(src, tgt, sample, NUM_KEYS, "centroid_cosine", detach, 0.0).backward()
    assert tgt.grad.abs().sum() > 0
    assert (src.grad is None) == detach


def _feature_batch() -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 6, 12, 12, generator=gen)
    labels = torch.randint(0, 2, (2, 12, 12), generator=gen)
    return feats, labels, feats + 0.3 * torch.randn(2, 6, 12, 12, generator=gen), labels


def test_rng_state_round_trip_reproduces_samples() -> None:
    cfg = DRSLConfig(hidden_dim=8, embed_dim=4, num_modes=2, samples_per_mode=5)
    reg = DRSLRegularizer(6, 2, cfg, seed=3).eval()
    batch = _feature_batch()
    state = reg.get_rng_state()
    first, logs = reg(*batch)
    second, _ = reg(*batch)
    reg.set_rng_state(state)
    replay, _ = reg(*batch)
    assert logs["sma_pairs"] > 0
    assert first.item() != second.item()  # fresh samples each call
    assert first.item() == replay.item()
    resumed = DRSLRegularizer(6, 2, cfg, seed=99).eval()
    resumed.load_state_dict(reg.state_dict())
    resumed.set_rng_state(state)
    assert resumed(*batch)[0].item() == first.item()
