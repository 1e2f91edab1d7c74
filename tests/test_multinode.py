"""Several machines, played on one: two torchrun launchers (one process each) that meet at a c10d
rendezvous on 127.0.0.1 train exactly what one process trains; a process whose peers never come
says so in one line within ``dist.start_timeout``, naming the missing rank and the address.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from drsl.config import Config, ConfigError, DistConfig, load_config
from drsl.configs import resolve_config_path
from drsl.engine.distributed import init_distributed
from drsl.engine.rendezvous import describe_ranks
from drsl.engine.run_dir import changes_from_recorded
from drsl.errors import DistributedError
from drsl.training import run_training
from processes import free_port, launch_nodes
from test_distributed import ATOL, data_root, max_difference, overrides, train_argv  # noqa: F401 (a fixture)

FROZEN = "model.freeze_bn=true"  # torch's SyncBatchNorm has no CPU kernel: see test_distributed


def source_only(root: Path, work: Path, *extra: str) -> Config:
    return load_config(resolve_config_path("synth/source_only"), overrides(root, work, FROZEN, *extra))


def test_two_nodes_equal_one_process(data_root: Path, tmp_path: Path) -> None:  # noqa: F811 (the fixture)
    run_training(source_only(data_root, tmp_path / "init", "train.iterations=0"), device="cpu")
    run_training(source_only(data_root, tmp_path / "one"), device="cpu")
    launch_nodes(["drsl.cli", *train_argv(data_root, tmp_path / "two", FROZEN)], nodes=2, timeout=240)
    moved = max_difference(tmp_path / "init", tmp_path / "one")
    assert moved > 5e-3, f"training barely moved the weights ({moved}): the comparison would be vacuous"
    assert max_difference(tmp_path / "one", tmp_path / "two") <= ATOL
    # One writer (rank 0) recorded one invocation in the shared run folder.
    history = json.loads((tmp_path / "two" / "run.json").read_text())["history"]
    assert [entry["outcome"] for entry in history] == ["finished"]


def test_a_process_without_peers_says_so_in_one_line(tmp_path: Path) -> None:
    # WORLD_SIZE=2 with only rank 0: it waits dist.start_timeout, names rank 1 and exits 2.
    port = free_port()
    env = {
        **os.environ, "WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "0", "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(port), "OMP_NUM_THREADS": "1",
    }
    argv = ["train", "synth/source_only", f"work_dir={tmp_path / 'run'}", "dist.start_timeout=2", "--device", "cpu"]
    result = subprocess.run(
        [sys.executable, "-m", "drsl.cli", *argv], env=env, capture_output=True, text=True, timeout=120,
    )
    where = f"MASTER_ADDR:MASTER_PORT=127.0.0.1:{port}"
    assert result.returncode == 2, result.stderr
    waiting, error = result.stderr.strip().splitlines()  # nothing else: no trace from torch
    assert waiting.endswith(f"rank 0: waiting for 2 processes at {where} (at most dist.start_timeout=2 s)")
    assert error == (
        f"drsl train: error: rank 1 of WORLD_SIZE=2 did not join at {where} within dist.start_timeout=2 s: start "
        "every rank with the same MASTER_ADDR, MASTER_PORT and WORLD_SIZE, or raise dist.start_timeout"
    )
    assert not (tmp_path / "run").exists()


def launcher_env(monkeypatch: pytest.MonkeyPatch, rank: int, world_size: int, port: int) -> None:
    for name, value in {"RANK": rank, "LOCAL_RANK": 0, "WORLD_SIZE": world_size, "MASTER_PORT": port}.items():
        monkeypatch.setenv(name, str(value))
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.delenv("TORCHELASTIC_USE_AGENT_STORE", raising=False)


def test_a_rank_without_its_master_names_it(monkeypatch: pytest.MonkeyPatch) -> None:
    port = free_port()
    launcher_env(monkeypatch, 1, 2, port)
    started = time.monotonic()
    with pytest.raises(DistributedError, match=(
        rf"^rank 1 of WORLD_SIZE=2 found no master \(rank 0\) at MASTER_ADDR:MASTER_PORT=127.0.0.1:{port} within "
        r"dist.start_timeout=1 s: start rank 0 .* or raise dist.start_timeout \(Connection refused\)$"
    )):
        init_distributed("cpu", DistConfig(start_timeout=1))
    assert 1 <= time.monotonic() - started < 10


def test_every_missing_rank_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    launcher_env(monkeypatch, 0, 6, free_port())
    with pytest.raises(DistributedError, match=r"^ranks 1-5 of WORLD_SIZE=6 did not join at "):
        init_distributed("cpu", DistConfig(start_timeout=0.5))


def test_launcher_address_is_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.setenv("MASTER_PORT", "29500")
    with pytest.raises(ConfigError, match="MASTER_ADDR and MASTER_PORT must be set"):
        init_distributed("cpu")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    for port in ("http", "0", "65536"):
        monkeypatch.setenv("MASTER_PORT", port)
        with pytest.raises(ConfigError, match=f"MASTER_PORT='{port}' must be a port number"):
            init_distributed("cpu")


def test_missing_ranks_are_listed_as_runs() -> None:
    assert describe_ranks([3]) == "rank 3"
    assert describe_ranks([7, 1, 2, 3, 5]) == "ranks 1-3, 5, 7"


def test_wait_settings_are_not_a_change_of_the_run(data_root: Path, tmp_path: Path) -> None:  # noqa: F811 (the fixture)
    recorded = source_only(data_root, tmp_path)
    longer = source_only(data_root, tmp_path, "dist.start_timeout=900", "dist.collective_timeout=60", "seed=3")
    assert list(changes_from_recorded(recorded, longer)) == ["seed"]
    with pytest.raises(ConfigError, match="dist.start_timeout"):
        source_only(data_root, tmp_path, "dist.start_timeout=0")
