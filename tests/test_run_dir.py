"""Run directories are owned: a fresh run never mixes with another one, a lock stops a second
process, a bad input changes nothing, a resume keeps the recorded config and its log has no
duplicate rows, leftovers of a killed run are cleaned or tolerated."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from drsl.cli import main, parse_args
from drsl.config import load_config
from drsl.configs import resolve_config_path
from drsl.data.synth import generate_benchmark
from drsl.engine.run_lock import RunLock
from drsl.errors import RunDirError
from drsl.training import run_training
from fixtures import file_hashes, train_args, write_uda_root


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_uda_root(tmp_path_factory.mktemp("owned"), source=4, target_train=0, size=(40, 40))


def train(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(["train", "synth/source_only", *argv])
    return code, capsys.readouterr().err


def record(work: Path) -> dict:
    return json.loads((work / "run.json").read_text())


def metric_rows(work: Path) -> list[dict]:
    return [json.loads(line) for line in (work / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished(data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("runs") / "finished"
    run_training(load_config(resolve_config_path("synth/source_only"), train_args(data, work)))
    return work


def test_a_finished_run_is_recorded(finished: Path) -> None:
    run = record(finished)
    assert run["state"] == "finished" and len(run["config_hash"]) == 16
    assert [h["action"] for h in run["history"]] == ["start"] and run["history"][0]["outcome"] == "finished"


@pytest.mark.parametrize("extra", [[], ["train.iterations=3"], ["--overwrite", "data.source.root=/nowhere"],
                                   ["--resume", "data.val.root=/nowhere"]])
def test_a_finished_run_is_never_changed(extra: list[str], data: Path, finished: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = file_hashes(finished)
    code, err = train([*train_args(data, finished), *extra], capsys)
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert file_hashes(finished) == before
    if not extra:
        assert "--resume" in err and "--overwrite" in err and "finished run" in err


def test_a_bad_input_creates_no_run_directory(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = train([*train_args(data, tmp_path / "new"), f"data.source.root={tmp_path}/nowhere"], capsys)
    assert code == 2 and "nowhere" in err and not (tmp_path / "new").exists()


def test_a_folder_of_other_files_is_refused(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    for extra in ([], ["--overwrite"]):
        code, err = train([*train_args(data, tmp_path), *extra], capsys)
        assert code == 2 and "holds no drsl run" in err
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_overwrite_replaces_the_old_run(data: Path, finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "w"
    run_training(load_config(resolve_config_path("synth/source_only"), train_args(data, work, iterations=3)))
    code, _ = train([*train_args(data, work), "--overwrite"], capsys)
    assert code == 0
    assert sorted(p.name for p in (work / "checkpoints").iterdir()) == ["iter_1.pt", "iter_2.pt", "latest.pt"]
    assert max(row["step"] for row in metric_rows(work)) == 2
    assert [h["action"] for h in record(work)["history"]] == ["overwrite"]


def test_a_second_process_is_locked_out(data: Path, finished: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with RunLock(finished):
        code, err = train([*train_args(data, finished), "--resume"], capsys)
    assert code == 2 and "in use by process" in err


def test_resume_needs_something_to_resume(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = train([*train_args(data, tmp_path / "typo"), "--resume"], capsys)
    assert code == 2 and "nothing to resume" in err and not (tmp_path / "typo").exists()
    code, err = train([*train_args(data, tmp_path / "x"), "--resume-from", str(tmp_path / "none.pt")], capsys)
    assert code == 2 and "none.pt" in err


def test_resume_does_not_swallow_an_override() -> None:
    parsed = parse_args(["train", "synth/drsl", "--resume", "train.iterations=20"])
    assert parsed.resume is True and parsed.overrides == ["train.iterations=20"]


def test_resume_keeps_the_recorded_config_and_logs_each_row_once(
    data: Path, finished: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "r"
    run_training(load_config(resolve_config_path("synth/source_only"), train_args(data, work)))
    before = file_hashes(work)
    # The packaged config says 1500 iterations: a bare resume keeps the run's 2 and has nothing to do.
    assert main(["train", "synth/source_only", f"--work-dir={work}", "--resume"]) == 0
    assert file_hashes(work) == before
    code, err = train([*train_args(data, work, iterations=3), "--resume"], capsys)
    assert code == 2 and "train.iterations: 2 -> 3" in err and "--change-config" in err
    # A killed write left a temporary file and a torn last log line: both are dealt with.
    (work / "checkpoints" / ".latest.pt.x1y2.tmp").write_bytes(b"\0" * 100)
    with open(work / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 2, "val/mIo')
    code, err = train([f"work_dir={work}", "train.iterations=3", "--resume", "--change-config"], capsys)
    assert code == 0, err
    assert not list(work.rglob("*.tmp"))
    rows = metric_rows(work)
    assert [r["step"] for r in rows if "train/loss_source" in r] == [1, 2, 3]
    assert [r["step"] for r in rows if "val/mIoU19" in r] == [3]
    assert "iterations: 3" in (work / "config.yaml").read_text()
    history = record(work)["history"]
    assert [h["action"] for h in history] == ["start", "resume"]
    assert history[1]["changes"] == {"train.iterations": {"old": 2, "new": 3}}


def test_auto_resume_refuses_a_run_of_another_config(data: Path, finished: Path) -> None:
    other = load_config(resolve_config_path("synth/source_only"), [*train_args(data, finished), "seed=5"])
    with pytest.raises(RunDirError, match="--overwrite"):
        run_training(other, resume="auto")


def test_a_failed_run_says_so(data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = train([*train_args(data, tmp_path, iterations=20), "optim.lr=1.0e+30"], capsys)
    assert code == 2 and "non-finite loss" in err
    run = record(tmp_path)
    assert run["state"] == "failed" and "non-finite loss" in run["history"][-1]["error"]


def test_generators_refuse_a_non_empty_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "synth"
    sizes = {"num_source": 1, "num_target_train": 1, "num_target_val": 1, "source_size": (32, 16), "target_size": (32, 16)}
    generate_benchmark(out, seed=0, **sizes)
    before = file_hashes(out)
    (tmp_path / ".synth.killed.tmp").mkdir()  # a generation killed half-way
    code = main(["data", "synth", str(out), "--seed", "1", "--num-source", "1"])
    assert code == 2 and "not empty" in capsys.readouterr().err and file_hashes(out) == before
    generate_benchmark(out, seed=1, overwrite=True, **sizes)
    assert json.loads((out / "manifest.json").read_text())["seed"] == 1 and file_hashes(out) != before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synth"]
