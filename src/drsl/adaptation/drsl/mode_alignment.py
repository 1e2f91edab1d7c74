"""Stochastic mode alignment (SMA): sample pixels per (class, mode) and pull target to source.

Pixels are identified by a key ``class * K + mode``. :func:`sample_pairs` draws, without
replacement, up to ``max_samples`` pixels of every key in each domain; :func:`sma_loss` turns
the sample into the alignment loss, averaged over the aligned keys.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor


@dataclass
class ModeSample:
    """Sampled pixel indices and their keys, per domain.

    The target side holds only aligned keys (at least ``min_pixels`` pixels in both domains); the
    source side holds every key with at least ``min_pixels`` source pixels, so the margin variant
    can push away from source centroids of modes that have no target pixels.
    """

    src_index: Tensor
    src_key: Tensor
    tgt_index: Tensor
    tgt_key: Tensor
    #: Aligned keys, ascending.
    aligned: Tensor


def _sample_within_keys(
    keys: Tensor, allowed: Tensor, max_samples: int, generator: torch.Generator
) -> Tensor:
    """Indices of a random subset (up to ``max_samples`` per key) of the pixels of allowed keys."""
    perm = torch.randperm(len(keys), generator=generator).to(keys.device)
    order = perm[torch.argsort(keys[perm], stable=True)]
    sorted_keys = keys[order]
    counts = torch.bincount(keys, minlength=len(allowed))
    start = counts.cumsum(0) - counts
    rank = torch.arange(len(keys), device=keys.device) - start[sorted_keys]
    return order[(rank < max_samples) & allowed[sorted_keys]]


def sample_pairs(
    src_keys: Tensor,
    tgt_keys: Tensor,
    num_keys: int,
    min_pixels: int,
    max_samples: int,
    generator: torch.Generator,
) -> ModeSample:
    """Draw the per-(class, mode) samples of both domains (keys are ``class * K + mode``)."""
    src_ok = torch.bincount(src_keys, minlength=num_keys) >= max(min_pixels, 1)
    aligned = src_ok & (torch.bincount(tgt_keys, minlength=num_keys) >= max(min_pixels, 1))
    src_index = _sample_within_keys(src_keys, src_ok, max_samples, generator)
    tgt_index = _sample_within_keys(tgt_keys, aligned, max_samples, generator)
    return ModeSample(
        src_index, src_keys[src_index], tgt_index, tgt_keys[tgt_index], aligned.nonzero()[:, 0]
    )


def _key_sums(values: Tensor, keys: Tensor, num_keys: int) -> Tensor:
    """Sum of ``values`` (M, ...) per key: (num_keys, ...)."""
    return values.new_zeros((num_keys, *values.shape[1:])).index_add_(0, keys, values)


def sma_loss(
    src: Tensor,
    tgt: Tensor,
    sample: ModeSample,
    num_keys: int,
    distance: str,
    detach_source: bool,
    margin: float,
) -> Tensor:
    """Mean over aligned keys of the mean, over the key's sampled target pixels, of their distance
    to the key's sampled source pixels.

    ``src`` (Ns, D) and ``tgt`` (Nt, D) are unit vectors. ``distance`` "centroid_cosine":
    ``1 - cos(t, normalised source centroid)``; "pairwise": mean of ``|t - s|^2`` over the sampled
    source pixels ``s`` (computed exactly from per-key moments). With ``margin > 0`` every target
    pixel adds the mean, over the other keys' source centroids ``m`` that violate it, of
    ``relu(cos(t, m) - cos(t, own centroid) + margin)``. A graph-connected zero without aligned
    keys.
    """
    if len(sample.aligned) == 0:
        return tgt.sum() * 0.0
    s = src[sample.src_index]
    if detach_source:
        s = s.detach()
    t = tgt[sample.tgt_index]
    key = sample.tgt_key
    count = torch.bincount(sample.src_key, minlength=num_keys).clamp_min(1)
    sums = _key_sums(s, sample.src_key, num_keys)
    centroid = F.normalize(sums, dim=1)
    if distance == "centroid_cosine":
        per_pixel = 1.0 - (t * centroid[key]).sum(1)
    elif distance == "pairwise":
        mean = sums / count[:, None]
        sq = _key_sums(s.pow(2).sum(1), sample.src_key, num_keys) / count
        per_pixel = t.pow(2).sum(1) + sq[key] - 2.0 * (t * mean[key]).sum(1)
    else:
        raise ValueError(f"unknown SMA distance {distance!r}")
    if margin > 0:
        cos = t @ centroid.T
        own = cos.gather(1, key[:, None])
        present = torch.bincount(sample.src_key, minlength=num_keys) > 0
        keys = torch.arange(num_keys, device=key.device)
        others = present[None, :] & (keys[None, :] != key[:, None])
        hinge = F.relu(cos - own + margin) * others
        per_pixel = per_pixel + hinge.sum(1) / (hinge > 0).sum(1).clamp_min(1)
    pixels_per_key = torch.bincount(key, minlength=num_keys).clamp_min(1)
    per_key = _key_sums(per_pixel, key, num_keys) / pixels_per_key
    return per_key[sample.aligned].mean()
