"""Resumable, rank-aware sampling: the sample order and each sample's augmentation seed are pure
functions of (seed, position), so a resumed or multi-process run sees exactly the same batches."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler


class ResumableSampler(Sampler[tuple[int, int]]):
    """An endless stream of ``(index, sample_seed)``: epoch-wise permutations of the dataset.

    With ``weights`` (per-sample probabilities) each epoch is instead ``num_samples`` draws with
    replacement from those probabilities (class-balanced sampling).

    The global stream is cut into global batches of ``batch_size * world_size`` items; rank r takes
    items r, r + world_size, ... of each, so the union over ranks equals a single process run with
    the global batch. ``start_batch`` skips the batches already consumed (resume).
    """

    def __init__(
        self, num_samples: int, batch_size: int, seed: int, start_batch: int = 0,
        rank: int = 0, world_size: int = 1, weights: np.ndarray | None = None,
    ) -> None:
        if num_samples <= 0:
            raise ValueError("cannot sample from an empty dataset")
        if weights is not None and len(weights) != num_samples:
            raise ValueError(f"{len(weights)} sampling weights for {num_samples} samples")
        self.weights = weights
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.start_batch, self.rank, self.world_size = start_batch, rank, world_size

    def _permutation(self, epoch: int) -> np.ndarray:
        rng = np.random.default_rng([self.seed, epoch])
        if self.weights is None:
            return rng.permutation(self.num_samples)
        return rng.choice(self.num_samples, size=self.num_samples, p=self.weights)

    def __iter__(self) -> Iterator[tuple[int, int]]:
        position = self.start_batch * self.batch_size * self.world_size + self.rank
        epoch, permutation = -1, np.empty(0, dtype=np.int64)
        while True:
            if position // self.num_samples != epoch:
                epoch = position // self.num_samples
                permutation = self._permutation(epoch)
            sample_seed = int(np.random.default_rng([self.seed, epoch, position]).integers(2**31))
            yield int(permutation[position % self.num_samples]), sample_seed
            position += self.world_size


class SeededView(Dataset):
    """Applies a random transform to ``dataset[index]`` under the sample's own seed.

    ``prepare`` may replace the label first (pseudo-labels). Randomness is forked so the caller's
    global RNG is untouched; results do not depend on worker count or on resumption.
    """

    def __init__(
        self,
        dataset: Dataset,
        transform: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None,
        prepare: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.dataset, self.transform, self.prepare = dataset, transform, prepare

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: tuple[int, int]) -> dict[str, Any]:
        index, sample_seed = key
        sample = self.dataset[index]
        if self.prepare is not None:
            sample = self.prepare(sample)
        if self.transform is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(sample_seed)
                sample["image"], sample["label"] = self.transform(sample["image"], sample["label"])
        return sample
