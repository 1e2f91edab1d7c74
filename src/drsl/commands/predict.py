"""``drsl predict``: segment images or folders with a checkpoint and write labels, colours,
overlays, confidences and (DRSL checkpoints) mode maps, mirroring the inputs' folder structure;
video files are segmented frame by frame (:mod:`drsl.commands.predict_video`)."""

from __future__ import annotations

import argparse
import io
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from drsl.data.errors import DataError
from drsl.commands import options
from drsl.commands.help import add_device
from drsl.data.io import image_size, read_image
from drsl.engine.logging import progress
from drsl.fileio import atomic_write_bytes, atomic_write_png, check_writable
from drsl.viz.overlay import colorize_modes, confidence_to_uint8, label_overlay
from drsl.viz.grid import Tile, labelled_grid

if TYPE_CHECKING:
    from drsl.api import SegmentationModel
    from drsl.data.classes import ClassSet

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
#: Tile height range of --panels images: small inputs are enlarged, large ones reduced.
PANEL_HEIGHT = (192, 360)


@dataclass(frozen=True)
class InputImage:
    """An image to segment and its output name (relative POSIX path, no suffix)."""

    path: Path
    name: str


def check_name(name: str) -> str:
    """``name`` if it is a relative path that stays inside the output folder, else ValueError."""
    path = PurePosixPath(name)
    if not name or path.is_absolute() or ".." in path.parts or "\\" in name:
        raise ValueError(f"output name {name!r} would escape the output folder")
    return name


def output_path(out_dir: Path, kind: str, name: str, suffix: str) -> Path:
    """``out_dir/kind/name+suffix``, checked to stay inside ``out_dir/kind`` (symlinks resolved)."""
    folder = (out_dir / kind).resolve()
    path = (folder / f"{check_name(name)}{suffix}").resolve()
    if not path.is_relative_to(folder):
        raise ValueError(f"output name {name!r} would escape {folder}")
    return path


def discover(inputs: Sequence[str], out_dir: Path) -> tuple[list[InputImage], list[str]]:
    """Images of files and folders (recursive, png/jpg/jpeg; ``out_dir`` excluded) and problems.

    A file is named by its stem, a folder's images by their path relative to the folder.
    """
    found: list[InputImage] = []
    problems: list[str] = []
    owner: dict[str, Path] = {}
    skip = out_dir.resolve()
    for text in inputs:
        root = Path(text)
        if root.is_dir():
            files = sorted(
                p for p in root.rglob("*")
                if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file() and not p.resolve().is_relative_to(skip)
            )
            if not files:
                problems.append(f"{root}: folder holds no .png/.jpg/.jpeg images")
            candidates = [(p, p.relative_to(root).with_suffix("").as_posix()) for p in files]
        elif root.is_file():
            candidates = [(root, root.stem)]
        else:
            problems.append(f"{root}: no such file or folder")
            continue
        for path, name in candidates:
            if name in owner:
                problems.append(f"{path}: output name {name!r} already taken by {owner[name]}")
                continue
            try:
                found.append(InputImage(path, check_name(name)))
            except ValueError as exc:
                problems.append(f"{path}: {exc}")
                continue
            owner[name] = path
    return found, problems


def size_batches(images: list[InputImage], batch_size: int) -> tuple[list[list[InputImage]], list[str]]:
    """Batches of same-size images (header sizes; input order kept within a size) and problems."""
    groups: dict[tuple[int, int], list[InputImage]] = {}
    problems: list[str] = []
    for image in images:
        try:
            groups.setdefault(image_size(image.path), []).append(image)
        except DataError as exc:
            problems.append(str(exc))
    batches = [group[i:i + batch_size] for group in groups.values() for i in range(0, len(group), batch_size)]
    return batches, problems


def read_batch(batch: list[InputImage]) -> tuple[list[tuple[InputImage, np.ndarray]], list[str]]:
    """Decoded images of a batch (same size) and problems for those that cannot be read."""
    loaded, problems = [], []
    for item in batch:
        try:
            array = read_image(item.path)
        except DataError as exc:
            problems.append(str(exc))
            continue
        if loaded and array.shape != loaded[0][1].shape:
            problems.append(f"{item.path}: decoded size {array.shape[:2]} differs from its header")
            continue
        loaded.append((item, array))
    return loaded, problems


@dataclass(frozen=True)
class Prediction:
    """The segmentation of one input image."""

    item: InputImage
    image: np.ndarray
    labels: np.ndarray
    confidence: np.ndarray
    modes: np.ndarray | None


def write_jpeg(path: Path, array: np.ndarray) -> None:
    """Atomically write an RGB array as a quality-90 JPEG."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="JPEG", quality=90)
    atomic_write_bytes(path, buffer.getvalue())


class PredictionWriter:
    """Writes the outputs of one image under ``out_dir`` (see the command's help)."""

    def __init__(self, out_dir: Path, classes: ClassSet, num_modes: int | None, panels: bool, alpha: float) -> None:
        self.out_dir, self.classes, self.num_modes, self.panels, self.alpha = out_dir, classes, num_modes, panels, alpha

    def path(self, kind: str, name: str, suffix: str = ".png") -> Path:
        """Where output ``kind`` of image ``name`` goes."""
        return output_path(self.out_dir, kind, name, suffix)

    def write(self, prediction: Prediction) -> None:
        """Write every output of one image."""
        name, image, labels, modes = prediction.item.name, prediction.image, prediction.labels, prediction.modes
        color = self.classes.colorize(labels)
        overlay = label_overlay(image, labels, self.classes, self.alpha)
        atomic_write_png(self.path("labels", name), labels)
        atomic_write_png(self.path("color", name), color)
        write_jpeg(self.path("overlay", name, ".jpg"), overlay)
        atomic_write_png(self.path("confidence", name), confidence_to_uint8(prediction.confidence))
        tiles = [Tile("image", image, True), Tile("prediction", color), Tile("overlay", overlay, True)]
        if modes is not None:
            mode_colors = colorize_modes(modes, self.num_modes)
            atomic_write_png(self.path("modes", name), mode_colors)
            atomic_write_png(self.path("modes_raw", name), modes)
            tiles.append(Tile("modes", mode_colors))
        if self.panels:
            height = min(max(image.shape[0], PANEL_HEIGHT[0]), PANEL_HEIGHT[1])
            atomic_write_png(self.path("panel", name), labelled_grid([tiles], tile_height=height))


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``drsl predict``."""
    parser = subparsers.add_parser(
        "predict", help="segment images or folders and write labels, colours, overlays, confidence",
        description="Writes, per image NAME (folder inputs keep their sub-folders): labels/NAME.png "
        "(uint8 class ids), color/NAME.png (the class set's colours), overlay/NAME.jpg, confidence/NAME.png "
        "(max probability x 255) and, for DRSL checkpoints, modes/NAME.png (one colour per mode) and "
        "modes_raw/NAME.png (uint8 mode ids, 255 = unlabelled). A video file NAME.mp4 (or .avi, .mov, "
        ".mkv, .webm, .m4v) gives overlay/NAME.mp4 and, with --frame-labels, labels/NAME/000000.png "
        "per frame. Unreadable inputs are skipped and counted; the exit status is 1 if any failed.",
    )
    parser.add_argument("checkpoint", help="a drsl checkpoint (training checkpoint or export)")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="images, folders of images (searched recursively) or video files")
    parser.add_argument("--out", required=True, help="output folder")
    parser.add_argument("--config", help="config to use instead of the one stored in the checkpoint")
    add_device(parser)
    parser.add_argument("--mode", choices=["whole", "slide"],
                        help="whole-image or sliding-window inference (default: the config's eval.mode)")
    parser.add_argument("--crop-size", type=options.count, nargs=2, metavar=("H", "W"),
                        help="sliding-window size (default: the config's eval.crop_size)")
    parser.add_argument("--stride", type=options.count, nargs=2, metavar=("H", "W"),
                        help="sliding-window stride (default: the config's eval.stride)")
    parser.add_argument("--flip", action="store_true", help="horizontal-flip test-time augmentation")
    parser.add_argument("--scales", type=options.positive, nargs="+",
                        help="multi-scale inference, e.g. 0.75 1 1.25 (default: the config's eval.scales)")
    parser.add_argument("--batch-size", type=options.count, default=4, help="images per forward pass (same-size images)")
    parser.add_argument("--alpha", type=options.probability, default=0.5, help="opacity of the colours in overlays")
    parser.add_argument(
        "--panels", action="store_true", help="also write panel/NAME.png: image | prediction | overlay (| modes)"
    )
    parser.add_argument("--frame-labels", action="store_true", help="videos: also write labels/NAME/FRAME.png per frame")


def inference_overrides(args: argparse.Namespace) -> list[str]:
    """``eval.*`` config overrides for the inference options given on the command line (options
    the parser does not define count as not given)."""
    names = ("mode", "crop_size", "stride", "scales")
    out = [f"eval.{name}={value}" for name in names if (value := getattr(args, name, None))]
    if getattr(args, "flip", False):
        out.append("eval.flip=true")
    return out


def predict_batches(model: SegmentationModel, batches: list[list[InputImage]]) -> Iterator[Prediction | str]:
    """A :class:`Prediction` per readable image, a problem message per unreadable one."""
    import torch

    for batch in batches:
        loaded, problems = read_batch(batch)
        yield from problems
        if not loaded:
            continue
        stacked = torch.from_numpy(np.stack([array for _, array in loaded])).permute(0, 3, 1, 2)
        for (item, array), result in zip(loaded, model.predict(stacked)):
            modes = model.mode_map(array, result.labels) if model.has_modes else None
            yield Prediction(item, array, result.labels, result.confidence, modes)


def run(args: argparse.Namespace) -> int:
    """Run ``drsl predict``; 0 when every input was segmented, 1 when some failed."""
    from drsl.api import load_model

    from drsl.commands.predict_video import predict_video
    from drsl.data.video import is_video

    out_dir = Path(args.out)
    check_writable(out_dir, folder=True)
    videos = [Path(text) for text in args.inputs if is_video(text) and Path(text).is_file()]
    images, problems = discover([text for text in args.inputs if Path(text) not in videos], out_dir)
    batches, unreadable = size_batches(images, args.batch_size)
    problems += unreadable
    model = load_model(args.checkpoint, args.config, inference_overrides(args), args.device)
    num_modes = model.module.regularizer.num_modes if model.has_modes else None
    writer = PredictionWriter(out_dir, model.classes, num_modes, args.panels, args.alpha)
    done = 0
    with progress(total=sum(len(b) for b in batches), desc="predict", unit="img") as bar:
        for result in predict_batches(model, batches):
            bar.update(1)
            if isinstance(result, str):
                problems.append(result)
                continue
            try:
                writer.write(result)
            except (ValueError, OSError) as exc:
                problems.append(f"{result.item.path}: cannot write its outputs ({exc})")
                continue
            done += 1
    for video in videos:
        try:
            frames = predict_video(model, video, out_dir, args.batch_size, args.alpha, args.frame_labels)
        except (DataError, OSError) as exc:
            problems.append(str(exc))
            continue
        print(f"wrote {frames} frame(s) of {video} to {out_dir / 'overlay' / (video.stem + '.mp4')}")
    for message in problems:
        print(f"drsl predict: skipped {message}", file=sys.stderr)
    failed = f"; {len(problems)} input(s) failed" if problems else ""
    print(f"wrote predictions of {done} image(s) to {out_dir}{failed}")
    return 1 if problems else 0
