"""Tiny datasets in the true on-disk formats, for tests (``from fixtures import write_gta5``).

Each ``write_*`` function returns a :class:`FixtureSet` with the paths written and the raw label
arrays (the values stored in the files, before any mapping), so tests can compute expected train
ids independently. Sizes are (height, width).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml
from PIL import Image

from drsl.data.classes import ClassSet, load_class_set
from drsl.data.labels import IGNORE_INDEX

CITYSCAPES19 = load_class_set("cityscapes19")
PALETTE = CITYSCAPES19.palette
#: Largest valid raw label values of the real formats (Cityscapes label ids, SYNTHIA class ids).
CITYSCAPES_MAX_ID = 33
SYNTHIA_MAX_ID = 22


def mapped_values(classes: ClassSet, mapping: str) -> dict[int, int]:
    """{raw value: class id} of the raw values a mapping of ``classes`` maps to a class."""
    return {raw: c for raw, c in classes.mapping(mapping).values.items() if c != IGNORE_INDEX}


@dataclass
class FixtureSet:
    """What a ``write_*`` helper wrote (lists in sample-name order)."""

    root: Path
    names: list[str] = field(default_factory=list)
    images: list[Path] = field(default_factory=list)
    labels: list[Path | None] = field(default_factory=list)
    #: Raw label values as stored (the class-id channel for SYNTHIA); None where no label.
    raw_labels: list[np.ndarray | None] = field(default_factory=list)
    #: The class map file (folder layout only).
    class_map: Path | None = None

    def add(self, name: str, image: Path, label: Path | None, raw: np.ndarray | None) -> None:
        """Record one written sample."""
        self.names.append(name)
        self.images.append(image)
        self.labels.append(label)
        self.raw_labels.append(raw)


def random_image(size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A random HxWx3 uint8 image."""
    return rng.integers(0, 256, (*size, 3), dtype=np.uint8)


def save_image(path: Path, array: np.ndarray) -> Path:
    """Save an image array with PIL (format from the extension), creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)
    return path


def save_palette_label(path: Path, raw: np.ndarray) -> Path:
    """Save uint8 ids as a palette ("P") PNG, like the real GTA5 label files."""
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(raw.astype(np.uint8))
    image.putpalette(np.resize(PALETTE, (256, 3)).ravel().tolist())
    assert image.mode == "P"
    image.save(path)
    return path


def truncate(path: Path, keep: float = 0.5) -> Path:
    """Cut a file to a fraction of its bytes (a truncated download)."""
    data = path.read_bytes()
    path.write_bytes(data[: max(1, int(len(data) * keep))])
    return path


def checkerboard(size: tuple[int, int], cell: int) -> tuple[np.ndarray, np.ndarray]:
    """A black/white checkerboard image (HxWx3 uint8) and its parity mask (HxW int64, 0/1)."""
    rows = np.arange(size[0])[:, None] // cell
    cols = np.arange(size[1])[None, :] // cell
    mask = ((rows + cols) % 2).astype(np.int64)
    image = np.repeat((mask * 255).astype(np.uint8)[:, :, None], 3, axis=2)
    return image, mask


def write_gta5(
    root: str | Path,
    n: int = 3,
    size: tuple[int, int] = (12, 16),
    *,
    mismatch: Iterable[int] = (),
    missing_labels: Iterable[int] = (),
    seed: int = 0,
) -> FixtureSet:
    """GTA5: ``images/%05d.png`` RGB and ``labels/%05d.png`` palette PNGs of Cityscapes ids 0..33.

    Labels of samples in ``mismatch`` are two rows taller than their image; labels of samples in
    ``missing_labels`` are not written.
    """
    root, rng = Path(root), np.random.default_rng(seed)
    mismatch, missing_labels = set(mismatch), set(missing_labels)
    out = FixtureSet(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        name = f"{i + 1:05d}"
        image = save_image(root / "images" / f"{name}.png", random_image(size, rng))
        label_size = (size[0] + 2, size[1]) if i in mismatch else size
        raw = rng.integers(0, CITYSCAPES_MAX_ID + 1, label_size, dtype=np.uint8)
        if i in missing_labels:
            out.add(name, image, None, None)
        else:
            out.add(name, image, save_palette_label(root / "labels" / f"{name}.png", raw), raw)
    return out


def write_synthia(
    root: str | Path,
    n: int = 3,
    size: tuple[int, int] = (12, 16),
    *,
    channels: int = 3,
    seed: int = 0,
) -> FixtureSet:
    """SYNTHIA-RAND-CITYSCAPES: ``RGB/%07d.png`` and 16-bit ``GT/LABELS/%07d.png`` via OpenCV.

    With 3 channels the class id goes in R, which is the channel OpenCV returns last (index 2 of
    its BGR array); G holds instance ids and B large values that are not class ids, so reading
    the wrong channel fails loudly.
    """
    root, rng = Path(root), np.random.default_rng(seed)
    out = FixtureSet(root)
    (root / "GT" / "LABELS").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        name = f"{i:07d}"
        image = save_image(root / "RGB" / f"{name}.png", random_image(size, rng))
        ids = rng.integers(0, SYNTHIA_MAX_ID + 1, size, dtype=np.uint16)
        if channels == 3:
            stored = np.stack(
                [rng.integers(1000, 60000, size, dtype=np.uint16),
                 rng.integers(0, 1000, size, dtype=np.uint16), ids],
                axis=2,
            )
        else:
            stored = ids
        label = root / "GT" / "LABELS" / f"{name}.png"
        assert cv2.imwrite(str(label), stored)
        out.add(name, image, label, ids)
    return out


def write_cityscapes(
    root: str | Path,
    split: str = "train",
    *,
    cities: Iterable[str] = ("aachen", "bochum"),
    per_city: int = 2,
    size: tuple[int, int] = (12, 16),
    labels: bool = True,
    seed: int = 0,
) -> FixtureSet:
    """Cityscapes: ``leftImg8bit/SPLIT/CITY/CITY_000000_%06d_leftImg8bit.png`` and gtFine files.

    With ``labels``, writes ``*_gtFine_labelIds.png`` (L-mode ids 0..33) plus the
    ``*_gtFine_color.png`` and ``*_gtFine_instanceIds.png`` siblings of the real download.
    """
    root, rng = Path(root), np.random.default_rng(seed)
    out = FixtureSet(root)
    for city in sorted(cities):
        for i in range(per_city):
            stem = f"{city}_000000_{i:06d}"
            image_path = root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"
            image = save_image(image_path, random_image(size, rng))
            if not labels:
                out.add(f"{city}/{stem}", image, None, None)
                continue
            gt = root / "gtFine" / split / city
            raw = rng.integers(0, CITYSCAPES_MAX_ID + 1, size, dtype=np.uint8)
            label = save_image(gt / f"{stem}_gtFine_labelIds.png", raw)
            save_image(gt / f"{stem}_gtFine_color.png", random_image(size, rng))
            save_image(gt / f"{stem}_gtFine_instanceIds.png", raw.astype(np.uint16) * 1000)
            out.add(f"{city}/{stem}", image, label, raw)
    return out


def write_uda_root(root: str | Path, *, source: int, target_train: int, size: tuple[int, int]) -> Path:
    """A GTA5 source (``source`` images) under ``root/src`` and a Cityscapes target under
    ``root/tgt``: ``target_train`` images per city in train (0: no train split), one per city in val."""
    root = Path(root)
    write_gta5(root / "src", n=source, size=size)
    if target_train:
        write_cityscapes(root / "tgt", "train", per_city=target_train, size=size)
    write_cityscapes(root / "tgt", "val", per_city=1, size=size)
    return root


def file_hashes(folder: Path) -> dict[str, str]:
    """Every file under ``folder`` (relative path) and the SHA-256 of its bytes."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*")) if p.is_file()
    }


def train_args(root: Path, work: Path, iterations: int = 2) -> list[str]:
    """Overrides of a few-second source-only run on :func:`write_uda_root`'s data (light network,
    batch 2, 32x32 crops, a checkpoint and a log line every iteration) writing to ``work``."""
    return [
        f"data.source.root={root}/src", f"data.val.root={root}/tgt", "data.target=null",
        "data.batch_size=2", "data.num_workers=0", f"train.iterations={iterations}", "model.light_width=1",
        "data.source_augment.crop_size=[32,32]", "train.checkpoint_every=1", "train.log_every=1", f"work_dir={work}",
    ]


def write_folder(
    root: str | Path,
    n: int = 3,
    size: tuple[int, int] = (12, 16),
    *,
    class_map: dict[int, int] | None = None,
    map_format: str = "yaml",
    seed: int = 0,
) -> FixtureSet:
    """Folder layout: PNG and JPEG images under ``images/`` (every other one in ``images/sub/``),
    ``masks/NAME.png`` with raw values drawn from the class map keys, and ``class_map.{yaml,json}``.
    """
    class_map = {0: 255, 1: 0, 2: 13} if class_map is None else class_map
    root, rng = Path(root), np.random.default_rng(seed)
    out = FixtureSet(root)
    keys = np.array(sorted(class_map), dtype=np.uint8)
    for i in range(n):
        name = f"sub/img{i}" if i % 2 else f"img{i}"
        extension = ".jpg" if i % 3 == 2 else ".png"
        image = save_image(root / "images" / f"{name}{extension}", random_image(size, rng))
        raw = rng.choice(keys, size)
        out.add(name, image, save_image(root / "masks" / f"{name}.png", raw), raw)
    order = np.argsort(out.names)
    for attr in ("names", "images", "labels", "raw_labels"):
        setattr(out, attr, [getattr(out, attr)[j] for j in order])
    out.class_map = root / f"class_map.{map_format}"
    text = json.dumps({str(k): v for k, v in class_map.items()}) if map_format == "json" else (
        yaml.safe_dump(class_map))
    out.class_map.write_text(text)
    return out


def run_weights(work_dir: Path) -> dict[str, torch.Tensor]:
    """The tensors of a run's latest checkpoint (model state only)."""
    state = torch.load(Path(work_dir) / "checkpoints" / "latest.pt", weights_only=True)
    return {k: v for k, v in state["model"].items() if isinstance(v, torch.Tensor)}
