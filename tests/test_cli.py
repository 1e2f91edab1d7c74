"""The command line: help for every subcommand, data check/convert, config commands, synth data."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from drsl.adaptation.posterior import FUSIONS
from drsl.cli import build_parser, main
from drsl.config import PseudoLabelConfig
from drsl.commands.help import LazyParser
from drsl.data.synth.shifts import DEFAULT_SHIFT
from fixtures import write_gta5

SUBCOMMANDS = ["data", "train", "evaluate", "pseudo-label", "predict", "export", "report", "bench", "config", "demo"]


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        build_parser().parse_args([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage: drsl " + command in capsys.readouterr().out


def test_data_check_reports_problems_and_converts(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = write_gta5(tmp_path / "good", n=3, size=(20, 24))
    report = tmp_path / "report.json"
    out = tmp_path / "converted"
    assert main(["data", "check", str(good.root), "--layout", "gta5", "--json", str(report), "--convert", str(out)]) == 0
    data = json.loads(report.read_text())
    assert data["problems"] == [] and sum(c["pixels"] for c in data["classes"]) + data["ignore_pixels"] == 3 * 20 * 24
    assert len(list((out / "masks").glob("*.png"))) == 3 and (out / "class_stats.json").is_file()

    bad = write_gta5(tmp_path / "bad", n=3, size=(20, 24), mismatch=[0])
    assert main(["data", "check", str(bad.root), "--layout", "gta5"]) == 1
    assert "mismatch" in capsys.readouterr().out.lower()


def test_data_check_wrong_root_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["data", "check", str(tmp_path / "nowhere"), "--layout", "cityscapes"])
    captured = capsys.readouterr()
    assert code in (1, 2) and "nowhere" in captured.out + captured.err and "Traceback" not in captured.err


def test_config_commands(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "list"]) == 0
    assert "synth/drsl" in capsys.readouterr().out
    assert main(["config", "show", "synth/drsl", "adapt.drsl.num_modes=5"]) == 0
    assert "num_modes: 5" in capsys.readouterr().out


def test_data_synth_writes_both_layouts(tmp_path: Path) -> None:
    out = tmp_path / "synth"
    assert main(["data", "synth", str(out), "--num-source", "2", "--num-target-train", "2", "--num-target-val", "1", "--workers", "1"]) == 0
    assert len(list((out / "source" / "labels").glob("*.png"))) == 2
    assert len(list((out / "target" / "gtFine" / "val").rglob("*_gtFine_labelIds.png"))) == 1
    assert json.loads((out / "manifest.json").read_text())["shift"] == DEFAULT_SHIFT


def test_data_synth_rejects_an_unknown_shift_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["data", "synth", str(tmp_path / "synth"), "--shift", "bogus", "--workers", "1"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown shift preset 'bogus'" in err and "hard" in err
    assert not (tmp_path / "synth").exists()


def test_unknown_arguments_are_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["config", "show", "synth/drsl", "--bogus"], ["data", "synth", str(tmp_path), "seed=3"]):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert "unrecognized arguments" in capsys.readouterr().err


def _options(parser: argparse.ArgumentParser, path: str) -> list[tuple[str, argparse.Action]]:
    """(command path, action) of every argument of ``parser`` and its sub-parsers."""
    found = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _options(sub.populate() if isinstance(sub, LazyParser) else sub, f"{path} {name}")
        elif not isinstance(action, argparse._HelpAction):
            found.append((path, action))
    return found


def test_every_option_has_help_and_shows_its_default(capsys: pytest.CaptureFixture[str]) -> None:
    options = _options(build_parser(), "drsl")
    assert len(options) > 60
    assert [f"{path} {action.dest}" for path, action in options if not action.help] == []
    with pytest.raises(SystemExit):
        build_parser().parse_args(["predict", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: 4)" in text and "(default: the config's eval.mode)" in text


def test_version_is_the_installed_distributions(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"drsl {version('drsl')}"


def test_train_says_what_it_runs_before_importing_torch(tmp_path: Path) -> None:
    """The first line comes at once, even without a terminal: before the seconds torch takes to import."""
    argv = ["train", "synth/source_only", f"work_dir={tmp_path / 'run'}", "train.iterations=5"]
    probe = f"import sys; sys.modules['torch'] = None; from drsl.cli import main; main({argv!r})"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "torch" in result.stderr  # it stopped at the first import of torch
    assert result.stdout.splitlines()[0] == f"run synth_source_only: 5 iterations, writing to {tmp_path / 'run'}"


def test_the_command_line_parses_without_importing_torch() -> None:
    probe = "import sys; from drsl.cli import build_parser; build_parser().format_help(); sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", probe], check=False).returncode == 0


def test_demo_refuses_a_benchmark_made_with_another_seed(tmp_path, capsys):
    """The demo never trains on data made with other settings: one line naming --overwrite, exit 2."""
    data = tmp_path / "demo" / "data"
    data.mkdir(parents=True)
    (data / "manifest.json").write_text(json.dumps({"seed": 0, "counts": {"source": 400}}))
    assert main(["demo", "--out", str(tmp_path / "demo"), "--seed", "3"]) == 2
    err = capsys.readouterr().err
    assert "seed 0" in err and "--overwrite" in err and "Traceback" not in err


def test_demo_refuses_a_benchmark_made_with_another_shift(tmp_path, capsys):
    """A demo folder made with another preset (an old default) is not reused silently."""
    from drsl.demo import DEMO_IMAGES

    data = tmp_path / "demo" / "data"
    data.mkdir(parents=True)
    counts = {split.removeprefix("num_"): n for split, n in DEMO_IMAGES.items()}
    (data / "manifest.json").write_text(json.dumps({"seed": 0, "counts": counts}))  # no preset recorded: hard
    assert main(["demo", "--out", str(tmp_path / "demo")]) == 2
    err = capsys.readouterr().err
    assert "shift 'hard'" in err and f"shift '{DEFAULT_SHIFT}'" in err and "Traceback" not in err


def test_demo_runs_the_equal_budget_control_as_long_as_the_mixing_host(tmp_path):
    """The demo's control row trains on source only, from the same start, for the mixing host's schedule."""
    from drsl.bench.variants import VARIANTS, synth_config
    from drsl.demo import DEMO_ITERATIONS, DEMO_METHODS

    assert "source_only_continued" in DEMO_METHODS and DEMO_ITERATIONS["source_only_continued"] == DEMO_ITERATIONS["mix"]
    control = VARIANTS["source_only_continued"]
    config = synth_config(control.config, tmp_path, tmp_path / "run", 0, list(control.overrides))
    assert config.adapt.method == "source_only"


def test_fusion_names_agree_across_cli_config_and_fuse():
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    fusion = next(a for a in sub.choices["pseudo-label"]._actions if a.dest == "fusion")
    literal = typing.get_type_hints(PseudoLabelConfig)["fusion"]
    assert list(fusion.choices) == list(FUSIONS) == list(typing.get_args(literal))
