"""Resumable, rank-aware sampling: the sample order and each sample's augmentation seed are pure
functions of (seed, position), so a resumed or multi-process run sees exactly the same batches."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Callable

import numpy as np
import torch
from torch.utils.data import Dataset, Sampler

from drsl.engine.seeding import derived_seed

#: Draws of one epoch, from its generator and the dataset size: (indices, classes).
EpochDraw = Callable[[np.random.Generator, int], tuple[np.ndarray, np.ndarray]]


class ResumableSampler(Sampler[tuple[int, ...]]):
    """An endless stream of ``(index, sample_seed)``: epoch-wise permutations of the dataset.

    With ``draw`` each epoch is instead ``draw(rng, num_samples)``: that many (index, class) draws
    (rare-class sampling, see :mod:`drsl.data.class_balance`), and the stream holds
    ``(index, sample_seed, class)``.

    The global stream is cut into global batches of ``batch_size * world_size`` items; rank r takes
    items r, r + world_size, ... of each, so the union over ranks equals a single process run with
    the global batch. ``start_batch`` skips the batches already consumed (resume).
    """

    def __init__(
        self, num_samples: int, batch_size: int, seed: int, start_batch: int = 0,
        rank: int = 0, world_size: int = 1, draw: EpochDraw | None = None,
    ) -> None:
        if num_samples <= 0:
            raise ValueError("cannot sample from an empty dataset")
        self.draw = draw
        self.num_samples, self.batch_size, self.seed = num_samples, batch_size, seed
        self.start_batch, self.rank, self.world_size = start_batch, rank, world_size

    def _epoch(self, epoch: int) -> tuple[np.ndarray, np.ndarray | None]:
        """The epoch's indices and, with ``draw``, their classes."""
        rng = np.random.default_rng([self.seed, epoch])
        if self.draw is None:
            return rng.permutation(self.num_samples), None
        return self.draw(rng, self.num_samples)

    def __iter__(self) -> Iterator[tuple[int, ...]]:
        position = self.start_batch * self.batch_size * self.world_size + self.rank
        epoch, indices, classes = -1, np.empty(0, dtype=np.int64), None
        while True:
            if position // self.num_samples != epoch:
                epoch = position // self.num_samples
                indices, classes = self._epoch(epoch)
            sample_seed = derived_seed(self.seed, epoch, position)
            at = position % self.num_samples
            yield (int(indices[at]), sample_seed) if classes is None else (int(indices[at]), sample_seed, int(classes[at]))
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
        return self.augment(self.load(index), sample_seed)

    def load(self, index: int) -> dict[str, Any]:
        """Sample ``index``, prepared, before the random transform."""
        sample = self.dataset[index]
        return sample if self.prepare is None else self.prepare(sample)

    def augment(self, sample: dict[str, Any], sample_seed: int) -> dict[str, Any]:
        """``sample`` (changed in place) with its image and label transformed under ``sample_seed``."""
        if self.transform is not None:
            with torch.random.fork_rng(devices=[]):
                # The CPU generator only: torch.manual_seed would also queue lazy accelerator seeding per sample.
                torch.default_generator.manual_seed(sample_seed)
                sample["image"], sample["label"] = self.transform(sample["image"], sample["label"])
        return sample
