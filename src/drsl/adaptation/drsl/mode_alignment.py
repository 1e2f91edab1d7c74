"""Stochastic mode alignment (SMA): sample pixels per (class, mode) and pull target to source.

Pixels are identified by a key ``class * K + mode``. :func:`sample_pairs` draws, without
replacement, up to ``max_samples`` labelled pixels of every key in each domain; :func:`sma_loss`
turns the sample into the alignment loss, summed over the aligned keys. Samples are boolean masks
over all pixels, not index lists, so no shape depends on the data and nothing waits for the device.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from drsl.adaptation.drsl.keys import count_keys


@dataclass
class ModeSample:
    """The drawn pixels of each domain (masks over its pixels, with their keys) and the aligned keys.

    The target side draws only from aligned keys (at least ``min_pixels`` labelled pixels in both
    domains); the source side from every key with at least ``min_pixels`` source pixels, so the
    margin variant can push away from source centroids of modes that have no target pixels.
    """

    src_drawn: Tensor
    src_key: Tensor
    tgt_drawn: Tensor
    tgt_key: Tensor
    #: (num_keys,) bool: keys aligned between the domains.
    aligned: Tensor


def _draw_within_keys(keys: Tensor, eligible: Tensor, num_keys: int, max_samples: int,
                      generator: torch.Generator) -> Tensor:
    """A mask of a random subset (up to ``max_samples`` per key) of the ``eligible`` pixels.

    A random permutation, then a stable sort by key (ineligible pixels under an extra key, last),
    ranks the pixels of every key in random order; the first ``max_samples`` ranks are drawn.
    """
    n = len(keys)
    keys = torch.where(eligible, keys, num_keys)
    perm = torch.randperm(n, generator=generator, device=keys.device)
    order = perm[torch.argsort(keys[perm], stable=True)]
    sorted_keys = keys[order]
    counts = count_keys(keys, num_keys + 1)
    start = counts.cumsum(0) - counts
    rank = torch.arange(n, device=keys.device) - start[sorted_keys]
    drawn = (rank < max_samples) & (sorted_keys < num_keys)
    return torch.zeros_like(drawn).scatter_(0, order, drawn)


def sample_pairs(
    src_keys: Tensor,
    src_valid: Tensor,
    tgt_keys: Tensor,
    tgt_valid: Tensor,
    num_keys: int,
    min_pixels: int,
    max_samples: int,
    generator: torch.Generator,
) -> ModeSample:
    """Draw the per-(class, mode) samples of both domains among their ``valid`` (labelled) pixels.

    Keys are ``class * K + mode`` (any key where not valid). ``generator`` lives on the keys' device.
    """
    least = max(min_pixels, 1)
    src_ok = count_keys(src_keys, num_keys, src_valid) >= least
    aligned = src_ok & (count_keys(tgt_keys, num_keys, tgt_valid) >= least)
    src_drawn = _draw_within_keys(src_keys, src_valid & src_ok[src_keys], num_keys, max_samples, generator)
    tgt_drawn = _draw_within_keys(tgt_keys, tgt_valid & aligned[tgt_keys], num_keys, max_samples, generator)
    return ModeSample(src_drawn, src_keys, tgt_drawn, tgt_keys, aligned)


def _key_sums(values: Tensor, keys: Tensor, weights: Tensor, num_keys: int) -> Tensor:
    """Sum of ``values`` (M, ...) per key over the pixels where ``weights`` (bool): (num_keys, ...)."""
    weights = weights.view(-1, *([1] * (values.dim() - 1)))
    values = torch.where(weights, values, 0.0)
    return values.new_zeros((num_keys, *values.shape[1:])).index_add_(0, keys, values)


def sma_loss(
    src: Tensor,
    tgt: Tensor,
    sample: ModeSample,
    num_keys: int,
    distance: str,
    detach_source: bool,
    margin: float,
) -> tuple[Tensor, Tensor]:
    """``(sum, count)``: the sum over aligned keys of the mean, over the key's drawn target pixels,
    of their distance to the key's drawn source pixels; and the number of aligned keys.

    ``src`` (Ns, D) and ``tgt`` (Nt, D) are unit vectors. ``distance`` "centroid_cosine":
    ``1 - cos(t, normalised source centroid)``; "pairwise": mean of ``|t - s|^2`` over the drawn
    source pixels ``s`` (computed exactly from per-key moments). With ``margin > 0`` every target
    pixel adds the mean, over the other keys' source centroids ``m`` that violate it, of
    ``relu(cos(t, m) - cos(t, own centroid) + margin)``. The sum is a graph-connected zero
    without aligned keys; the caller divides by the count (over all processes).
    """
    s = src.detach() if detach_source else src
    src_key, key = sample.src_key, sample.tgt_key
    src_count = count_keys(src_key, num_keys, sample.src_drawn)
    sums = _key_sums(s, src_key, sample.src_drawn, num_keys)
    centroid = F.normalize(sums, dim=1)
    if distance == "centroid_cosine":
        per_pixel = 1.0 - (tgt * centroid[key]).sum(1)
    elif distance == "pairwise":
        mean = sums / src_count.clamp_min(1)[:, None]
        sq = _key_sums(s.pow(2).sum(1), src_key, sample.src_drawn, num_keys) / src_count.clamp_min(1)
        per_pixel = tgt.pow(2).sum(1) + sq[key] - 2.0 * (tgt * mean[key]).sum(1)
    else:
        raise ValueError(f"unknown SMA distance {distance!r}")
    if margin > 0:
        cos = tgt @ centroid.T
        own = cos.gather(1, key[:, None])
        keys = torch.arange(num_keys, device=key.device)
        others = (src_count > 0)[None, :] & (keys[None, :] != key[:, None])
        hinge = F.relu(cos - own + margin) * others
        per_pixel = per_pixel + hinge.sum(1) / (hinge > 0).sum(1).clamp_min(1)
    pixels_per_key = count_keys(key, num_keys, sample.tgt_drawn).clamp_min(1)
    per_key = _key_sums(per_pixel, key, sample.tgt_drawn, num_keys) / pixels_per_key
    return torch.where(sample.aligned, per_key, 0.0).sum(), sample.aligned.sum()
