"""Progress without a terminal (a status line with the ETA at a steady interval) and the optional
Weights & Biases tracker, tested with a stand-in ``wandb`` module."""

from __future__ import annotations

import logging
import sys
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from drsl.config import ConfigError, load_config
from drsl.errors import CheckpointError
from drsl.configs import resolve_config_path
from drsl.engine import logging as run_logging
from drsl.engine.logging import RunLogger, progress
from drsl.training import run_training
from fixtures import write_uda_root


def test_without_a_terminal_progress_is_status_lines(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(run_logging, "STATUS_SECONDS", 0.0)
    for _ in progress(range(3), desc="evaluate"):
        pass
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("evaluate: 0/3 (0%)") and "ETA" in lines[0]
    assert lines[-1].startswith("evaluate: 3/3 (100%)") and all("\r" not in line for line in lines)
    logger = RunLogger("unused", enabled=True, name="synth_drsl")
    logger.start_progress(total=10, initial=4, description="round 2/3")
    logger.advance({"loss_source": 0.5})
    logger.close_progress()
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith("synth_drsl round 2/3: 5/10 (50%)") and "loss_source=0.5" in lines[-1]


def test_status_lines_wait_for_the_interval(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    for _ in progress(range(1000), desc="fast"):
        pass
    assert capsys.readouterr().err == ""  # a loop shorter than the interval prints nothing
    monkeypatch.setattr(run_logging, "STATUS_SECONDS", 0.05)
    for _ in progress(range(4), desc="slow"):
        time.sleep(0.04)
    lines = capsys.readouterr().err.splitlines()
    assert 2 <= len(lines) <= 4 and lines[-1].startswith("slow: 4/4 (100%)")
    for _ in progress(range(3), enabled=False):
        pass
    assert capsys.readouterr().err == ""


class FakeRun:
    """Records what a W&B run receives."""

    def __init__(self, **kwargs: Any) -> None:
        self.init = kwargs
        self.logged: list[tuple[int, dict[str, Any]]] = []
        self.finished = False

    def log(self, values: dict[str, Any], step: int) -> None:
        self.logged.append((step, values))

    def finish(self) -> None:
        self.finished = True


@pytest.fixture
def fake_wandb(monkeypatch: pytest.MonkeyPatch) -> list[FakeRun]:
    runs: list[FakeRun] = []
    module = types.ModuleType("wandb")
    module.init = lambda **kwargs: runs.append(FakeRun(**kwargs)) or runs[-1]  # type: ignore[attr-defined]
    module.Image = lambda array: ("image", np.asarray(array).shape)  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "wandb", module)
    return runs


def tiny_config(root: Path, work: Path, *extra: str) -> Any:
    if not root.exists():  # a resumed run reads the same files (rewritten ones would be a change)
        write_uda_root(root, source=2, target_train=0, size=(24, 32))
    return load_config(resolve_config_path("synth/source_only"), [
        f"data.source.root={root}/src", f"data.val.root={root}/tgt", "data.target=null", "data.batch_size=2",
        "data.num_workers=0", "train.iterations=2", "train.log_every=1", "train.checkpoint_every=0",
        "model.light_width=1", "data.source_augment.crop_size=[16,16]", f"work_dir={work}", *extra,
    ])


def test_wandb_receives_the_logged_scalars(fake_wandb: list[FakeRun], tmp_path: Path) -> None:
    run_training(tiny_config(tmp_path / "data", tmp_path / "run", "train.trackers=[wandb]", "name=tiny"))
    (run,) = fake_wandb
    assert run.init["name"] == "tiny" and run.init["dir"] == str(tmp_path / "run")
    assert run.init["config"]["train"]["trackers"] == ["wandb"] and run.finished
    steps = {step: values for step, values in run.logged}
    assert "train/loss_source" in steps[1] and "val/mIoU19" in steps[2]


def test_a_tracker_that_is_not_installed_stops_before_any_work(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(sys.modules, "wandb", None)  # import wandb now raises ImportError
    with pytest.raises(ConfigError, match="pip install wandb"):
        run_training(tiny_config(tmp_path / "data", tmp_path / "run", "train.trackers=[wandb]"))
    assert not (tmp_path / "run").exists()


def test_train_log_holds_the_console_lines_and_every_logged_iteration(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tiny_config(tmp_path / "data", tmp_path / "run", "name=tiny")
    run_training(config)
    console = capsys.readouterr()
    assert console.out.splitlines()[0] == f"run tiny: 2 iterations, writing to {tmp_path / 'run'}"
    text = (tmp_path / "run" / "train.log").read_text()
    assert f"run tiny: 2 iterations, writing to {tmp_path / 'run'}" in text.splitlines()[0]
    assert "tiny iteration 1 train loss_source=" in text and "tiny iteration 2 val mIoU19=" in text
    table = console.out.strip().splitlines()
    assert table and all(line in text for line in table)  # the evaluation table, as printed
    longer = tiny_config(tmp_path / "data", tmp_path / "run", "name=tiny", "train.iterations=3")
    run_training(longer, resume=True, allow_config_change=True)
    resumed = (tmp_path / "run" / "train.log").read_text()
    assert resumed.startswith(text) and "resuming from" in resumed[len(text):]
    assert "tiny iteration 3 train loss_source=" in resumed


def test_a_run_stopped_by_a_bad_input_writes_no_text_log(tmp_path: Path) -> None:
    config = tiny_config(tmp_path / "data", tmp_path / "run", "init_checkpoint=missing.pt")
    with pytest.raises(CheckpointError, match="missing.pt does not exist"):
        run_training(config)
    assert not (tmp_path / "run").exists()
    assert not [h for h in logging.getLogger("drsl").handlers if isinstance(h, run_logging.TextLog)]
