"""drsl report: one self-contained HTML page, robust to runs with missing pieces."""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

import pytest

from drsl.commands import report
from drsl.viz.report import write_report
from drsl.viz.runs import load_run
from fixtures import CITYSCAPES19
from test_predict import train_tiny_runs


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return train_tiny_runs(tmp_path_factory.mktemp("runs"))


def assert_self_contained(html: str) -> None:
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"""\b(src|href)\s*=\s*(?!["']?data:)""", html), "only data: URIs may be referenced"


def test_report_compares_runs(runs: dict[str, Path], tmp_path: Path) -> None:
    out = write_report([runs["source_only"], runs["drsl"]], tmp_path / "report.html", samples=2, device="cpu")
    html = out.read_text()
    assert_self_contained(html)
    assert "synth_source_only" in html and "synth_drsl" in html
    assert "class='per-class'" in html and all(name in html for name in CITYSCAPES19.names)
    assert html.count("data:image/png;base64,") == 2 * 4  # 2 images x (image, truth, 2 predictions)
    assert "precision vs coverage" in html and "Confusion matrices" in html
    assert "<svg" in html and "xmlns" not in html


def test_report_handles_missing_pieces(runs: dict[str, Path], tmp_path: Path) -> None:
    partial = tmp_path / "partial"
    shutil.copytree(runs["drsl"], partial)
    (partial / "eval.json").unlink()
    shutil.rmtree(partial / "checkpoints")
    (partial / "pseudo_labels" / "round_1" / "manifest.json").unlink()
    bare = tmp_path / "bare"
    bare.mkdir()
    out = write_report([runs["source_only"], partial, bare], tmp_path / "report.html", samples=1, device="cpu")
    html = out.read_text()
    assert_self_contained(html)
    assert "no eval.json" in html and "no config.yaml" in html and "round_1 is incomplete" in html
    assert "no checkpoints/latest.pt" in html and "bare" in html
    assert load_run(partial).rounds[0].index == 0 and len(load_run(partial).rounds) == 1


def test_missing_run_directory_is_a_clear_error(runs: dict[str, Path], tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    report.add_parser(parser.add_subparsers())
    args = parser.parse_args(["report", str(runs["drsl"]), str(tmp_path / "nope"), "--out", str(tmp_path / "r.html")])
    with pytest.raises(FileNotFoundError, match="nope"):
        report.run(args)
    assert not (tmp_path / "r.html").exists()
    args = parser.parse_args(["report", str(runs["drsl"]), "--out", str(tmp_path / "r.html"), "--samples", "0"])
    assert report.run(args) == 0 and (tmp_path / "r.html").is_file()
