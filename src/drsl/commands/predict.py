"""``drsl predict``: segment images or folders with a checkpoint and write labels, colours,
overlays, confidences and (DRSL checkpoints) mode maps, mirroring the inputs' folder structure;
video files are segmented frame by frame (:mod:`drsl.commands.predict_video`)."""

from __future__ import annotations

import argparse
import io
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from drsl.commands import options
from drsl.commands.help import add_device
from drsl.data.errors import DataError
from drsl.data.io import IMAGE_SUFFIXES, image_size, read_image
from drsl.data.video import is_video
from drsl.engine.logging import progress
from drsl.engine.outputs import check_data_output, check_output
from drsl.errors import listed
from drsl.fileio import atomic_write_bytes, atomic_write_png, not_a_file, walk_files
from drsl.viz.grid import Tile, labelled_grid
from drsl.viz.overlay import colorize_modes, confidence_to_uint8, label_overlay

if TYPE_CHECKING:
    from drsl.api import SegmentationModel
    from drsl.data.classes import ClassSet

#: The folders under --out that predictions are written to.
OUTPUT_KINDS = ("labels", "color", "overlay", "confidence", "modes", "modes_raw", "panel")
#: Tile height range of --panels images: small inputs are enlarged, large ones reduced.
PANEL_HEIGHT = (192, 360)


@dataclass(frozen=True)
class InputImage:
    """An image (or video) to segment and its output name (relative POSIX path, no suffix)."""

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


@dataclass
class Discovered:
    """What the inputs of ``drsl predict`` hold."""

    images: list[InputImage] = field(default_factory=list)
    videos: list[InputImage] = field(default_factory=list)
    #: Inputs that cannot be segmented, with the reason (the exit status is then 1).
    problems: list[str] = field(default_factory=list)
    #: Files in input folders that are neither images nor videos (by their suffix).
    ignored: list[Path] = field(default_factory=list)


def _folder_candidates(root: Path, out_dir: Path, found: Discovered) -> list[tuple[Path, str]]:
    """The images and videos under ``root`` (symbolic links followed, ``out_dir`` left out) with
    their names; other files go to ``found.ignored``."""
    skip = out_dir.resolve()
    candidates = []
    for path in walk_files(root):
        if Path(os.path.realpath(path)).is_relative_to(skip):
            continue
        if path.suffix.lower() in IMAGE_SUFFIXES or is_video(path):
            candidates.append((path, path.relative_to(root).with_suffix("").as_posix()))
        else:
            found.ignored.append(path)
    if not candidates:
        found.problems.append(f"{root}: folder holds no images or videos")
    return candidates


def discover(inputs: Sequence[str], out_dir: Path) -> Discovered:
    """Images and videos of files and folders (folders searched recursively for every image format
    PIL reads and the video suffixes, ``out_dir`` left out), problems and ignored files.

    A file is named by its stem, a folder's files by their path relative to the folder; two
    inputs with one name (whose outputs would overwrite each other) are a problem.
    """
    found = Discovered()
    owner: dict[str, Path] = {}
    for text in inputs:
        root = Path(text)
        if root.is_dir():
            candidates = _folder_candidates(root, out_dir, found)
        elif (reason := not_a_file(root)) is None:
            candidates = [(root, root.stem)]
        else:
            found.problems.append(f"{root}: {reason}")
            continue
        for path, name in candidates:
            if (reason := not_a_file(path)) is not None:
                found.problems.append(f"{path}: {reason}")
                continue
            if name in owner:
                found.problems.append(f"{path}: output name {name!r} already taken by {owner[name]}")
                continue
            try:
                item = InputImage(path, check_name(name))
            except ValueError as exc:
                found.problems.append(f"{path}: {exc}")
                continue
            (found.videos if is_video(path) else found.images).append(item)
            owner[name] = path
    return found


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
        "per frame. Folders are searched recursively (symbolic links followed) for every image format PIL "
        "reads and for videos; other files there are listed as ignored. Unreadable inputs (and broken links, "
        "two inputs with one output name) are skipped and named; the exit status is 1 if any failed.",
    )
    parser.add_argument("checkpoint", help="a drsl checkpoint (training checkpoint or export)")
    parser.add_argument("inputs", nargs="+", metavar="INPUT", help="images, folders of images and videos (searched recursively) or video files")
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

    out_dir = Path(args.out)
    inputs = [("the checkpoint", args.checkpoint), ("--config", args.config)]
    inputs += [("an input", text) for text in args.inputs]
    check_output(out_dir, inputs, folder=True, inside_inputs=True)
    for kind in OUTPUT_KINDS:
        check_output(out_dir / kind, inputs, folder=True, whole=True, inside_inputs=True)
    model = load_model(args.checkpoint, args.config, inference_overrides(args), args.device)
    check_data_output(out_dir, model.config, folder=True)
    for kind in OUTPUT_KINDS:
        check_data_output(out_dir / kind, model.config, folder=True, whole=True)
    found = discover(args.inputs, out_dir)
    problems = found.problems
    batches, unreadable = size_batches(found.images, args.batch_size)
    problems += unreadable
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
    for video in found.videos:
        try:
            frames = predict_video(model, video.path, video.name, out_dir, args.batch_size, args.alpha, args.frame_labels)
        except (DataError, OSError) as exc:
            problems.append(str(exc))
            continue
        print(f"wrote {frames} frame(s) of {video.path} to {out_dir / 'overlay' / (video.name + '.mp4')}")
    if found.ignored:
        print(f"drsl predict: ignored {len(found.ignored)} file(s) in input folders that are not images or "
              f"videos by their suffix: {listed(found.ignored, 5)}", file=sys.stderr)
    for message in problems:
        print(f"drsl predict: skipped {message}", file=sys.stderr)
    failed = f"; {len(problems)} input(s) failed" if problems else ""
    print(f"wrote predictions of {done} image(s) to {out_dir}{failed}")
    return 1 if problems else 0
