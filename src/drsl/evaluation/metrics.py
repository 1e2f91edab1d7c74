"""Confusion-matrix segmentation metrics, matching the official Cityscapes evaluator.

:class:`ConfusionMatrix` accumulates a ``(C, C + 1)`` int64 matrix: rows are ground-truth train
ids, columns are predicted train ids, and the last column counts pixels whose prediction is not
a class (a value outside ``0..C-1``, such as 255). Pixels whose ground truth is not a class are
not counted at all.

Definitions (those of ``cityscapesscripts.evaluation.evalPixelLevelSemanticLabeling``):

* IoU of class ``c`` = TP / (TP + FP + FN) with TP = ``M[c, c]``, FN = the rest of row ``c``
  (the void column included: predicting "nothing" is a miss), FP = the rest of column ``c``.
* IoU is NaN when TP + FP + FN = 0, i.e. the class is absent from both ground truth and
  prediction. A class absent from the ground truth but predicted somewhere has IoU 0.
* A mean IoU averages the non-NaN IoUs of the requested classes.

Every subset mean (e.g. Cityscapes' 19, 16 and 13 classes; the subsets are data of the class set)
is read from the same matrix: the IoU of a class depends only on its own row and column, so
restricting the protocol never means rebuilding the matrix.

Units: the functions here and every JSON file (``eval.json``) hold fractions in [0, 1]; the
tables printed for people (:func:`format_table`, the HTML report) show percent and say so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
import torch.distributed as dist

if TYPE_CHECKING:
    from drsl.data.classes import ClassSet

__all__ = [
    "ConfusionMatrix",
    "format_table",
    "mean_iou",
    "per_class_iou",
    "pixel_accuracy",
    "summarize",
]


def _is_float(values: torch.Tensor | np.ndarray) -> bool:
    if isinstance(values, torch.Tensor):
        return values.dtype.is_floating_point
    return np.asarray(values).dtype.kind in "fc"


def _flat_ids(values: torch.Tensor | np.ndarray, device: torch.device | None) -> torch.Tensor:
    """Flattened int64 ids on ``device`` (CPU when None)."""
    if isinstance(values, torch.Tensor):
        return values.reshape(-1).to(device=device, dtype=torch.long)
    return torch.from_numpy(np.asarray(values).reshape(-1).astype(np.int64)).to(device)


class ConfusionMatrix:
    """Streaming ``(C, C + 1)`` confusion matrix; see the module docstring for the layout.

    Counts of torch inputs stay on their device until :attr:`matrix` is read, so updating with
    predictions on a GPU copies nothing to the host.
    """

    def __init__(self, num_classes: int) -> None:
        if not 1 <= num_classes <= 255:
            raise ValueError(f"num_classes must be in 1..255, got {num_classes}")
        self.num_classes = num_classes
        self._host = np.zeros((num_classes, num_classes + 1), dtype=np.int64)
        self._pending: torch.Tensor | None = None

    def _fold(self) -> None:
        """Add the counts kept on a device into the host matrix."""
        if self._pending is not None:
            self._host = self._host + self._pending.cpu().numpy().reshape(self._host.shape)
            self._pending = None

    @property
    def matrix(self) -> np.ndarray:
        """The counts as an int64 numpy array (device counts are fetched here)."""
        self._fold()
        return self._host

    @matrix.setter
    def matrix(self, value: np.ndarray) -> None:
        self._host, self._pending = value, None

    def update(self, pred: torch.Tensor | np.ndarray, label: torch.Tensor | np.ndarray) -> None:
        """Count one batch of predictions against labels (same shape, any shape, integer ids).

        Pixels whose label is outside ``0..C-1`` (255 included) are ignored; predictions outside
        ``0..C-1`` go to the void column. Counted with one bincount, on the device of a torch
        input (CPU for numpy), and kept there.
        """
        if tuple(pred.shape) != tuple(label.shape):
            raise ValueError(f"pred shape {tuple(pred.shape)} != label shape {tuple(label.shape)}")
        if _is_float(pred) or _is_float(label):
            raise TypeError("pred and label must hold integer class ids, not floats")
        c = self.num_classes
        device = next((v.device for v in (pred, label) if isinstance(v, torch.Tensor)), None)
        pred_t, label_t = _flat_ids(pred, device), _flat_ids(label, device)
        valid = (label_t >= 0) & (label_t < c)
        pred_t = torch.where((pred_t >= 0) & (pred_t < c), pred_t, c)
        # Invalid pixels go to one extra bin that is dropped: no data-dependent selection.
        index = torch.where(valid, label_t * (c + 1) + pred_t, c * (c + 1))
        counts = torch.bincount(index, minlength=c * (c + 1) + 1)[:-1]
        if self._pending is not None and self._pending.device != counts.device:
            self._fold()
        self._pending = counts if self._pending is None else self._pending + counts

    def merge(self, other: ConfusionMatrix) -> None:
        """Add the counts of another matrix with the same number of classes."""
        if other.num_classes != self.num_classes:
            raise ValueError(f"cannot merge {other.num_classes} classes into {self.num_classes}")
        self.matrix += other.matrix

    def all_reduce(self) -> None:
        """Sum the matrix over all torch.distributed ranks (no-op when not initialised)."""
        if not (dist.is_available() and dist.is_initialized()):
            return
        device = torch.device("cpu")
        if dist.get_backend() == "nccl":
            device = torch.device("cuda", torch.cuda.current_device())
        tensor = torch.from_numpy(self.matrix).to(device)
        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
        self.matrix = tensor.cpu().numpy().copy()

    def state_dict(self) -> dict[str, Any]:
        """Counts as a torch tensor (loadable with ``torch.load(weights_only=True)``)."""
        return {"num_classes": self.num_classes, "matrix": torch.from_numpy(self.matrix.copy())}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore counts saved by :meth:`state_dict`; the class count must match."""
        if int(state["num_classes"]) != self.num_classes:
            raise ValueError(
                f"state has {state['num_classes']} classes, this matrix has {self.num_classes}"
            )
        matrix = np.asarray(torch.as_tensor(state["matrix"]).cpu().numpy(), dtype=np.int64)
        if matrix.shape != self.matrix.shape:
            raise ValueError(f"state matrix shape {matrix.shape} != {self.matrix.shape}")
        self.matrix = matrix.copy()


def _check(matrix: np.ndarray) -> np.ndarray:
    """``matrix`` as int64, checked to be (C, C) or (C, C + 1)."""
    matrix = np.asarray(matrix, dtype=np.int64)
    if matrix.ndim != 2 or matrix.shape[1] - matrix.shape[0] not in (0, 1):
        raise ValueError(f"expected a (C, C) or (C, C + 1) matrix, got shape {matrix.shape}")
    return matrix


def per_class_iou(matrix: np.ndarray) -> np.ndarray:
    """IoU per class (float64, length C); NaN for classes absent from gt and prediction."""
    matrix = _check(matrix)
    c = matrix.shape[0]
    tp = np.diagonal(matrix).astype(np.float64)
    denom = matrix.sum(axis=1) + matrix[:, :c].sum(axis=0) - tp
    return np.where(denom > 0, tp / np.maximum(denom, 1), np.nan)


def mean_iou(matrix: np.ndarray, subset: Sequence[int] | None = None) -> float:
    """Mean of the non-NaN IoUs of the class ids ``subset`` (None: every class); NaN if none."""
    num_classes = _check(matrix).shape[0]
    ids = list(range(num_classes) if subset is None else subset)
    if not ids or min(ids) < 0 or max(ids) >= num_classes:
        raise ValueError(f"subset {subset!r} is not a set of ids in 0..{num_classes - 1}")
    iou = per_class_iou(matrix)[ids]
    valid = iou[~np.isnan(iou)]
    return float(valid.mean()) if valid.size else math.nan


def pixel_accuracy(matrix: np.ndarray) -> float:
    """Correct pixels over counted (valid ground-truth) pixels; NaN when nothing was counted."""
    matrix = _check(matrix)
    total = matrix.sum()
    return float(np.trace(matrix) / total) if total else math.nan


def _json_float(value: float) -> float | None:
    return None if math.isnan(value) else float(value)


def summarize(matrix: np.ndarray, classes: ClassSet, subsets: Sequence[int] | None = None) -> dict[str, Any]:
    """JSON-ready metrics (fractions in [0, 1]; NaN written as None), all from one matrix.

    ``{"miou": {"19": .., "16": ..}, "per_class_iou": {name: ..}, "pixel_accuracy": ..,
    "num_pixels": .., "class_set": name, "subsets": {"16": [names]}, "unit": "fraction"}``;
    ``subsets`` are sizes of the class set's evaluation subsets (default: all of them, the whole set first).
    """
    matrix = _check(matrix)
    if classes.num_classes != matrix.shape[0]:
        raise ValueError(f"{classes.num_classes} classes in {classes.name} for a {matrix.shape[0]}-class matrix")
    chosen: Mapping[int, Sequence[int]] = {k: classes.subset(k) for k in subsets or classes.eval_subsets}
    iou = per_class_iou(matrix)
    return {
        "miou": {str(k): _json_float(mean_iou(matrix, ids)) for k, ids in chosen.items()},
        "per_class_iou": {name: _json_float(v) for name, v in zip(classes.names, iou)},
        "pixel_accuracy": _json_float(pixel_accuracy(matrix)),
        "num_pixels": int(matrix.sum()),
        "class_set": classes.name,
        "subsets": {str(k): [classes.names[i] for i in ids] for k, ids in chosen.items()},
        "unit": "fraction",
    }


def _percent(value: float | None) -> str:
    return "   n/a" if value is None else f"{100 * value:6.2f}"


def format_table(summary: dict[str, Any], title: str | None = None) -> str:
    """A per-class IoU table (percent) from :func:`summarize` output, with the subset mIoUs,
    under a ``== title ==`` header line when given.

    One column per reported subset: ``x`` marks a class that belongs to it, ``-`` one outside.
    """
    keys = list(summary["miou"])
    names = list(summary["per_class_iou"])
    members = summary.get("subsets") or {k: names for k in keys}
    width = max(len("pixel accuracy"), *(len(n) for n in names))
    header = f"{'class':<{width}}  {'IoU %':>6}  " + "  ".join(f"{k:>3}" for k in keys)
    lines = [f"== {title} =="] if title else []
    lines += [header, "-" * len(header)]
    for name in names:
        marks = "  ".join(f"{'x' if name in members.get(k, names) else '-':>3}" for k in keys)
        lines.append(f"{name:<{width}}  {_percent(summary['per_class_iou'][name])}  {marks}")
    lines.append("-" * len(header))
    for k in keys:
        lines.append(f"{'mIoU (' + k + ')':<{width}}  {_percent(summary['miou'][k])}")
    lines.append(f"{'pixel accuracy':<{width}}  {_percent(summary['pixel_accuracy'])}")
    lines.append(f"{'pixels':<{width}}  {summary['num_pixels']}")
    return "\n".join(lines)
