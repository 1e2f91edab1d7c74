"""check_dataset reports counts, problems and class statistics; convert_dataset round-trips."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from fixtures import CITYSCAPES19, mapped_values, save_palette_label, truncate, write_cityscapes, write_gta5

from drsl.config import DatasetConfig
from drsl.data.checks import check_dataset, convert_dataset
from drsl.data.errors import DataError
from drsl.data.folder import FolderDataset
from drsl.data.gta5 import GTA5Dataset
from drsl.data.registry import build_dataset


def train_id_histogram(raws: list[np.ndarray]) -> np.ndarray:
    """Pixels per train id 0..18 and ignore (index 19), by per-pixel dict lookup."""
    counts = np.zeros(20, dtype=np.int64)
    for raw in raws:
        for value in raw.ravel().tolist():
            counts[min(mapped_values(CITYSCAPES19, "cityscapes").get(value, 255), 19)] += 1
    return counts


def broken_gta5(root: Path):
    """Five samples: 00002 size mismatch, 00003 unknown values, 00004 truncated image."""
    written = write_gta5(root, n=5, mismatch=[1])
    raw = written.raw_labels[2].copy()
    raw[0, 0] = 99
    save_palette_label(written.labels[2], raw)
    truncate(written.images[3])
    return written


def test_check_report(tmp_path: Path) -> None:
    written = broken_gta5(tmp_path)
    report = check_dataset(DatasetConfig(layout="gta5", root=str(tmp_path), on_error="fail"), CITYSCAPES19)
    counts = (report.num_found, report.num_samples, report.num_ok, report.num_labelled)
    assert counts == (5, 4, 2, 2)
    assert [(p.name, p.kind) for p in report.problems] == [
        ("00002", "size_mismatch"), ("00003", "unknown_values"), ("00004", "unreadable"),
    ]
    assert report.unknown_values == {99: 1} and not report.ok
    expected = train_id_histogram([written.raw_labels[0], written.raw_labels[4]])
    assert report.pixel_counts == expected[:19].tolist() and report.ignore_pixels == expected[19]
    road = [(raw == 7).any() for raw in (written.raw_labels[0], written.raw_labels[4])]
    assert report.class_image_fraction[0] == sum(road) / 2
    text = report.to_text()
    assert "problems: 3" in text and "00003" in text and "99 (1 files)" in text and "road" in text
    data = json.loads(json.dumps(report.to_dict()))
    assert data["problems"][1]["kind"] == "unknown_values" and len(data["classes"]) == 19


def test_check_wrong_root_is_reported(tmp_path: Path) -> None:
    report = check_dataset(DatasetConfig(layout="synthia", root=str(tmp_path)), CITYSCAPES19)
    assert [p.kind for p in report.problems] == ["layout"] and "RGB/" in report.problems[0].message
    assert "RGB/" in report.to_text()


def test_check_unlabelled_cityscapes(tmp_path: Path) -> None:
    write_cityscapes(tmp_path, "train", labels=False)
    cfg = DatasetConfig(layout="cityscapes", root=str(tmp_path))
    report = check_dataset(cfg, CITYSCAPES19, require_labels=False)
    assert report.ok and report.num_ok == 4 and report.num_labelled == 0
    assert check_dataset(cfg, CITYSCAPES19).problems[0].kind == "layout"


def test_convert_round_trip(tmp_path: Path) -> None:
    write_cityscapes(tmp_path / "cs", "val")
    cfg = DatasetConfig(layout="cityscapes", root=str(tmp_path / "cs"), split="val")
    out = tmp_path / "out"
    report = convert_dataset(cfg, CITYSCAPES19, out)
    assert report.ok and report.num_ok == 4
    assert yaml.safe_load((out / "class_map.yaml").read_text())[13] == 13
    source = build_dataset(cfg, CITYSCAPES19)
    converted = FolderDataset(out)
    assert [s.name for s in converted.samples] == [s.name for s in source.samples]
    stats = json.loads((out / "class_stats.json").read_text())
    for index, sample in enumerate(source.samples):
        original, copy = source[index], converted[index]
        assert torch.equal(copy["image"], original["image"])
        assert torch.equal(copy["label"], original["label"])
        pixels = stats["images"][sample.name]["pixels"]
        assert pixels.get("13", 0) == int((original["label"] == 13).sum())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cs", "out"]  # no temporary folders left
    with pytest.raises(FileExistsError, match="not empty"):
        convert_dataset(cfg, CITYSCAPES19, out)
    convert_dataset(cfg, CITYSCAPES19, out, overwrite=True)
    assert len(FolderDataset(out)) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cs", "out"]


def test_convert_error_policy(tmp_path: Path) -> None:
    broken_gta5(tmp_path / "gta")
    cfg = DatasetConfig(layout="gta5", root=str(tmp_path / "gta"), on_error="fail")
    with pytest.raises(DataError, match="00002"):
        convert_dataset(cfg, CITYSCAPES19, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gta"]
    cfg.on_error = "skip"
    report = convert_dataset(cfg, CITYSCAPES19, tmp_path / "out")
    assert len(report.problems) == 3
    converted = FolderDataset(tmp_path / "out")
    assert [s.name for s in converted.samples] == ["00001", "00005"]
    assert np.array_equal(converted[1]["label"], GTA5Dataset(tmp_path / "gta")[3]["label"])
    skipped = json.loads((tmp_path / "out" / "class_stats.json").read_text())["skipped"]
    assert [entry["name"] for entry in skipped] == ["00002", "00003", "00004"]


def test_validation_masks_are_checked_before_training(tmp_path: Path) -> None:
    """A bad value in a validation mask stops the run before it trains or touches its folder."""
    from fixtures import save_image, write_uda_root

    from drsl.config import load_config
    from drsl.configs import resolve_config_path
    from drsl.training import run_training

    write_uda_root(tmp_path / "data", source=2, target_train=0, size=(24, 32))
    masks = sorted((tmp_path / "data" / "tgt" / "gtFine" / "val").rglob("*_labelIds.png"))
    save_image(masks[-1], np.full((24, 32), 200, dtype=np.uint8))  # Cityscapes label ids end at 33
    config = load_config(resolve_config_path("synth/source_only"), [
        f"data.source.root={tmp_path}/data/src", f"data.val.root={tmp_path}/data/tgt", "data.target=null",
        "data.num_workers=0", "model.light_width=1", f"work_dir={tmp_path}/run", "train.iterations=1000",
    ])
    with pytest.raises(DataError, match=r"labelIds\.png: unknown label values \[200\] .*checked before training"):
        run_training(config)
    assert not (tmp_path / "run").exists()


def test_the_validation_mask_check_is_bounded_in_time(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from drsl.data.checks import check_validation_masks

    write_cityscapes(tmp_path, "val", per_city=3)
    dataset = build_dataset(DatasetConfig(layout="cityscapes", root=str(tmp_path), split="val"), CITYSCAPES19)
    assert check_validation_masks(dataset) == 6
    with caplog.at_level("INFO", logger="drsl"):
        assert check_validation_masks(dataset, seconds=-1) == 0
    assert "checked 0 of 6 validation masks" in caplog.text and "read at the first evaluation" in caplog.text
    assert {r.name for r in caplog.records} == {"drsl"}  # the console line reads "INFO drsl: ...", like the rest
