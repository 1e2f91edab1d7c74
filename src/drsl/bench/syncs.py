"""Count, on any device, the host-device synchronisations a piece of code would make on a GPU.

On CUDA ``torch.cuda.set_sync_debug_mode`` reports synchronisations as they happen; on a CPU
there are none to report, so :class:`SyncCounter` counts the operations that force one on a GPU:

- ``read``: a value copied to the host (``item()``, ``bool()``/``float()``/``int()`` of a tensor,
  which dispatch ``aten._local_scalar_dense``; ``tolist()``, ``numpy()``, ``cpu()``);
- ``shape``: an output whose size depends on the data (``nonzero``, boolean-mask indexing,
  ``masked_select``, ``unique``, ``repeat_interleave`` without an output size);
- ``bincount``: CUDA reads the input's maximum to size the output.

Random draws on a CPU generator copied to the GPU are a synchronisation too, but on a CPU run they
look like any other draw; ``randperm`` calls are listed apart (``randperm``, not a sync) so a
reader can see them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

aten = torch.ops.aten
_READS = {aten._local_scalar_dense.default}
_SHAPES = {
    aten.nonzero.default, aten.masked_select.default, aten._unique2.default, aten.unique_dim.default,
    aten.unique_consecutive.default, aten.repeat_interleave.Tensor,
}
_BOOL_INDEXING = {aten.index.Tensor, aten.index_put.default, aten.index_put_.default, aten._index_put_impl_.default}
#: Tensor methods that copy to the host without an aten operation of their own on CPU.
_HOST_METHODS = ("tolist", "numpy", "cpu")


def _has_bool_index(args: tuple[Any, ...]) -> bool:
    indices = args[1] if len(args) > 1 else ()
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in indices or ())


class SyncCounter(TorchDispatchMode):
    """Counts synchronising operations by kind, and all operations, while active (module docstring)."""

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()
        self.calls: Counter[str] = Counter()
        #: Every aten operation dispatched (a measure of small-kernel overhead).
        self.ops = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple[Any, ...] = (), kwargs: Any = None) -> Any:
        kind = None
        self.ops += 1
        if func in _READS:
            kind = "read"
        elif func in _SHAPES or (func in _BOOL_INDEXING and _has_bool_index(args)):
            kind = "shape"
        elif func is aten.bincount.default:
            kind = "bincount"
        elif func is aten.randperm.generator or func is aten.randperm.default:
            self.calls["randperm"] += 1
        if kind is not None:
            self.counts[kind] += 1
            self.calls[str(func)] += 1
        return func(*args, **(kwargs or {}))

    @property
    def total(self) -> int:
        """All synchronising operations counted."""
        return sum(self.counts.values())


@contextmanager
def count_syncs() -> Iterator[SyncCounter]:
    """A :class:`SyncCounter` active for the block, with ``tolist``/``numpy``/``cpu`` counted too."""
    counter = SyncCounter()
    originals = {name: getattr(torch.Tensor, name) for name in _HOST_METHODS}

    def counted(name: str) -> Callable[..., Any]:
        def method(self: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
            counter.counts["read"] += 1
            counter.calls[f"Tensor.{name}"] += 1
            return originals[name](self, *args, **kwargs)
        return method

    try:
        for name in _HOST_METHODS:
            setattr(torch.Tensor, name, counted(name))
        with counter:
            yield counter
    finally:
        for name, original in originals.items():
            setattr(torch.Tensor, name, original)
