"""Bad input reaches the user as one clear line naming the file or key, never a deep traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from drsl.cli import main
from drsl.config import load_config
from drsl.configs import resolve_config_path
from drsl.training import run_training
from fixtures import truncate, write_cityscapes, write_gta5


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("bad")
    write_gta5(root / "src", n=4, size=(40, 40))
    write_cityscapes(root / "tgt", "val", per_city=1, size=(40, 40))
    return root


def base(root: Path, work: Path) -> list[str]:
    return [
        f"data.source.root={root}/src", f"data.val.root={root}/tgt", "data.target=null",
        "data.batch_size=2", "data.num_workers=0", "train.iterations=2", "model.light_width=1",
        "data.source_augment.crop_size=[32,32]", f"work_dir={work}",
    ]


def test_unknown_config_key(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(["train", "synth/source_only", *base(data, tmp_path), "train.iteratons=5"], capsys)
    assert code == 2 and "unknown config key 'train.iteratons'" in err


def test_wrong_type_in_yaml_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("train:\n  iterations: many\n")
    code, err = run_cli(["train", str(config)], capsys)
    assert code == 2 and str(config) in err and "train.iterations" in err and "expected int" in err


def test_wrong_dataset_root(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(["train", "synth/source_only", *base(data, tmp_path), f"data.source.root={tmp_path}/nowhere"], capsys)
    assert code == 2 and "nowhere" in err


def test_wrong_layout(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(["train", "synth/source_only", *base(data, tmp_path), f"data.source.root={data}/tgt"], capsys)
    assert code == 2 and "images" in err


def test_non_finite_loss_is_reported(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run_cli(["train", "synth/source_only", *base(data, tmp_path), "optim.lr=1.0e+30", "train.iterations=20"], capsys)
    assert code == 2 and "non-finite loss" in err and "iteration" in err


def test_checkpoint_of_another_architecture(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_training(load_config(resolve_config_path("synth/source_only"), base(data, tmp_path / "a")))
    checkpoint = tmp_path / "a" / "checkpoints" / "latest.pt"
    code, err = run_cli(["evaluate", str(checkpoint), "model.light_width=2"], capsys)
    assert code == 2 and str(checkpoint) in err and "shape" in err
    code, err = run_cli(["evaluate", str(checkpoint), "model.num_classes=16"], capsys)
    assert code == 2 and "decoder" in err


def test_garbage_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    code, err = run_cli(["evaluate", str(bad)], capsys)
    assert code == 2 and str(bad) in err


def test_pickled_code_in_checkpoint_is_not_executed(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"

    class Exploit:
        def __reduce__(self) -> tuple:
            return (Path.touch, (marker,))

    torch.save({"model": Exploit()}, evil)
    code, err = run_cli(["evaluate", str(evil)], capsys)
    assert code == 2 and not marker.exists()


def test_truncated_image_names_the_file(data: Path, tmp_path: Path) -> None:
    root = tmp_path / "trunc"
    fixture = write_gta5(root, n=4, size=(40, 40))
    broken = truncate(sorted((root / "images").glob("*.png"))[1])
    work = tmp_path / "w"
    result = subprocess.run(
        [sys.executable, "-m", "drsl.cli", "train", "synth/source_only", *base(data, work), f"data.source.root={root}"],
        capture_output=True, text=True,
    )
    assert fixture and result.returncode == 2
    assert broken.name in result.stderr and "Traceback" not in result.stderr
