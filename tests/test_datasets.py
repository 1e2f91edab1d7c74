"""Dataset loaders read each layout's true on-disk format and apply the error policy."""

from __future__ import annotations

import logging
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures import (
    CITYSCAPES19,
    mapped_values,
    save_image,
    save_palette_label,
    truncate,
    write_cityscapes,
    write_folder,
    write_gta5,
    write_synthia,
)
from PIL import Image

from drsl.config import DatasetConfig
from drsl.data.cityscapes import CityscapesDataset
from drsl.data.errors import DataError, LabelValueError
from drsl.data.folder import FolderDataset
from drsl.data.gta5 import GTA5Dataset
from drsl.data.io import image_size, read_image, read_label, read_synthia_label
from drsl.data.registry import build_dataset
from drsl.data.synthia import SynthiaDataset

CITYSCAPES_IDS = mapped_values(CITYSCAPES19, "cityscapes")
SYNTHIA_IDS = mapped_values(CITYSCAPES19, "synthia")


def expected_train_ids(raw: np.ndarray, mapping: dict[int, int]) -> np.ndarray:
    """Independent per-pixel dict mapping (unlisted ids -> 255)."""
    return np.array([[mapping.get(int(v), 255) for v in row] for row in raw], dtype=np.int64)


def assert_items_match(dataset, written, mapping) -> None:
    assert [sample.name for sample in dataset.samples] == written.names
    for index, (image_path, raw) in enumerate(zip(written.images, written.raw_labels)):
        item = dataset[index]
        assert item["name"] == written.names[index] and item["index"] == index
        assert item["image"].dtype == torch.uint8 and item["label"].dtype == torch.int64
        expected_image = np.asarray(Image.open(image_path).convert("RGB"))
        np.testing.assert_array_equal(item["image"].permute(1, 2, 0).numpy(), expected_image)
        np.testing.assert_array_equal(item["label"].numpy(), expected_train_ids(raw, mapping))


def test_known_id_mappings() -> None:
    # Spot checks written out by hand: road, car, bicycle, unlabeled.
    raw = np.array([[7, 26, 33, 0]], dtype=np.uint8)
    assert expected_train_ids(raw, CITYSCAPES_IDS).tolist() == [[0, 13, 18, 255]]
    synthia = np.array([[3, 8, 1, 0]], dtype=np.uint16)
    assert expected_train_ids(synthia, SYNTHIA_IDS).tolist() == [[0, 13, 10, 255]]


def test_gta5_read_back(tmp_path: Path) -> None:
    written = write_gta5(tmp_path, n=3)
    assert Image.open(written.labels[0]).mode == "P"
    dataset = GTA5Dataset(tmp_path)
    assert len(dataset) == 3 and dataset.skipped == []
    assert_items_match(dataset, written, CITYSCAPES_IDS)


def test_synthia_three_channel_16bit(tmp_path: Path) -> None:
    written = write_synthia(tmp_path, n=2)
    stored = read_synthia_label(written.labels[0])
    assert stored.dtype == np.uint16
    np.testing.assert_array_equal(stored, written.raw_labels[0])
    assert_items_match(SynthiaDataset(tmp_path), written, SYNTHIA_IDS)


def test_synthia_single_channel(tmp_path: Path) -> None:
    written = write_synthia(tmp_path, n=2, channels=1)
    assert_items_match(SynthiaDataset(tmp_path), written, SYNTHIA_IDS)


def test_cityscapes_with_labels(tmp_path: Path) -> None:
    written = write_cityscapes(tmp_path, "val", per_city=2)
    dataset = CityscapesDataset(tmp_path, split="val")
    assert dataset.samples[0].name == "aachen/aachen_000000_000000"
    assert_items_match(dataset, written, CITYSCAPES_IDS)


def test_cityscapes_unlabelled_target(tmp_path: Path) -> None:
    write_cityscapes(tmp_path, "train", labels=False)
    with pytest.raises(DataError, match="gtFine/train/"):
        CityscapesDataset(tmp_path, split="train")
    dataset = CityscapesDataset(tmp_path, split="train", require_labels=False)
    assert len(dataset) == 4
    assert bool((dataset[0]["label"] == 255).all()) and dataset[0]["label"].shape == (12, 16)


def test_cityscapes_list_file(tmp_path: Path) -> None:
    write_cityscapes(tmp_path, "train")
    listing = tmp_path / "train.txt"
    listing.write_text("aachen/aachen_000000_000001_leftImg8bit.png\nbochum/bochum_000000_000000\n"
                       "bochum/bochum_000000_000099\n")
    dataset = CityscapesDataset(tmp_path, list_file=listing)
    names = [s.name for s in dataset.samples]
    assert names == ["aachen/aachen_000000_000001", "bochum/bochum_000000_000000"]
    assert dataset.skipped[0][0] == "bochum/bochum_000000_000099"
    with pytest.raises(DataError, match="bochum_000000_000099"):
        CityscapesDataset(tmp_path, list_file=listing, on_error="fail")


@pytest.mark.parametrize("map_format", ["yaml", "json"])
def test_folder_read_back(tmp_path: Path, map_format: str) -> None:
    class_map = {0: 255, 1: 0, 2: 13, 7: 5}
    written = write_folder(tmp_path, n=4, class_map=class_map, map_format=map_format)
    dataset = FolderDataset(tmp_path, class_map=written.class_map)
    assert [s.name for s in dataset.samples] == ["img0", "img2", "sub/img1", "sub/img3"]
    assert dataset.samples[1].image_path.suffix == ".jpg"
    assert [s.name for s in dataset.samples] == written.names
    for index, raw in enumerate(written.raw_labels):
        expected = expected_train_ids(raw, class_map)
        np.testing.assert_array_equal(dataset[index]["label"].numpy(), expected)


def test_folder_default_class_map_ids_and_unknown_values(tmp_path: Path) -> None:
    written = write_folder(tmp_path, n=2)
    assert len(FolderDataset(tmp_path)) == 2  # finds ROOT/class_map.yaml
    save_image(written.labels[0], np.full((12, 16), 3, dtype=np.uint8))  # 3 is not in the map
    with pytest.raises(LabelValueError, match=r"img0\.png.*\[3\]"):
        FolderDataset(tmp_path)[0]
    written.class_map.unlink()  # no mapping and no class map: the masks hold class ids
    dataset = FolderDataset(tmp_path)
    np.testing.assert_array_equal(dataset[0]["label"].numpy(), np.full((12, 16), 3))
    np.testing.assert_array_equal(dataset[1]["label"].numpy(), written.raw_labels[1])
    save_image(written.labels[0], np.full((12, 16), 19, dtype=np.uint8))  # 19 is no cityscapes19 id
    with pytest.raises(LabelValueError, match=r"img0\.png.*\[19\].*class ids"):
        FolderDataset(tmp_path)[0]


def test_folder_bad_class_map(tmp_path: Path) -> None:
    write_folder(tmp_path, n=1, class_map={0: 42})
    with pytest.raises(DataError, match=r"class_map\.yaml.*42"):
        FolderDataset(tmp_path)


def test_gta5_size_mismatch_skip_and_fail(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    write_gta5(tmp_path, n=3, mismatch=[1])
    with caplog.at_level(logging.WARNING):
        dataset = GTA5Dataset(tmp_path, on_error="skip")
    assert [s.name for s in dataset.samples] == ["00001", "00003"]
    assert dataset.skipped[0][0] == "00002" and "16x14" in dataset.skipped[0][1]
    assert "skipped 1 of 3" in caplog.text
    with pytest.raises(DataError) as info:
        GTA5Dataset(tmp_path, on_error="fail")
    assert "images/00002.png" in str(info.value) and "labels/00002.png" in str(info.value)


def test_gta5_missing_label(tmp_path: Path) -> None:
    write_gta5(tmp_path, n=2, missing_labels=[0])
    dataset = GTA5Dataset(tmp_path)
    assert len(dataset) == 1 and dataset.skipped[0][0] == "00001"
    with pytest.raises(DataError, match=r"labels/00001\.png.*not found"):
        GTA5Dataset(tmp_path, on_error="fail")


def test_wrong_root_and_empty(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        GTA5Dataset(tmp_path / "nope")
    (tmp_path / "labels").mkdir()
    with pytest.raises(DataError, match=r"no images/ folder \(expected ROOT/images/\*\.png"):
        GTA5Dataset(tmp_path)
    (tmp_path / "images").mkdir()
    with pytest.raises(DataError, match=f"{tmp_path}: no usable GTA5 samples"):
        GTA5Dataset(tmp_path)
    with pytest.raises(DataError, match="RGB/"):
        SynthiaDataset(tmp_path)


def test_truncated_and_non_image_files(tmp_path: Path) -> None:
    written = write_gta5(tmp_path, n=3)
    truncate(written.images[0])
    written.images[1].write_text("not a png")
    for path in written.images[:2]:
        with pytest.raises(DataError, match=str(path)):
            read_image(path)
    dataset = GTA5Dataset(tmp_path)  # the header of the truncated file is still readable
    assert dataset.skipped == [("00002", "not an image file (or an unsupported format)")]
    with pytest.raises(DataError, match=r"00001\.png.*truncated"):
        dataset[0]
    with pytest.raises(DataError, match=r"images/00002\.png"):
        GTA5Dataset(tmp_path, on_error="fail")


def test_io_errors(tmp_path: Path) -> None:
    junk = tmp_path / "junk.png"
    junk.write_bytes(b"\x89PNG nonsense")
    for reader in (read_image, read_label, read_synthia_label, image_size):
        with pytest.raises(DataError, match="junk.png"):
            reader(junk)
        with pytest.raises(DataError, match="missing.png: file not found"):
            reader(tmp_path / "missing.png")
    rgb = save_image(tmp_path / "rgb.png", np.zeros((4, 5, 3), dtype=np.uint8))
    with pytest.raises(DataError, match="single-channel"):
        read_label(rgb)
    assert image_size(rgb) == (5, 4)


def test_label_changed_after_construction(tmp_path: Path) -> None:
    written = write_gta5(tmp_path, n=1)
    dataset = GTA5Dataset(tmp_path)
    save_palette_label(written.labels[0], np.zeros((5, 5), dtype=np.uint8))
    with pytest.raises(DataError, match=r"labels/00001\.png.*16x12.*5x5"):
        dataset[0]


def test_out_of_range_label_values(tmp_path: Path) -> None:
    written = write_gta5(tmp_path, n=1)
    raw = written.raw_labels[0].copy()
    raw[0, :3] = [40, 200, 40]
    save_palette_label(written.labels[0], raw)
    dataset = GTA5Dataset(tmp_path)
    with pytest.raises(LabelValueError) as info:
        dataset[0]
    assert info.value.values == [40, 200] and "labels/00001.png" in str(info.value)
    assert "0..33" in str(info.value)


def test_errors_pickle() -> None:
    for error in (DataError("/a.png", "broken"), LabelValueError("/b.png", [40], "ids 0..33")):
        copy = pickle.loads(pickle.dumps(error))
        assert type(copy) is type(error) and str(copy) == str(error)


def test_build_dataset_resize_and_transform(tmp_path: Path) -> None:
    write_gta5(tmp_path / "gta", n=2)
    cfg = DatasetConfig(layout="gta5", root=str(tmp_path / "gta"), resize=[6, 8])
    dataset = build_dataset(cfg, CITYSCAPES19)
    assert isinstance(dataset, GTA5Dataset)
    item = dataset[0]
    assert item["image"].shape == (3, 6, 8) and item["label"].shape == (6, 8)
    assert item["label"].dtype == torch.int64

    def flip(image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return image.flip(-1), label.flip(-1)

    flipped = build_dataset(cfg, CITYSCAPES19, transform=flip)[0]
    assert torch.equal(flipped["label"], item["label"].flip(-1))
    write_folder(tmp_path / "folder", n=2)
    assert len(build_dataset(DatasetConfig(layout="folder", root=str(tmp_path / "folder")), CITYSCAPES19)) == 2
    write_cityscapes(tmp_path / "cs", "val")
    cityscapes = DatasetConfig(layout="cityscapes", root=str(tmp_path / "cs"), split="val")
    assert len(build_dataset(cityscapes, CITYSCAPES19)) == 4
    with pytest.raises(DataError, match="no root"):
        build_dataset(DatasetConfig(layout="synthia"), CITYSCAPES19)


def test_dataloader_batches(tmp_path: Path) -> None:
    write_gta5(tmp_path, n=4)
    loader = torch.utils.data.DataLoader(GTA5Dataset(tmp_path), batch_size=2)
    batch = next(iter(loader))
    assert batch["image"].shape == (2, 3, 12, 16) and batch["name"] == ["00001", "00002"]
