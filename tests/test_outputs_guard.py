"""No command writes over what a run or a user owns, nothing is dropped in silence, and settings
that cannot take effect are named (docs/reliability.md, "Outputs, dropped inputs, and settings
that cannot take effect")."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from drsl.cli import main
from drsl.commands import predict
from drsl.config import DatasetConfig, dump_config, load_config
from drsl.config_scope import check_keys_take_effect
from drsl.configs import available_configs, resolve_config_path
from drsl.data.checks import check_dataset
from drsl.data.classes import bind_class_set, load_class_set
from drsl.engine.outputs import check_output, is_run_folder, run_outputs, run_owner
from drsl.errors import OutputError
from drsl.fileio import not_a_file, walk_files
from fixtures import file_hashes, random_image, save_image, train_args, write_folder, write_gta5
from test_predict import train_tiny_runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Fixture data (``src``, ``tgt``) and two finished 2-iteration runs: source_only and drsl."""
    return train_tiny_runs(tmp_path_factory.mktemp("guard"))


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = main(argv)
    return code, capsys.readouterr().err


def one_line_error(code: int, err: str) -> bool:
    """Exit status 2 and one error line, the last one, without a traceback (``drsl train`` may
    first print the line that names its run)."""
    lines = err.strip().splitlines()
    errors = [line for line in lines if ": error: " in line]
    return code == 2 and len(errors) == 1 and lines[-1] == errors[0] and "Traceback" not in err


def tiny_train(root: Path, work: Path, *extra: str) -> list[str]:
    """``drsl train`` of :func:`fixtures.train_args`' few-second source-only run."""
    return ["train", "synth/source_only", *train_args(root, work), *extra]


# -- A. outputs are guarded ------------------------------------------------------------------


def test_mistaken_commands_change_no_file_of_a_finished_run(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run, other = runs["drsl"], runs["source_only"]
    root = run.parent
    ckpt, other_ckpt = run / "checkpoints" / "latest.pt", other / "checkpoints" / "latest.pt"
    (tmp_path / "link.json").symlink_to(run / "eval.json")
    (tmp_path / "not_a_run").mkdir()
    (tmp_path / "prev" / "labels").mkdir(parents=True)
    (tmp_path / "prev" / "labels" / "00001.png").write_bytes((root / "src" / "images" / "00001.png").read_bytes())
    before = {path: file_hashes(path) for path in (run, other, root / "src")}
    mistakes = [
        ["evaluate", str(ckpt), "--out", str(ckpt)],
        ["evaluate", str(ckpt), "--out", str(run / "eval.json")],
        ["evaluate", str(ckpt), "--out", str(tmp_path / "link.json")],
        ["evaluate", str(other_ckpt), "--out", str(run / "checkpoints" / "iter_7.pt")],
        ["export", str(ckpt), str(ckpt)],
        ["export", str(other_ckpt), str(ckpt)],
        ["export", str(ckpt), str(run / "config.yaml")],
        ["report", str(run), "--out", str(run / "metrics.jsonl")],
        ["report", str(run), "--out", str(other / "classes.yaml")],
        ["report", str(tmp_path / "not_a_run")],
        ["data", "check", str(root / "src"), "--layout", "gta5", "--json", str(run / "run.json")],
        ["data", "check", str(root / "src"), "--layout", "gta5", "--json", str(root / "src")],
        ["data", "check", str(root / "src"), "--layout", "gta5", "--convert", str(root / "src" / "conv")],
        ["data", "check", str(root / "src"), "--layout", "gta5", "--convert", str(run / "tb"), "--overwrite"],
        ["predict", str(ckpt), str(root / "src" / "images"), "--out", str(run)],
        ["predict", str(ckpt), str(root / "src" / "images"), "--out", str(run / "pseudo_labels")],
        ["predict", str(ckpt), str(root / "src" / "images"), "--out", str(root / "src" / "images")],
        ["predict", str(ckpt), str(tmp_path / "prev" / "labels" / "00001.png"), "--out", str(tmp_path / "prev")],
        ["pseudo-label", str(ckpt), "--out", str(run / "pseudo_labels" / "round_0")],
        ["pseudo-label", str(ckpt), "--out", str(run)],
        ["data", "synth", str(run), "--overwrite", "--num-source", "1"],
        ["data", "synth", str(run / "checkpoints"), "--overwrite", "--num-source", "1"],
        ["data", "synth", str(root), "--overwrite", "--num-source", "1"],
        tiny_train(root, run / "pseudo_labels" / "round_5"),
        tiny_train(root, root / "src"),
        tiny_train(root, root / "src" / "images" / "00001.png"),
        tiny_train(root, other, "--overwrite", f"init_checkpoint={other_ckpt}"),
        tiny_train(root, other),
    ]
    for argv in mistakes:
        code, err = run_cli(argv, capsys)
        assert one_line_error(code, err), (argv, code, err)
    assert {path: file_hashes(path) for path in before} == before


def test_predictions_never_land_in_the_datasets_of_the_checkpoints_run(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = runs["drsl"].parent
    ckpt = str(runs["drsl"] / "checkpoints" / "latest.pt")
    (tmp_path / "photo").mkdir()
    save_image(tmp_path / "photo" / "street.png", random_image((24, 32), np.random.default_rng(5)))
    before = {path: file_hashes(path) for path in (root / "src", root / "tgt")}
    for argv, words in [
        (["predict", ckpt, str(tmp_path / "photo"), "--out", str(root / "tgt")],
         "tgt: the checkpoint's run reads it (data.target.root)"),
        (["predict", ckpt, str(tmp_path / "photo"), "--out", str(root / "tgt" / "gtFine")],
         "lies inside " + str(root / "tgt") + ", which the checkpoint's run reads (data.target.root)"),
        (["predict", ckpt, str(tmp_path / "photo"), "--out", str(root / "src" / "preds")],
         "which the checkpoint's run reads (data.source.root)"),
        (["pseudo-label", ckpt, "--out", str(root / "src" / "pl")],
         "which the checkpoint's run reads (data.source.root)"),
    ]:
        code, err = run_cli(argv, capsys)
        assert one_line_error(code, err) and words in err, (argv, err)
    assert {path: file_hashes(path) for path in before} == before
    assert not (root / "src" / "preds").exists() and not (root / "src" / "pl").exists()


def test_an_output_is_never_an_input(tmp_path: Path) -> None:
    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    config = tmp_path / "c.yaml"
    config.write_text("seed: 1\n")
    (tmp_path / "alias.yaml").symlink_to(config)
    inputs = [("--config", config), ("the dataset", data), ("not given", None)]
    for path, options, words in [
        (config, {}, "reads it (--config)"),
        (tmp_path / "alias.yaml", {}, "reads it (--config)"),
        (data / "report.json", {}, "lies inside"),
        (data, {"folder": True}, "reads it (the dataset)"),
        (tmp_path, {"folder": True, "whole": True}, "holds"),
    ]:
        with pytest.raises(OutputError, match=words.replace("(", r"\(").replace(")", r"\)")):
            check_output(path, inputs, **options)
    check_output(data / "report.json", inputs, inside_inputs=True)  # a command that never reads it back
    check_output(tmp_path / "elsewhere", inputs, folder=True, whole=True)


def test_every_file_a_run_writes_is_owned_and_nothing_else(runs: dict[str, Path]) -> None:
    for run in runs.values():
        assert is_run_folder(run)
        for path in run.rglob("*"):
            if path.is_file():
                assert run_owner(path) is not None, path  # the list of run entries is complete
        assert {p.name for p in run_outputs(run)} >= {"run.json", "config.yaml", "latest.pt", "eval.json"}
        recorded = json.loads((run / "run.json").read_text())["outputs"]
        assert "run.json" in recorded and "checkpoints/latest.pt" in recorded
    run = runs["drsl"]
    assert run_owner(run / "report.html")[1].writer == "report"
    check_output(run / "report.html", writer="report")  # report writes a run's report
    for mine in (run / "notes.txt", run / "checkpoints" / "best_by_hand.pt", run / "predictions" / "x.png"):
        assert run_owner(mine) is None
    assert not is_run_folder(run / "pseudo_labels" / "round_0")  # a pseudo-label set's run.json is no run record


def test_overwrite_deletes_only_what_the_run_wrote(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    root, work = runs["drsl"].parent, tmp_path / "w"
    assert run_cli(tiny_train(root, work), capsys)[0] == 0
    (work / "notes.txt").write_text("mine")
    (work / "checkpoints" / "best_by_hand.pt").write_bytes(b"mine too")
    (work / "checkpoints" / "iter_2.pt").unlink()
    with caplog.at_level(logging.WARNING, logger="drsl"):
        code, err = run_cli([*tiny_train(root, work), "--overwrite"], capsys)
    assert code == 0, err
    assert (work / "notes.txt").read_text() == "mine"
    assert (work / "checkpoints" / "best_by_hand.pt").read_bytes() == b"mine too"
    said = next(r.getMessage() for r in caplog.records if "deleted what its previous run wrote" in r.getMessage())
    assert "checkpoints/latest.pt" in said and "kept what drsl did not write: checkpoints, notes.txt" in said
    entry = json.loads((work / "run.json").read_text())["history"][-1]
    assert entry["action"] == "overwrite" and "notes.txt" in entry["kept"] and "metrics.jsonl" in entry["removed"]
    assert (work / "checkpoints" / "latest.pt").is_file()


def test_video_outputs_clash_like_images(tmp_path: Path) -> None:
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "drive.mp4").write_bytes(b"")
    save_image(tmp_path / "a" / "drive.png", random_image((8, 8), np.random.default_rng(0)))
    found = predict.discover([str(tmp_path / "a" / "drive.mp4"), str(tmp_path / "b" / "drive.mp4"),
                              str(tmp_path / "a" / "drive.png")], tmp_path / "out")
    assert [v.path.parent.name for v in found.videos] == ["a"]
    assert len(found.problems) == 2 and all("already taken" in p for p in found.problems)
    folder = predict.discover([str(tmp_path / "a")], tmp_path / "out")  # a folder: the same rule
    assert len(folder.videos) == 1 and "already taken" in folder.problems[0]


# -- E. nothing is dropped in silence ----------------------------------------------------------


def test_walk_follows_linked_folders_once_and_yields_what_cannot_be_read(tmp_path: Path) -> None:
    root, outside = tmp_path / "root", tmp_path / "outside"
    (root / "sub").mkdir(parents=True)
    (outside / "deep").mkdir(parents=True)
    for path in (root / "a.png", root / "sub" / "b.png", outside / "deep" / "c.png"):
        path.write_bytes(b"x")
    (root / "linked").symlink_to(outside)
    (root / "again").symlink_to(outside)
    (root / "up").symlink_to(root)
    (outside / "deep" / "loop").symlink_to(outside)
    (root / "dangling.png").symlink_to(root / "gone.png")
    (root / "self.png").symlink_to(root / "self.png")
    names = [p.relative_to(root).as_posix() for p in walk_files(root)]
    assert names == ["a.png", "again/deep/c.png", "dangling.png", "self.png", "sub/b.png"]
    assert "dangling symbolic link" in not_a_file(root / "dangling.png")
    assert not_a_file(root / "self.png") == "is a symbolic link loop"
    assert not_a_file(root / "sub", "checkpoint file") == "is a folder, not a checkpoint file"
    assert not_a_file(root / "a.png") is None and not_a_file(root / "nope") == "does not exist"


def test_data_check_lists_links_and_folders_named_like_images(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    root = tmp_path / "gta"
    write_gta5(root, n=3)
    (root / "images" / "00010.png").symlink_to(root / "images" / "gone.png")
    (root / "images" / "00011.png").symlink_to(root / "images" / "00011.png")
    (root / "images" / "00012.png").mkdir()
    (root / "labels" / "00003.png").unlink()
    (root / "labels" / "00003.png").symlink_to(root / "labels" / "gone.png")
    report = check_dataset(DatasetConfig(layout="gta5", root=str(root)), load_class_set("cityscapes19"))
    problems = {p.name: p for p in report.problems}
    assert report.num_found == 6 and report.num_ok == 2
    assert "dangling symbolic link" in problems["00010"].message and problems["00010"].kind == "not_a_file"
    assert problems["00011"].message == "is a symbolic link loop"
    assert problems["00012"].message == "is a folder, not a file"
    assert "label is a dangling symbolic link" in problems["00003"].message
    code = main(["data", "check", str(root), "--layout", "gta5"])
    out = capsys.readouterr().out
    assert code == 1 and all(name in out for name in ("00010", "00011", "00012", "00003"))


def test_folder_layout_reads_every_image_format_and_linked_subfolders(tmp_path: Path) -> None:
    fixture = write_folder(tmp_path / "mine", n=2, size=(12, 16))
    root = fixture.root
    rng = np.random.default_rng(3)
    elsewhere = tmp_path / "elsewhere"
    for name, suffix in (("w", ".webp"), ("b", ".bmp"), ("t", ".tif")):
        Image.fromarray(random_image((12, 16), rng)).save(_mk(elsewhere) / f"{name}{suffix}")
        save_image(root / "masks" / "linked" / f"{name}.png", np.ones((12, 16), np.uint8))
    (root / "images" / "linked").symlink_to(elsewhere)
    report = check_dataset(DatasetConfig(layout="folder", root=str(root)), load_class_set("cityscapes19"))
    assert report.ok and report.num_ok == 5, report.to_text()


def _mk(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_predict_reads_every_format_follows_links_and_names_what_it_skips(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(4)
    images, elsewhere = tmp_path / "images", tmp_path / "elsewhere"
    for folder, name, suffix in ((images, "w", ".webp"), (images, "b", ".bmp"), (elsewhere, "t", ".tif")):
        Image.fromarray(random_image((24, 32), rng)).save(_mk(folder) / f"{name}{suffix}")
    (images / "linked").symlink_to(elsewhere)
    (images / "notes.txt").write_text("not an image")
    ckpt = str(runs["source_only"] / "checkpoints" / "latest.pt")
    out = tmp_path / "out"
    assert main(["predict", ckpt, str(images), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert sorted(p.relative_to(out / "labels").as_posix() for p in (out / "labels").rglob("*.png")) == [
        "b.png", "linked/t.png", "w.png"]
    assert "ignored 1 file(s)" in err and "notes.txt" in err
    (images / "gone.png").symlink_to(images / "nothing.png")
    (images / "dir.png").mkdir()
    assert main(["predict", ckpt, str(images), "--out", str(tmp_path / "out2")]) == 1
    err = capsys.readouterr().err
    assert "gone.png: is a dangling symbolic link" in err and "dir.png" not in err  # a folder is searched


# -- F. one true line each ---------------------------------------------------------------------


def test_keys_a_run_never_reads(tmp_path: Path, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    with caplog.at_level(logging.WARNING, logger="drsl"):
        for name in available_configs():
            check_keys_take_effect(load_config(resolve_config_path(name)), [])
    assert not caplog.records, [r.getMessage() for r in caplog.records]  # packaged configs are clean
    for override in ("adapt.mix.blur_prob=0.1", "adapt.drsl.lambda_mm=2", "adapt.drsl={num_modes: 2}",
                     "adapt.ema_momentum=0.9", "adapt.online_portion=0.3", "adapt.host=mix"):
        code, err = run_cli(["train", "synth/source_only", override, f"work_dir={tmp_path}/w"], capsys)
        key = override.split("=")[0].replace("={num_modes", "")
        assert one_line_error(code, err) and "cannot take effect" in err and key.split("{")[0] in err, err
    code, err = run_cli(["train", "synth/cbst", "adapt.drsl.sma=false", f"work_dir={tmp_path}/w"], capsys)
    assert one_line_error(code, err) and "adapt.method=drsl" in err
    config = tmp_path / "mine.yaml"
    config.write_text(yaml.safe_dump({"_base_": str(resolve_config_path("synth/source_only")),
                                      "adapt": {"mix": {"blur_prob": 0.1}}}))
    with caplog.at_level(logging.WARNING, logger="drsl"):
        check_keys_take_effect(load_config(config), [])
    assert "adapt.mix.blur_prob=0.1" in caplog.text and "never reads" in caplog.text
    check_keys_take_effect(load_config(resolve_config_path("synth/drsl_mix"), ["adapt.mix.blur_prob=0.1"]),
                           ["adapt.mix.blur_prob=0.1"])  # read there: no error


def test_a_run_killed_before_its_first_checkpoint_starts_again_with_resume(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    root, work = runs["drsl"].parent, tmp_path / "killed"
    argv = tiny_train(root, work)
    config = load_config(resolve_config_path("synth/source_only"), argv[2:])
    bind_class_set(config)
    work.mkdir()
    (work / "config.yaml").write_text(dump_config(config))
    history = [{"action": "start", "time": "2026-01-01T00:00:00+00:00", "pid": 1}]
    (work / "run.json").write_text(json.dumps({"format": 1, "started": "x", "history": history, "state": "running"}))
    (work / "metrics.jsonl").write_text('{"step": 1, "loss": 3.0}\n')
    code, err = run_cli(argv, capsys)
    assert one_line_error(code, err) and "no checkpoint to continue from: start it again with --resume" in err
    with caplog.at_level(logging.WARNING, logger="drsl"):
        code, err = run_cli([*argv, "--resume"], capsys)
    assert code == 0, err
    assert "stopped before its first checkpoint: starting it again from iteration 0" in caplog.text
    record = json.loads((work / "run.json").read_text())
    assert [h["action"] for h in record["history"]] == ["start", "restart"] and record["state"] == "finished"
    assert (work / "checkpoints" / "latest.pt").is_file()


def test_a_folder_named_like_a_checkpoint_is_no_checkpoint(
    runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "x.pt"
    folder.mkdir()
    root = runs["drsl"].parent
    for argv, words in [
        (["evaluate", str(folder)], "is a folder, not a checkpoint file"),
        (["export", str(folder), str(tmp_path / "slim.pt")], "is a folder, not a checkpoint file"),
        ([*tiny_train(root, tmp_path / "w"), "--resume-from", str(folder)], "is a folder, not a checkpoint file"),
        (tiny_train(root, tmp_path / "w", f"init_checkpoint={folder}"), "is a folder, not a checkpoint file"),
        (tiny_train(root, tmp_path / "w", f"model.pretrained={folder}"), "is a folder, not a weights file"),
    ]:
        code, err = run_cli(argv, capsys)
        assert one_line_error(code, err) and words in err, (argv, err)
    assert not (tmp_path / "w").exists()


def test_report_refuses_what_is_not_a_run(runs: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "config.yaml").write_text("seed: 1\n")  # a config alone is no run
    for folder in ("empty", "notes", "missing"):
        code, err = run_cli(["report", str(tmp_path / folder), "--samples", "0"], capsys)
        assert one_line_error(code, err) and folder in err, err
        assert not (tmp_path / folder / "report.html").exists()
    code, err = run_cli(["report", str(runs["source_only"]), "--samples", "0"], capsys)
    assert code == 0 and (runs["source_only"] / "report.html").is_file()
    os.remove(runs["source_only"] / "report.html")
