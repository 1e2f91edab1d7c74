"""End-to-end training on fixture datasets: every method runs, a killed run resumes to the
same weights and metrics as an uninterrupted one (training and pseudo-labelling), determinism."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from drsl.config import load_config
from drsl.configs import resolve_config_path
from drsl.training import read_eval, run_training
from fixtures import run_weights, write_uda_root

SIZE = (40, 56)


@pytest.fixture(scope="module")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_uda_root(tmp_path_factory.mktemp("data"), source=8, target_train=6, size=SIZE)


def overrides(root: Path, work_dir: Path, iterations: int = 6, every: int = 2) -> list[str]:
    return [
        f"data.source.root={root}/src", f"data.target.root={root}/tgt", f"data.val.root={root}/tgt",
        "data.batch_size=2", "data.num_workers=0", f"train.iterations={iterations}",
        f"train.checkpoint_every={every}", "train.log_every=1", "model.light_width=1",
        "data.source_augment.crop_size=[32,32]", "data.target_augment.crop_size=[32,32]",
        f"work_dir={work_dir}",
    ]


@pytest.fixture(scope="module")
def source_checkpoint(data_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("so")
    run_training(load_config(resolve_config_path("synth/source_only"), overrides(data_root, work)))
    return work / "checkpoints" / "latest.pt"


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = run_weights(a), run_weights(b)
    assert wa.keys() == wb.keys()
    different = [k for k in wa if not torch.equal(wa[k], wb[k])]
    assert not different, f"weights differ after resume: {different[:5]}"


def test_source_only_writes_run_directory(source_checkpoint: Path) -> None:
    work = source_checkpoint.parent.parent
    for name in ("config.yaml", "environment.json", "metrics.jsonl", "eval.json"):
        assert (work / name).is_file(), name
    assert list((work / "tb").iterdir())
    recorded = json.loads((work / "environment.json").read_text())
    assert recorded["torch_threads"] == torch.get_num_threads()
    assert recorded["cpu_capability"] == torch.backends.cpu.get_cpu_capability()
    assert recorded["packages"]["timm"] and recorded["packages"]["torch"] == torch.__version__.split("+")[0]
    summary = read_eval(work)
    assert set(summary["miou"]) == {"19", "16", "13"} and len(summary["confusion_matrix"]) == 19


def test_same_seed_same_result(data_root: Path, source_checkpoint: Path, tmp_path: Path) -> None:
    again = tmp_path / "again"
    run_training(load_config(resolve_config_path("synth/source_only"), overrides(data_root, again)))
    assert_same_weights(source_checkpoint.parent.parent, again)


def test_class_balanced_source_sampling_runs_and_caches_counts(data_root: Path, source_checkpoint: Path, tmp_path: Path) -> None:
    extra = [f"init_checkpoint={source_checkpoint}", "data.source_sampling.mode=class_balanced", "train.iterations=2"]
    run_training(load_config(resolve_config_path("synth/cbst"), overrides(data_root, tmp_path) + extra))
    cached = json.loads((tmp_path / "source_class_counts.json").read_text())
    assert len(cached["names"]) == len(cached["counts"]) == 8


@pytest.mark.parametrize("method", ["cbst", "drsl", "drsl_online"])
def test_adaptation_methods_run_and_log(method: str, data_root: Path, source_checkpoint: Path, tmp_path: Path) -> None:
    config = load_config(
        resolve_config_path(f"synth/{method}"),
        overrides(data_root, tmp_path) + [f"init_checkpoint={source_checkpoint}"],
    )
    summary = run_training(config)
    assert summary["iteration"] == 6
    if config.adapt.host == "rounds":
        for round_index in range(config.adapt.rounds):
            folder = tmp_path / "pseudo_labels" / f"round_{round_index}"
            assert (folder / "manifest.json").is_file()
            assert len(list((folder / "pred").rglob("*.png"))) == len(list((folder / "score").rglob("*.png"))) == 12
            assert (folder / "quality.json").is_file()
    logged = (tmp_path / "metrics.jsonl").read_text()
    assert "train/loss_target" in logged
    if method.startswith("drsl"):
        assert "train/drsl/sma" in logged
    if config.adapt.host == "online":  # the teacher's labels of target train, measured at the end
        quality = json.loads((tmp_path / "pseudo_labels" / "teacher" / "quality.json").read_text())
        assert quality["valid"] > 0 and "class-balanced" in quality["rule"]


def _spawn(config: str, args: list[str], resume: bool = False) -> subprocess.Popen:
    command = [sys.executable, "-m", "drsl.cli", "train", config, *args]
    if resume:
        command.append("--resume")
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _kill_when(process: subprocess.Popen, ready: callable, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert process.poll() is None, f"run ended before the kill point: {process.stderr.read().decode()[-2000:]}"
        assert time.monotonic() < deadline, "kill point never reached"
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert process.returncode == -signal.SIGKILL


def _kill_and_resume(config: str, args: list[str], work: Path, ready: callable) -> None:
    _kill_when(_spawn(config, args), ready)
    resumed = _spawn(config, args, resume=True)
    _, err = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, err.decode()[-3000:]


def test_kill_during_training_resumes_identically(data_root: Path, source_checkpoint: Path, tmp_path: Path) -> None:
    # with the fusion filter: its MMDL posterior must also come back identically after the kill
    extra = [f"init_checkpoint={source_checkpoint}", "adapt.pseudo_label.fusion=agree"]
    args = overrides(data_root, tmp_path / "x", iterations=40, every=4) + extra
    reference = load_config(resolve_config_path("synth/drsl"), overrides(data_root, tmp_path / "ref", 40, 4) + extra)
    run_training(reference)
    work = tmp_path / "x"
    _kill_and_resume("synth/drsl", args, work, lambda: (work / "checkpoints" / "iter_8.pt").is_file())
    assert_same_weights(tmp_path / "ref", work)
    assert read_eval(tmp_path / "ref")["miou"] == read_eval(work)["miou"]


def test_kill_during_pseudo_labelling_resumes_identically(data_root: Path, source_checkpoint: Path, tmp_path: Path) -> None:
    common = ["adapt.rounds=2", "data.val=null"]
    reference = load_config(resolve_config_path("synth/cbst"), overrides(data_root, tmp_path / "ref") + [f"init_checkpoint={source_checkpoint}", *common])
    run_training(reference)
    work = tmp_path / "x"
    args = overrides(data_root, work) + [f"init_checkpoint={source_checkpoint}", *common]
    maps = work / "pseudo_labels" / "round_1" / "pred"
    _kill_and_resume("synth/cbst", args, work, lambda: maps.is_dir() and len(list(maps.rglob("*.png"))) >= 3)
    assert_same_weights(tmp_path / "ref", work)
    for round_index in range(2):
        ref_dir = tmp_path / "ref" / "pseudo_labels" / f"round_{round_index}"
        for ref_file in ref_dir.rglob("*.png"):
            assert ref_file.read_bytes() == (work / ref_file.relative_to(tmp_path / "ref")).read_bytes()
        ref_manifest, manifest = (json.loads((d / "manifest.json").read_text()) for d in (ref_dir, work / ref_dir.relative_to(tmp_path / "ref")))
        for key in ("fingerprint", "thresholds", "counts", "images"):
            assert ref_manifest[key] == manifest[key], key
