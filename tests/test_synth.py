"""The generated benchmark: layouts, label validity, determinism, worker independence, mode mixes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from drsl.data.synth import generate_benchmark, render_sample
from drsl.data.synth.catalogue import CLASS_MODES
from drsl.data.synth.photos import PHOTO_FILES, data_folder
from drsl.data.synth.shifts import SHIFTS
from fixtures import CITYSCAPES19, mapped_values

COUNTS = {"num_source": 4, "num_target_train": 3, "num_target_val": 2}
SIZES = {"source_size": (112, 64), "target_size": (128, 64)}
VALID_IDS = set(mapped_values(CITYSCAPES19, "cityscapes")) | {0, 1}
CITYSCAPES_TABLE = CITYSCAPES19.mapping("cityscapes").table()


def _generate(root: Path, seed: int, workers: int, shift: str = "hard") -> Path:
    generate_benchmark(root, seed=seed, workers=workers, shift=shift, **COUNTS, **SIZES)
    return root


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("synth")
    return {
        "a": _generate(base / "a", seed=0, workers=1),
        "again": _generate(base / "again", seed=0, workers=1),
        "workers": _generate(base / "workers", seed=0, workers=2),
        "other": _generate(base / "other", seed=1, workers=1),
        "lit": _generate(base / "lit", seed=0, workers=1, shift="lit"),
        "aligned": _generate(base / "aligned", seed=0, workers=1, shift="aligned"),
        "aligned_again": _generate(base / "aligned_again", seed=0, workers=2, shift="aligned"),
        "aligned_other": _generate(base / "aligned_other", seed=1, workers=1, shift="aligned"),
    }


def test_layouts_have_the_real_datasets_names(runs: dict[str, Path]) -> None:
    root = runs["a"]
    for i in range(4):
        assert (root / "source" / "images" / f"{i:05d}.png").is_file()
        assert (root / "source" / "labels" / f"{i:05d}.png").is_file()
    for split, n in (("train", 3), ("val", 2)):
        for i in range(n):
            stem = f"synthcity_000000_{i:06d}"
            assert (root / "target" / "leftImg8bit" / split / "synthcity" / f"{stem}_leftImg8bit.png").is_file()
            assert (root / "target" / "gtFine" / split / "synthcity" / f"{stem}_gtFine_labelIds.png").is_file()
    assert len(list(root.rglob("*.png"))) == 2 * (4 + 3 + 2)
    assert not list(root.rglob("*.tmp"))


def test_images_and_labels_are_well_formed(runs: dict[str, Path]) -> None:
    root = runs["a"]
    pairs = [(root / "source" / "images" / "00000.png", root / "source" / "labels" / "00000.png", (112, 64))]
    stem = "synthcity_000000_000000"
    pairs.append((root / "target" / "leftImg8bit" / "val" / "synthcity" / f"{stem}_leftImg8bit.png",
                  root / "target" / "gtFine" / "val" / "synthcity" / f"{stem}_gtFine_labelIds.png", (128, 64)))
    for image_path, label_path, size in pairs:
        with Image.open(image_path) as image, Image.open(label_path) as label:
            assert image.mode == "RGB" and image.size == size
            assert label.mode == "L" and label.size == size
            values = np.asarray(label)
        assert values.dtype == np.uint8
        assert set(np.unique(values).tolist()) <= VALID_IDS


def test_enough_classes_with_stuff_more_frequent_than_things(runs: dict[str, Path]) -> None:
    present: set[int] = set()
    labels = [*(runs["a"] / "source" / "labels").glob("*.png"), *(runs["a"] / "target" / "gtFine").rglob("*.png")]
    for path in labels:
        present |= set(np.unique(CITYSCAPES_TABLE[np.asarray(Image.open(path))]).tolist())
    assert len(present - {255}) >= 12
    for freq in json.loads((runs["a"] / "manifest.json").read_text())["class_frequency"].values():
        stuff = sum(freq[c] for c in ("road", "sidewalk", "building", "vegetation", "sky"))
        things = sum(freq[c] for c in ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle"))
        assert stuff > 2 * things
        assert freq["road"] > freq["person"] and freq["building"] > freq["pole"]


def test_same_seed_same_bytes_other_seed_other_bytes(runs: dict[str, Path]) -> None:
    first, again, other = _files(runs["a"]), _files(runs["again"]), _files(runs["other"])
    assert first == again
    assert first.keys() == other.keys()
    images = [k for k in first if k.endswith(".png")]
    assert all(first[k] != other[k] for k in images)


def test_workers_do_not_change_the_output(runs: dict[str, Path]) -> None:
    assert _files(runs["workers"]) == _files(runs["a"])


def test_manifest_records_differing_mode_mixes(runs: dict[str, Path]) -> None:
    manifest = json.loads((runs["a"] / "manifest.json").read_text())
    assert manifest["seed"] == 0
    assert manifest["shift"] == "hard"
    assert manifest["domains"]["source"]["mix"] == 0.0 and manifest["domains"]["target"]["mix"] == 1.0
    assert manifest["counts"] == {"source": 4, "target_train": 3, "target_val": 2}
    assert manifest["sizes"] == {"source": [112, 64], "target": [128, 64]}
    assert set(manifest["class_frequency"]) == {"source", "target_train", "target_val"}
    mixes = manifest["mode_mix"]
    assert len(mixes) >= 12
    for name, mix in mixes.items():
        assert len(mix["source"]) >= 2, name
        assert mix["source"] != mix["target"], name
        assert min(mix["source"].values()) >= 0.05, name  # every mode appears in the source
        assert sum(mix["target"].values()) == pytest.approx(1.0, abs=1e-3)


def test_modes_are_distinct_and_photos_ship_with_scikit_image() -> None:
    for modes in CLASS_MODES.values():
        assert len({m.paint.rgb for m in modes}) == len(modes)
    for name in PHOTO_FILES.values():
        assert (data_folder() / name).is_file()


def test_aligned_preset_is_deterministic_per_seed_and_recorded(runs: dict[str, Path]) -> None:
    first, again, other = _files(runs["aligned"]), _files(runs["aligned_again"]), _files(runs["aligned_other"])
    assert first == again
    images = [k for k in first if k.endswith(".png")]
    assert all(first[k] != other[k] for k in images)
    hard = _files(runs["a"])
    targets = [k for k in images if k.startswith("target")]
    assert all(first[k] != hard[k] for k in targets)  # another camera geometry: other scenes
    manifest = json.loads((runs["aligned"] / "manifest.json").read_text())
    assert manifest["shift"] == "aligned" and manifest["shift_summary"] == SHIFTS["aligned"].summary
    assert manifest["domains"]["source"]["shadows"] is True
    assert manifest["domains"]["target"]["focal"] == list(SHIFTS["aligned"].target.focal)
    assert manifest["mode_mix"] == json.loads((runs["a"] / "manifest.json").read_text())["mode_mix"]


def test_lit_preset_darkens_only_the_source_with_shadows(runs: dict[str, Path]) -> None:
    lit, hard = _files(runs["lit"]), _files(runs["a"])
    assert {k: v for k, v in lit.items() if k.startswith("target")} == {
        k: v for k, v in hard.items() if k.startswith("target")}
    assert {k: v for k, v in lit.items() if "labels" in k} == {k: v for k, v in hard.items() if "labels" in k}
    darker = 0
    for i in range(4):
        with Image.open(runs["lit"] / "source" / "images" / f"{i:05d}.png") as a, \
                Image.open(runs["a"] / "source" / "images" / f"{i:05d}.png") as b:
            shaded, plain = np.asarray(a).astype(int), np.asarray(b).astype(int)
        assert (shaded <= plain).all()  # shadows only darken
        darker += int((shaded < plain).any(axis=2).sum())
    assert darker > 0


def test_hard_preset_renders_exactly_the_original_benchmark() -> None:
    """Digest of nine samples' images, labels and mode maps recorded before shift presets existed.

    The target images go through OpenCV blurs and Pillow's JPEG codec, so an upgrade of either that
    changes their output changes this digest too."""
    digest = hashlib.sha256()
    for split, size in (("source", (112, 64)), ("target_train", (128, 64)), ("target_val", (128, 64))):
        for index in range(3):
            for array in render_sample(split, index, 5, size, shift="hard"):
                digest.update(array.tobytes())
    assert digest.hexdigest() == "4b3804422ad49bed30e55667e6d359474160cf5e9604fadd84622dadb32f964c"
