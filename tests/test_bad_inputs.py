"""Bad input reaches the user as one clear line naming the file or key, never a deep traceback."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from drsl.cli import main
from drsl.config import ConfigError, load_config
from drsl.configs import resolve_config_path
from drsl.data.classes import load_class_set
from drsl.data.errors import DataError
from drsl.data.folder import read_class_map
from drsl.data.gta5 import GTA5Dataset
from drsl.training import run_training
from fixtures import truncate, write_gta5, write_uda_root


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(args)
    return code, capsys.readouterr().err


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_uda_root(tmp_path_factory.mktemp("bad"), source=4, target_train=0, size=(40, 40))


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
    assert code == 2 and "model.num_classes=16 disagrees with data.classes=cityscapes19 (19 classes" in err
    code, err = run_cli(["evaluate", str(checkpoint), "data.classes=cityscapes7"], capsys)
    assert code == 2 and f"{checkpoint} predicts 19 classes (cityscapes19) but data.classes=cityscapes7 has 7" in err
    code, err = run_cli(["evaluate", str(checkpoint), "--head", "mmdl"], capsys)
    assert code == 2 and f"{checkpoint} has no MMDL head" in err


def test_class_count_disagreeing_with_the_init_checkpoint(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_training(load_config(resolve_config_path("synth/source_only"), base(data, tmp_path / "a")))
    checkpoint = tmp_path / "a" / "checkpoints" / "latest.pt"
    args = ["train", "synth/source_only", *base(data, tmp_path / "b"), f"init_checkpoint={checkpoint}", "data.classes=cityscapes7", "data.eval_subsets=[]"]
    code, err = run_cli(args, capsys)
    assert code == 2 and f"init_checkpoint {checkpoint} predicts 19 classes but the class set of this run has 7" in err
    assert not (tmp_path / "b" / "checkpoints").exists()


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


def one_line(code: int, err: str) -> str:
    """The error line of a failed command, checked to be the only line and free of tracebacks."""
    lines = [line for line in err.splitlines() if line.strip() and not line.startswith(("INFO", "WARNING"))]
    assert code == 2 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize(
    "override, named",
    [
        ("data.batch_size=0", "data.batch_size"),
        ("optim.lr=-0.1", "optim.lr"),
        ("optim.lr=.nan", "optim.lr"),
        ("data.num_workers=-1", "data.num_workers"),
        ("data.source_augment.scale_range=[2,1]", "scale_range"),
        ("data.source_augment.crop_size=[0,0]", "crop_size[0]"),
        ("adapt.drsl.num_modes=0", "num_modes"),
        ("adapt.rounds=0", "adapt.rounds"),
        ("adapt.pseudo_label.portion_max=1.5", "portion_max"),
        ("eval.scales=[]", "eval.scales"),
        ("train.iterations=[1", "not valid YAML"),
        ("name=!!python/object/apply:os.system [ls]", "not valid YAML"),
        ("model.num_classes=5", "model.num_classes=5 disagrees with data.classes=cityscapes19"),
        ("data.batch_size=3 train.grad_accum=2", "divisible"),
    ],
)
def test_values_out_of_range_stop_before_any_work(
    override: str, named: str, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    line = one_line(*run_cli(["train", "synth/source_only", *base(data, tmp_path / "w"), *override.split(" ")], capsys))
    assert named in line and not (tmp_path / "w").exists()


@pytest.mark.parametrize(
    "argv, named",
    [
        (["pseudo-label", "c.pt", "--out", "o", "--portion", "1.5"], "--portion"),
        (["pseudo-label", "c.pt", "--out", "o", "--round", "-1"], "--round"),
        (["data", "synth", "o", "--workers", "0"], "--workers"),
        (["predict", "c.pt", "i", "--out", "o", "--batch-size", "0"], "--batch-size"),
        (["predict", "c.pt", "i", "--out", "o", "--scales", "1", "-2"], "--scales"),
        (["report", "r", "--samples", "many"], "--samples"),
        (["evaluate", "c.pt", "--scales", "inf"], "--scales"),
    ],
)
def test_options_out_of_range(argv: list[str], named: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    line = one_line(exit_info.value.code, capsys.readouterr().err)
    assert named in line and "--help" in line


def test_binary_files_as_config_or_list(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    binary = tmp_path / "blob.bin"
    binary.write_bytes(bytes(range(256)) * 4)
    assert "not a UTF-8 text file" in one_line(*run_cli(["train", str(binary)], capsys))
    line = one_line(*run_cli(["train", "synth/source_only", *base(data, tmp_path / "w"), f"data.source.list_file={binary}"], capsys))
    assert str(binary) in line and "not a UTF-8 text file" in line


def test_text_files_that_cannot_be_read_say_so_alike(data: Path, tmp_path: Path) -> None:
    binary, missing = tmp_path / "blob.bin", tmp_path / "missing.txt"
    binary.write_bytes(bytes(range(256)) * 4)
    classes = load_class_set("cityscapes19")
    readers = {
        "config file": (load_config, ConfigError),
        "class file": (lambda path: load_class_set(str(path)), ConfigError),
        "class map": (lambda path: read_class_map(path, classes), DataError),
        "list file": (lambda path: GTA5Dataset(data / "src", list_file=path), DataError),
    }
    for what, (read, error) in readers.items():
        with pytest.raises(error) as raised:
            read(binary)
        assert str(raised.value) == f"{binary}: {what} is not a UTF-8 text file (a binary file?)"
        if what != "class file":  # a class file that is not there is no class file at all
            with pytest.raises(error) as raised:
                read(missing)
            assert str(raised.value) == f"{missing}: cannot read {what} (No such file or directory)"


@pytest.mark.parametrize(
    "content, reason",
    [(b"", "empty"), (bytes(range(256)) * 8, "not a PyTorch checkpoint"), (None, "truncated")],
)
def test_unreadable_checkpoints_say_why(
    content: bytes | None, reason: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "bad.pt"
    if content is None:
        torch.save({"model": {"w": torch.zeros(1000)}}, path)
        truncate(path)
    else:
        path.write_bytes(content)
    line = one_line(*run_cli(["evaluate", str(path)], capsys))
    assert str(path) in line and reason in line and "weights_only" not in line


def test_resume_from_a_checkpoint_of_another_architecture(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run_training(load_config(resolve_config_path("synth/source_only"), base(data, tmp_path / "a")))
    checkpoint = tmp_path / "a" / "checkpoints" / "latest.pt"
    argv = ["train", "synth/source_only", *base(data, tmp_path / "b"), "model.light_width=2", "--resume-from", str(checkpoint)]
    line = one_line(*run_cli(argv, capsys))
    assert str(checkpoint) in line and "shape" in line and not (tmp_path / "b").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_cuda_without_a_gpu(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    line = one_line(*run_cli(["train", "synth/source_only", *base(data, tmp_path / "w"), "--device", "cuda"], capsys))
    assert "--device cuda" in line and not (tmp_path / "w").exists()


@pytest.mark.parametrize("env, named", [({"WORLD_SIZE": "two"}, "WORLD_SIZE"), ({"WORLD_SIZE": "2", "RANK": "5"}, "RANK=5")])
def test_launcher_variables_are_checked(
    env: dict[str, str], named: str, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    assert named in one_line(*run_cli(["train", "synth/source_only", *base(data, tmp_path / "w")], capsys))


@pytest.mark.parametrize("bad", ["truncated", "label_value"])
def test_errors_in_dataloader_workers_are_one_line(bad: str, data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "src"
    fixture = write_gta5(root, n=4, size=(40, 40))
    if bad == "truncated":
        broken = truncate(fixture.images[1])
    else:
        broken = fixture.labels[1]
        Image.fromarray(np.full((40, 40), 200, dtype=np.uint8)).save(broken)
    argv = ["train", "synth/source_only", *base(data, tmp_path / "w"), f"data.source.root={root}", "data.num_workers=1"]
    line = one_line(*run_cli(argv, capsys))
    assert str(broken) in line and "DataLoader" not in line


def test_a_user_error_rebuilt_by_torch_is_unwrapped() -> None:
    from torch.utils.data import DataLoader

    from drsl.cli import USER_ERRORS
    from drsl.config import ConfigError
    from drsl.errors import user_error_message

    class Failing(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 1

        def __getitem__(self, index: int) -> None:
            raise ConfigError("data.x: a problem")

    with pytest.raises(ConfigError) as caught:  # rebuilt from one string: the worker's traceback
        next(iter(DataLoader(Failing(), num_workers=1)))
    assert "Traceback" in str(caught.value)
    assert user_error_message(caught.value, USER_ERRORS) == "data.x: a problem"
    assert user_error_message(RuntimeError("a bug"), USER_ERRORS) is None


@pytest.mark.parametrize("argv, message", [
    (["data", "synth", "{file}/sub", "--num-source", "1"], "is a file, where a folder is needed"),
    (["evaluate", "missing.pt", "--out", "{file}/x.json"], "is a file, where a folder is needed"),
    (["evaluate", "missing.pt", "--out", "{folder}"], "is a folder, not a file"),
    (["train", "synth/source_only", "work_dir={file}/w"], "is a file, where a folder is needed"),
    (["predict", "missing.pt", "x.png", "--out", "{file}"], "is a file, where a folder is needed"),
])
def test_occupied_output_paths_stop_before_any_work(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    occupied = tmp_path / "a_file"
    occupied.write_text("x")
    argv = [a.format(file=occupied, folder=tmp_path) for a in argv]
    line = one_line(*run_cli(argv, capsys))
    assert message in line and "missing.pt" not in line


def test_disk_full_during_a_checkpoint_save_keeps_the_previous_one(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    work = tmp_path / "w"
    run_training(load_config(resolve_config_path("synth/source_only"), base(data, work)))
    latest = work / "checkpoints" / "latest.pt"
    before = latest.read_bytes()
    real_fsync = os.fsync

    def fsync(fd: int) -> None:
        if ".latest.pt." in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    argv = ["train", "synth/source_only", *base(data, work), "train.iterations=3", "--resume", "--change-config"]
    line = one_line(*run_cli(argv, capsys))
    assert str(latest) in line and "No space left on device" in line and "previous content" in line
    assert latest.read_bytes() == before and not list(work.rglob("*.tmp"))
