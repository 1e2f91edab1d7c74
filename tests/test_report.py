"""drsl report: one self-contained HTML page, robust to runs with missing pieces."""

from __future__ import annotations

import argparse
import re
import shutil
from pathlib import Path

import pytest

from drsl.commands import report
from drsl.viz.report import write_report
from drsl.viz.runs import RunData, load_run
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
    bare = tmp_path / "bare"  # a run killed as it started: its record only
    bare.mkdir()
    (bare / "run.json").write_text('{"format": 1, "history": [], "state": "running"}')
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


def test_round_labels_never_overlap() -> None:
    from drsl.viz.svg import CHAR_WIDTH, label_rows

    labels = [(100.0, "round 0"), (110.0, "round 1"), (300.0, "round 2"), (305.0, "round 3"), (312.0, "round 4")]
    rows = label_rows(labels)
    assert rows == [0, 1, 0, 1, 2]
    for (x, text), row in zip(labels, rows):
        others = [ox for (ox, _), orow in zip(labels, rows) if orow == row and ox != x]
        assert all(abs(ox - x) > CHAR_WIDTH * len(text) for ox in others)


def test_one_run_report_lands_in_its_folder_with_one_chart_per_loss(runs: dict[str, Path]) -> None:
    out = write_report([runs["drsl"]], samples=0)
    assert out == runs["drsl"].resolve() / "report.html"
    html = out.read_text()
    titles = re.findall(r"<h3>([^<]*loss[^<]*)</h3>", html)
    assert titles == ["source segmentation loss (cross-entropy)", "target pseudo-label loss (cross-entropy)",
                      "DRSL: MMDL loss", "DRSL: mode alignment (SMA) loss"]
    assert "started from" in html and "source_only" in html


@pytest.mark.parametrize(("adapt", "label"), [
    ({"method": "source_only", "host": "rounds"}, "source-only"),
    ({"method": "self_training", "host": "rounds"}, "CBST"),
    ({"method": "cbst", "host": "rounds"}, "CBST"),  # the old name of self_training
    ({"method": "drsl", "host": "online"}, "DRSL (online)"),
    ({"method": "self_training", "host": "mix"}, "mix"),
    ({"method": "cbst", "host": "mix"}, "mix"),
    ({"method": "drsl", "host": "mix"}, "DRSL (mix)"),
    ({}, "unknown"),
])
def test_method_labels_name_the_host(adapt: dict[str, str], label: str) -> None:
    run = RunData(Path("run"), {"adapt": adapt}, None, [], [], [], CITYSCAPES19)
    assert run.method == label
