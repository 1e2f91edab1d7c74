"""The shared segmentation dataset: sample discovery, header screening, label decoding, items.

A layout module subclasses :class:`SegmentationDataset` and supplies two things: how to find the
candidate samples under its root (:meth:`~SegmentationDataset.discover`) and how to read its label
files (``read_raw``, with the name of the class-set mapping they use, ``native_mapping``). The
class set (:mod:`drsl.data.classes`) says which raw values are which classes. Everything else is
shared: the
``list_file`` restriction, the cheap header checks at construction (missing or unreadable files,
image/label size mismatches) with the ``on_error`` policy, and ``__getitem__``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, ClassVar, Literal

import numpy as np
import torch
from torch.utils.data import Dataset

from drsl.config import ConfigError
from drsl.data.classes import DEFAULT_CLASS_SET, ClassSet, load_class_set
from drsl.data.errors import DataError, LabelValueError
from drsl.fileio import not_a_file, read_text_file, walk_files
from drsl.data.io import IMAGE_SUFFIXES, image_size, read_image, read_label
from drsl.data.labels import IGNORE_INDEX, apply_lookup, lookup_table
from drsl.data.transforms import PairTransform, resize_pair
from drsl.errors import shorten

logger = logging.getLogger(__name__)

OnError = Literal["skip", "fail"]


@dataclass(frozen=True)
class Sample:
    """One image, its label file (None when the dataset has no labels for it) and its name."""

    name: str
    image_path: Path
    label_path: Path | None


@dataclass(frozen=True)
class Problem:
    """Why a sample was dropped: ``kind`` is missing, not_a_file (a dangling symbolic link, a link
    loop, a folder named like an image), unreadable or size_mismatch."""

    name: str
    kind: str
    path: str
    message: str

    def error(self) -> DataError:
        """The DataError describing this problem."""
        return DataError(self.path, self.message)


@dataclass(frozen=True, eq=False)
class LabelCodec:
    """Reads raw label files and maps them to train ids in one lookup; unknown values raise."""

    read: Callable[[str | Path], np.ndarray]
    #: 65536-entry uint8 table raw value -> train id.
    table: np.ndarray
    #: 65536-entry bool table of the raw values allowed to occur.
    valid: np.ndarray
    #: What valid values look like, for error messages (e.g. "Cityscapes label ids 0..33").
    expected: str

    @classmethod
    def from_mapping(
        cls,
        read: Callable[[str | Path], np.ndarray],
        mapping: dict[int, int],
        valid_ids: Iterable[int],
        expected: str,
    ) -> LabelCodec:
        """A codec mapping ``mapping`` keys to train ids; other ``valid_ids`` map to ignore."""
        valid = np.zeros(65536, dtype=bool)
        valid[list(valid_ids)] = True
        table = lookup_table(mapping, max_id=int(np.flatnonzero(valid).max()))
        return cls(read, table, valid, expected)

    def unknown_values(self, raw: np.ndarray) -> list[int]:
        """Distinct values of ``raw`` that are not valid (at most 10)."""
        bad = raw[~self.valid[raw]]
        return [int(v) for v in np.unique(bad)[:10]] if bad.size else []

    def to_train_ids(self, raw: np.ndarray, path: str | Path) -> np.ndarray:
        """Map a raw label read from ``path`` to uint8 train ids; unknown values raise."""
        bad = self.unknown_values(raw)
        if bad:
            raise LabelValueError(path, bad, self.expected)
        return apply_lookup(self.table, raw)

    def decode(self, path: str | Path) -> np.ndarray:
        """Read ``path`` and map it to uint8 train ids."""
        return self.to_train_ids(self.read(path), path)


def size_mismatch(
    image: Path, image_wh: tuple[int, ...], label: Path, label_wh: tuple[int, ...]
) -> str:
    """The message for an image and label of different sizes (sizes as width, height)."""
    return (
        f"image {image} is {image_wh[0]}x{image_wh[1]} but its label {label} is "
        f"{label_wh[0]}x{label_wh[1]} (width x height)"
    )


def same_name_samples(
    images: Path, labels: Path, extensions: tuple[str, ...] = (".png",), recursive: bool = False
) -> list[Sample]:
    """Images under ``images`` paired with ``labels/NAME.png``.

    NAME is the image path relative to ``images`` without its extension (posix separators).
    ``recursive`` searches sub-folders, following symbolic links (:func:`drsl.fileio.walk_files`).
    Entries named like images that are not files (dangling links, link loops, and folders where
    the search is not recursive) are kept, for the screening to name them.
    """
    files = walk_files(images) if recursive else images.iterdir()
    samples = []
    for path in files:
        if path.suffix.lower() in extensions:
            name = path.relative_to(images).with_suffix("").as_posix()
            samples.append(Sample(name, path, labels / f"{name}.png"))
    return samples


class SegmentationDataset(Dataset[dict[str, Any]]):
    """Images with class-id labels; items are dicts of image, label, name and index.

    ``image`` is a uint8 3xHxW tensor, ``label`` an int64 HxW tensor of ``classes`` ids (255 =
    ignore, all 255 for samples without labels). ``classes`` defaults to the packaged
    ``cityscapes19`` (the official layouts' own classes); ``mapping`` names the class set's
    mapping of raw label values (default: the layout's ``native_mapping``). ``resize`` ([h, w]) is applied before ``transform`` (a callable
    ``(image, label) -> (image, label)``). Samples dropped at construction under
    ``on_error="skip"`` are listed in :attr:`skipped`; under ``"fail"`` the first one raises.
    Files that turn out unreadable in ``__getitem__`` always raise :class:`DataError`.
    """

    #: Human-readable layout name used in messages.
    layout_name: ClassVar[str] = ""
    #: Suffix stripped from names read from a ``list_file`` (e.g. Cityscapes' "_leftImg8bit").
    name_suffix: ClassVar[str] = ""
    #: The class-set mapping this layout's label files use unless the config names another.
    native_mapping: ClassVar[str | None] = None
    #: Reads one raw label file (an HxW integer array).
    read_raw: ClassVar[Callable[[str | Path], np.ndarray]] = staticmethod(read_label)

    def __init__(
        self,
        root: str | Path,
        *,
        classes: ClassSet | None = None,
        mapping: str | None = None,
        list_file: str | Path | None = None,
        resize: list[int] | None = None,
        transform: PairTransform | None = None,
        on_error: OnError = "skip",
        require_labels: bool = True,
    ) -> None:
        if on_error not in ("skip", "fail"):
            raise ValueError(f"on_error must be 'skip' or 'fail', got {on_error!r}")
        self.root = Path(root)
        self.resize = resize
        self.transform = transform
        self.require_labels = require_labels
        self.classes = classes or load_class_set(DEFAULT_CLASS_SET)
        self.mapping = mapping
        if not self.root.is_dir():
            raise DataError(self.root, f"{self.layout_name} root does not exist or is not a folder")
        self.codec = self.label_codec()
        candidates = sorted(self.discover(), key=lambda sample: sample.name)
        self.num_found = len(candidates)
        problems: list[Problem] = []
        if list_file is not None:
            candidates, problems = self._select_listed(candidates, Path(list_file))
        self.samples: list[Sample] = []
        for candidate in candidates:
            sample, problem = self._screen(candidate)
            if problem is not None:
                problems.append(problem)
            if sample is not None:
                self.samples.append(sample)
        self.problems = problems
        self._apply_policy(on_error)

    # -- layout hooks -------------------------------------------------------------------------

    @property
    def expected_layout(self) -> str:
        """The expected file layout, for messages (e.g. "ROOT/images/*.png and ...")."""
        raise NotImplementedError

    def discover(self) -> list[Sample]:
        """All candidate samples under the root, with label paths where labels are expected."""
        raise NotImplementedError

    def label_codec(self) -> LabelCodec:
        """How this layout's label files are read and mapped to class ids: ``read_raw`` and the
        class set's mapping named ``mapping`` (else the layout's ``native_mapping``)."""
        name = self.mapping or self.native_mapping
        if name is None:
            raise DataError(self.root, f"the {self.layout_name} layout needs a label mapping (mapping: NAME)")
        try:
            raw = self.classes.mapping(name)
        except ConfigError as exc:
            raise DataError(self.root, f"{self.layout_name} labels: {exc}") from None
        return LabelCodec.from_mapping(type(self).read_raw, raw.values, raw.valid_values, raw.description)

    def subfolder(self, relative: str) -> Path:
        """``root/relative``, or a DataError saying which folder the layout expects."""
        folder = self.root / relative
        if not folder.is_dir():
            raise DataError(
                self.root,
                f"{self.layout_name} root has no {relative}/ folder "
                f"(expected {self.expected_layout})",
            )
        return folder

    # -- construction -------------------------------------------------------------------------

    def _select_listed(
        self, candidates: list[Sample], list_file: Path
    ) -> tuple[list[Sample], list[Problem]]:
        """Keep the candidates named in ``list_file``; listed names not found are problems."""
        lines = read_text_file(list_file, "list file", DataError).splitlines()
        wanted = {
            self._list_name(line) for line in lines if line.strip() and not line.startswith("#")
        }
        by_name = {sample.name: sample for sample in candidates}
        problems = [
            Problem(name, "missing", str(list_file), f"listed sample {shorten(name)} not found")
            for name in sorted(wanted - by_name.keys())
        ]
        return [by_name[name] for name in sorted(wanted & by_name.keys())], problems

    def _list_name(self, line: str) -> str:
        """A list-file line as a sample name: extension and layout suffix dropped."""
        path = PurePosixPath(line.strip().removeprefix("./"))
        if path.suffix.lower() in IMAGE_SUFFIXES:
            path = path.with_suffix("")
        return str(path).removesuffix(self.name_suffix)

    def _screen(self, sample: Sample) -> tuple[Sample | None, Problem | None]:
        """Check one candidate from file headers; return the usable sample and/or its problem."""
        label = sample.label_path
        if (reason := not_a_file(sample.image_path)) is not None:
            return None, Problem(sample.name, "not_a_file", str(sample.image_path), reason)
        try:
            size = image_size(sample.image_path)
            if label is None or not label.is_file():
                if not self.require_labels:
                    return Sample(sample.name, sample.image_path, None), None
                path = str(label or sample.image_path)
                reason = "file not found" if label is None else not_a_file(label, missing="file not found")
                message = f"label {reason} (image {sample.image_path})"
                return None, Problem(sample.name, "missing", path, message)
            label_size = image_size(label)
        except DataError as exc:
            return None, Problem(sample.name, "unreadable", exc.path, exc.problem)
        if size != label_size:
            message = size_mismatch(sample.image_path, size, label, label_size)
            return None, Problem(sample.name, "size_mismatch", str(sample.image_path), message)
        return sample, None

    def _apply_policy(self, on_error: OnError) -> None:
        """Raise or warn about construction problems; an empty dataset is always an error."""
        if self.problems and on_error == "fail":
            first = self.problems[0]
            more = len(self.problems) - 1
            suffix = f" (and {more} more problem(s); on_error='skip' drops them)" if more else ""
            raise DataError(first.path, first.message + suffix)
        if self.problems:
            first, total = self.problems[0], len(self.problems) + len(self.samples)
            logger.warning(
                "%s root %s: skipped %d of %d samples (first: %s: %s)", self.layout_name,
                self.root, len(self.problems), total, first.name, first.message,
            )
        if not self.samples:
            reason = f"first problem: {self.problems[0].error()}" if self.problems else (
                f"expected {self.expected_layout}")
            raise DataError(self.root, f"no usable {self.layout_name} samples ({reason})")

    # -- access -------------------------------------------------------------------------------

    @property
    def skipped(self) -> list[tuple[str, str]]:
        """(name, reason) of every sample dropped at construction."""
        return [(problem.name, problem.message) for problem in self.problems]

    def __len__(self) -> int:
        return len(self.samples)

    def load(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The HxWx3 uint8 image and HxW uint8 train-id label of one sample, at file resolution."""
        sample = self.samples[index]
        image = read_image(sample.image_path)
        if sample.label_path is None:
            return image, np.full(image.shape[:2], IGNORE_INDEX, dtype=np.uint8)
        label = self.codec.decode(sample.label_path)
        if label.shape != image.shape[:2]:
            raise DataError(sample.label_path, size_mismatch(
                sample.image_path, image.shape[1::-1], sample.label_path, label.shape[::-1]
            ))
        return image, label

    def __getitem__(self, index: int) -> dict[str, Any]:
        image_np, label_np = self.load(index)
        image = torch.from_numpy(image_np).permute(2, 0, 1).contiguous()
        label = torch.from_numpy(label_np)
        if self.resize is not None:
            image, label = resize_pair(image, label, self.resize)
        label = label.long()
        if self.transform is not None:
            image, label = self.transform(image, label)
        return {"image": image, "label": label, "name": self.samples[index].name, "index": index}

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(root={str(self.root)!r}, samples={len(self.samples)}, "
            f"skipped={len(self.problems)})"
        )
