"""The comparison report: one self-contained HTML page (inline CSS and SVG, PNG data URIs)
summarising runs: final mIoU, per-class IoU, training curves, pseudo-label quality per round,
confusion matrices and sample predictions. Missing pieces are reported in the page, not raised."""

from __future__ import annotations

import base64
import io
import math
import os
from collections.abc import Sequence
from datetime import datetime
from html import escape
from pathlib import Path

import numpy as np
from PIL import Image

from drsl.fileio import atomic_write_text
from drsl.viz.runs import RunData, is_number, load_run
from drsl.viz.samples import SampleGroup, sample_predictions
from drsl.viz.svg import Series, bar_chart, heatmap, xy_chart

RUN_COLORS = ("#3366cc", "#e8702a", "#2ca02c", "#c23b6e", "#8c6bb1", "#17a2b8", "#8c564b", "#7f7f7f")
#: Sample thumbnails are at most THUMB_WIDTH wide, and a row of them at most SAMPLES_WIDTH.
THUMB_WIDTH = 300
SAMPLES_WIDTH = 1250
MAX_CURVE_POINTS = 400
UNITS = "Scores here are percent; eval.json and the Python API hold the same scores as fractions in [0, 1]."

CSS = """
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;background:#f4f5f7;color:#1d1f23}
main{max-width:1360px;margin:0 auto;padding:20px 28px 40px}
h1{font-size:26px;margin:8px 0 2px}h2{font-size:19px;margin:0 0 12px}h3{font-size:14px;margin:6px 0}
.sub{color:#666;font-size:13px;margin-bottom:18px}
section{background:#fff;border-radius:8px;box-shadow:0 1px 3px rgba(0,0,0,.08);padding:16px 20px;margin:16px 0}
table{border-collapse:collapse;font-size:13px}th,td{padding:4px 10px;border-bottom:1px solid #eceef1;text-align:right}
th{background:#f7f8fa;font-weight:600}td.l,th.l{text-align:left}td.best{font-weight:700}
.swatch{display:inline-block;width:11px;height:11px;border-radius:2px;margin-right:5px;vertical-align:-1px}
.legend span{margin-right:14px;font-size:13px;white-space:nowrap}
.grid{display:flex;flex-wrap:wrap;gap:18px;align-items:flex-start}.card h3{margin-bottom:4px}
.note{color:#a15c00;font-size:13px}.muted{color:#888;font-size:13px}.scroll{overflow-x:auto}
.samples td{padding:3px;border:none;vertical-align:top}.samples img{display:block;border-radius:3px}
.samples th{background:none;text-align:center}
"""


def png_data_uri(array: np.ndarray) -> str:
    """A ``data:image/png;base64,...`` URI of an HxWx3 uint8 image."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def thumbnail(array: np.ndarray, width: int, smooth: bool) -> np.ndarray:
    """``array`` scaled to ``width`` pixels wide (bilinear for photos, nearest for labels)."""
    image = Image.fromarray(array)
    height = max(1, round(image.height * width / image.width))
    resample = Image.Resampling.BILINEAR if smooth else Image.Resampling.NEAREST
    return np.asarray(image.resize((width, height), resample))


def _percent(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{100 * value:.1f}"


def _best(value: float | None, best: float | None, compared: int) -> str:
    """The cell attribute marking the best value among several runs (as displayed, above 0.0)."""
    if compared < 2 or value is None or best is None:
        return ""
    shown = round(100 * value, 1)
    return " class=best" if shown == round(100 * best, 1) and shown > 0 else ""


def _swatch(color: str) -> str:
    return f"<i class='swatch' style='background:{color}'></i>"


def _rgb(color: Sequence[int]) -> str:
    return "rgb({},{},{})".format(*(int(c) for c in color))


def _legend(items: Sequence[tuple[str, str]]) -> str:
    """A row of colour swatches with names, from (name, colour) pairs."""
    spans = "".join(f"<span>{_swatch(color)}{escape(name)}</span>" for name, color in items)
    return f"<div class='legend'>{spans}</div>"


def _notes(lines: Sequence[str], kind: str = "note") -> str:
    """Paragraphs of warnings (``note``) or of remarks (``muted``)."""
    return "".join(f"<p class='{kind}'>{escape(line)}</p>" for line in lines)


def _section(title: str, body: str) -> str:
    return f"<section><h2>{escape(title)}</h2>{body}</section>"


def _table(head: Sequence[str], rows: Sequence[str], css_class: str = "") -> str:
    """A table from header cells (a leading "<" marks a left-aligned one) and ready ``<tr>`` rows."""
    cells = "".join(f"<th class=l>{h[1:]}</th>" if h.startswith("<") else f"<th>{h}</th>" for h in head)
    return f"<table class='{css_class}'><tr>{cells}</tr>{''.join(rows)}</table>"


def run_labels(runs: Sequence[RunData]) -> list[str]:
    """A distinct display label per run: its name, qualified by its folder when names repeat."""
    names = [run.name for run in runs]
    labels = [name if names.count(name) == 1 else f"{name} ({run.path.name})" for name, run in zip(names, runs)]
    return [label if labels.count(label) == 1 else f"{label} #{i + 1}" for i, label in enumerate(labels)]


def _color(runs: dict[str, RunData], label: str) -> str:
    return RUN_COLORS[list(runs).index(label) % len(RUN_COLORS)]


def _subset_keys(runs: Sequence[RunData]) -> list[str]:
    """Every evaluation subset key of the runs (e.g. "19", "16", "13"), in order of appearance."""
    return list(dict.fromkeys(key for run in runs for key in (run.eval or {}).get("miou", {})))


def _origin(run: RunData, runs: dict[str, RunData]) -> str | None:
    """The label of the run whose checkpoint ``run`` started from (its path if not in the report)."""
    if run.init_checkpoint is None:
        return None
    folder = run.init_checkpoint.resolve().parent.parent
    return next((label for label, other in runs.items() if other.path.resolve() == folder), str(run.init_checkpoint))


def _baseline(run: RunData, runs: dict[str, RunData]) -> RunData | None:
    """The source-only run an adaptation run is compared with: the one it started from, else the
    first source-only run with the same class set and headline subset."""
    if run.method in ("source-only", "unknown"):
        return None
    origin = runs.get(_origin(run, runs) or "")
    if origin is not None and origin.method == "source-only":
        return origin
    return next((other for other in runs.values() if other.method == "source-only"
                 and other.classes.names == run.classes.names and other.headline == run.headline), None)


def _change(run: RunData, baseline: RunData | None) -> str:
    """The headline mIoU change of ``run`` against ``baseline`` in percentage points."""
    if baseline is None or run.miou(run.headline) is None or baseline.miou(run.headline) is None:
        return "–"
    return f"{100 * (run.miou(run.headline) - baseline.miou(run.headline)):+.1f}"  # type: ignore[operator]


def summary_section(runs: dict[str, RunData]) -> str:
    """Method, starting checkpoint, iterations, the mIoU of every evaluation subset, the change
    against source-only and pixel accuracy of each run, best values in bold."""
    keys = _subset_keys(list(runs.values()))
    best = {k: max((r.miou(k) for r in runs.values() if r.miou(k) is not None), default=None) for k in keys}
    rows = []
    for label, run in runs.items():
        cells = "".join(f"<td{_best(run.miou(k), best[k], len(runs))}>{_percent(run.miou(k))}</td>" for k in keys)
        baseline = _baseline(run, runs)
        versus = "" if baseline is None else f" <span class=muted>vs {escape(_label_of(baseline, runs))}</span>"
        notes = escape("; ".join(run.notes)) or "<span class=muted>complete</span>"
        rows.append(
            f"<tr><td class=l>{_swatch(_color(runs, label))}{escape(label)}</td><td class=l>{escape(run.method)}</td>"
            f"<td class=l>{escape(_origin(run, runs) or '–')}</td><td class=l>{escape(run.classes.name)}</td>"
            f"<td>{'–' if run.iterations is None else run.iterations}</td>{cells}"
            f"<td class=l>{_change(run, baseline)}{versus}</td>"
            f"<td>{_percent((run.eval or {}).get('pixel_accuracy'))}</td><td class=l>{escape(str(run.path))}</td>"
            f"<td class='l note'>{notes}</td></tr>"
        )
    head = ["<run", "<method", "<started from", "<classes", "iterations", *(f"mIoU {k}" for k in keys),
            "<change vs source-only (points)", "pixel acc.", "<folder", "<notes"]
    units = _notes([UNITS], "muted")
    return _section("Summary (target validation, %)", f"<div class=scroll>{_table(head, rows)}</div>{units}")


def _label_of(run: RunData, runs: dict[str, RunData]) -> str:
    """The display label of ``run`` in ``runs``."""
    return next(label for label, other in runs.items() if other is run)


def _same_classes(runs: dict[str, RunData]) -> tuple[dict[str, RunData], list[str]]:
    """The runs sharing the first run's class set, and notes naming the others."""
    first = next(iter(runs.values())).classes if runs else None
    kept = {label: run for label, run in runs.items() if first is not None and run.classes.names == first.names}
    notes = [f"{label}: another class set ({run.classes.name}), not in this comparison"
             for label, run in runs.items() if label not in kept]
    return kept, notes


def per_class_section(runs: dict[str, RunData]) -> str:
    """Grouped bars and a table of per-class IoU (percent) by run (runs of the first class set)."""
    evaluated = {label: run for label, run in runs.items() if run.eval}
    if not evaluated:
        return _section("Per-class IoU", _notes(["no run has an eval.json"]))
    evaluated, other_sets = _same_classes(evaluated)
    classes = next(iter(evaluated.values())).classes
    ious = {label: [run.eval.get("per_class_iou", {}).get(name) for name in classes.names]  # type: ignore[union-attr]
            for label, run in evaluated.items()}
    series = [
        Series(label, _color(runs, label), [None if v is None else 100 * v for v in values])
        for label, values in ious.items()
    ]
    chart = bar_chart(classes.names, series, "IoU (%)")
    rows = []
    for index, name in enumerate(classes.names):
        values = [ious[label][index] for label in ious]
        top = max((v for v in values if v is not None), default=None)
        cells = "".join(f"<td{_best(v, top, len(values))}>{_percent(v)}</td>" for v in values)
        rows.append(f"<tr><td class=l>{_swatch(_rgb(classes.colors[index]))}{escape(name)}</td>{cells}</tr>")
    for key in _subset_keys(list(evaluated.values())):
        cells = "".join(f"<td><b>{_percent(run.miou(key))}</b></td>" for run in evaluated.values())
        rows.append(f"<tr><td class=l><b>mIoU {key}</b></td>{cells}</tr>")
    table = _table(["<class", *(escape(label) for label in ious)], rows, "per-class")
    missing = [f"{label}: no eval.json" for label in runs if not runs[label].eval]
    legend = _legend([(label, _color(runs, label)) for label in evaluated])
    body = f"<div class=grid><div class=card>{legend}{chart}</div><div class=card>{table}</div></div>"
    return _section("Per-class IoU", body + _notes(missing + other_sets))


def _thin(points: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """At most about MAX_CURVE_POINTS evenly spaced points, the last one always kept."""
    kept = points[:: max(1, math.ceil(len(points) / MAX_CURVE_POINTS))]
    return kept if kept[-1] == points[-1] else [*kept, points[-1]]


#: Training curves: one chart per quantity, each comparing the runs that log it.
LOSS_CURVES = (
    ("train/loss_source", "source segmentation loss (cross-entropy)"),
    ("train/loss_target", "target pseudo-label loss (cross-entropy)"),
    ("train/drsl/mmdl", "DRSL: MMDL loss"),
    ("train/drsl/sma", "DRSL: mode alignment (SMA) loss"),
)


def _curve_card(runs: dict[str, RunData], key: str, title: str, axis: str, events: list[tuple[float, str]]) -> str:
    """A chart of metrics key ``key`` for every run that logs it ("" when none does)."""
    series = [Series(label, _color(runs, label), points=_thin(run.series(key)))
              for label, run in runs.items() if run.series(key)]
    if not series:
        return ""
    chart = xy_chart(series, "iteration", axis, events=events)
    return f"<div class=card><h3>{escape(title)}</h3>{chart}</div>"


def curves_section(runs: dict[str, RunData]) -> str:
    """Validation mIoU and each training loss term over iterations (from metrics.jsonl), one
    quantity per chart, with the start of each pseudo-label round marked."""
    round_starts = {
        int(step): f"round {i}"
        for run in runs.values() for i, (step, _) in enumerate(run.series("pseudo_labels/portion"))
    }
    events = sorted(round_starts.items())
    keys = list(dict.fromkeys(run.headline for run in runs.values() if run.headline))
    cards = [_curve_card(runs, f"val/mIoU{k}", f"target-val mIoU ({k} classes)", "mIoU (%)", events) for k in keys]
    cards += [_curve_card(runs, key, title, "loss", events) for key, title in LOSS_CURVES]
    notes = [f"{label}: no training losses in metrics.jsonl" for label, run in runs.items()
             if not any(run.series(key) for key, _ in LOSS_CURVES)]
    single = [label for label, run in runs.items() if run.headline and len(run.series(f"val/mIoU{run.headline}")) == 1]
    if single:
        notes.append(f"evaluated only once ({', '.join(single)}): set train.eval_every to log mIoU during training")
    legend = _legend([(label, _color(runs, label)) for label in runs])
    origins = [f"{label} starts from {run.init_checkpoint} (its iteration 0)"
               for label, run in runs.items() if run.init_checkpoint]
    body = legend + f"<div class=grid>{''.join(cards)}</div>" + _notes(origins, "muted") + _notes(notes)
    return _section("Training curves", body)


def pseudo_label_section(runs: dict[str, RunData]) -> str:
    """Pseudo-label precision against coverage, round by round, and a table of every round."""
    with_rounds = {label: run for label, run in runs.items() if run.rounds}
    notes = [f"{label}: no pseudo-labels ({run.method})" for label, run in runs.items() if not run.rounds]
    if not with_rounds:
        return _section("Pseudo-labels per round", _notes(notes or ["no pseudo-labels"]))
    series, rows = [], []
    for label, run in with_rounds.items():
        measured = [r for r in run.rounds if is_number(r.precision) and is_number(r.coverage)]
        if measured:
            points, names = [(r.coverage, r.precision) for r in measured], [f"r{r.index}" for r in measured]
            series.append(Series(label, _color(runs, label), points=points, point_labels=names))
        else:
            notes.append(f"{label}: pseudo-labels not measured against truth (no quality.json)")
        for r in run.rounds:
            rows.append(
                f"<tr><td class=l>{escape(label)}</td><td>{r.index}</td><td>{_percent(r.portion)}</td>"
                f"<td class=l>{escape(str(r.fusion))}</td><td>{'–' if r.num_images is None else r.num_images}</td>"
                + "".join(f"<td>{_percent(v)}</td>" for v in (r.kept_fraction, r.precision, r.coverage)) + "</tr>"
            )
    head = ["<run", "round", "portion %", "<fusion", "images", "kept/pred. %", "precision %", "coverage %"]
    chart = ""
    if series:
        chart = ("<div class=card><h3>precision vs coverage (rN = round N)</h3>"
                 + xy_chart(series, "coverage (kept pixels / labelled pixels)", "precision") + "</div>")
    table = f"<div class=card>{_table(head, rows)}</div>"
    legend = _legend([(label, _color(runs, label)) for label in with_rounds])
    body = f"{legend}<div class=grid>{chart}{table}{_class_precision(runs)}</div>"
    return _section("Pseudo-labels per round", body + _notes(notes))


def _class_precision(runs: dict[str, RunData]) -> str:
    """Bars of each run's per-class pseudo-label precision in its last round ("" if unmeasured)."""
    measured, _ = _same_classes({label: run for label, run in runs.items() if run.rounds and run.rounds[-1].per_class_precision})
    series = [
        Series(label, _color(runs, label), [100 * v if is_number(v) else None for v in run.rounds[-1].per_class_precision])
        for label, run in measured.items()
    ]
    if not series:
        return ""
    names = next(iter(measured.values())).classes.names
    return f"<div class=card><h3>per-class precision of the last round</h3>{bar_chart(names, series, 'precision (%)')}</div>"


def confusion_section(runs: dict[str, RunData]) -> str:
    """The row-normalised confusion matrix (ground truth rows) of each evaluated run."""
    cards, notes = [], []
    for label, run in runs.items():
        matrix = (run.eval or {}).get("confusion_matrix")
        if not matrix:
            notes.append(f"{label}: no confusion matrix (no eval.json)")
            continue
        counts = np.asarray(matrix, dtype=np.float64)
        names = run.classes.names
        if counts.shape[0] != len(names):
            notes.append(f"{label}: confusion matrix of {counts.shape[0]} classes, class set {run.classes.name} has {len(names)}")
            continue
        columns = list(names)
        if counts.shape[1] > len(names) and counts[:, len(names):].any():
            columns.append("(none)")
        counts = counts[:, : len(columns)]
        totals = np.asarray(matrix, dtype=np.float64).sum(1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            normalised = np.where(totals > 0, counts / np.maximum(totals, 1), np.nan)
        cards.append(f"<div class=card><h3>{escape(label)}</h3>{heatmap(normalised, names, columns)}</div>")
    body = "<p class=muted>rows: ground truth, columns: prediction; each row sums to 100%.</p>"
    return _section("Confusion matrices", body + f"<div class=grid>{''.join(cards)}</div>" + _notes(notes))


def samples_section(groups: Sequence[SampleGroup], missing: dict[str, str]) -> str:
    """Image | ground truth | prediction of each run, on a few validation images."""
    tables = []
    legends: dict[tuple[str, ...], str] = {}
    for group in groups:
        colorize = group.classes.colorize
        legends.setdefault(group.classes.names, _legend(list(zip(group.classes.names, map(_rgb, group.classes.colors)))))
        labels = list(group.rows[0].predictions) if group.rows else []
        width = min(THUMB_WIDTH, SAMPLES_WIDTH // (len(labels) + 2) - 8)
        rows = []
        for row in group.rows:
            cells = [thumbnail(row.image, width, True), thumbnail(colorize(row.truth), width, False)]
            cells += [thumbnail(colorize(row.predictions[label]), width, False) for label in labels]
            images = "".join(f"<td><img alt='{escape(row.name)}' src='{png_data_uri(c)}'></td>" for c in cells)
            rows.append(f"<tr>{images}</tr>")
        table = _table(["image", "ground truth", *(escape(label) for label in labels)], rows, "samples")
        tables.append(f"<h3>{escape(group.title)}</h3>{legends[group.classes.names]}<div class=scroll>{table}</div>")
    notes = [f"{label}: no sample predictions: {reason}" for label, reason in missing.items()]
    return _section("Sample predictions", "".join(tables) + _notes(notes))


def render_report(runs: Sequence[RunData], groups: Sequence[SampleGroup], missing_samples: dict[str, str]) -> str:
    """The whole HTML page."""
    labelled = dict(zip(run_labels(runs), runs))
    sections = [
        summary_section(labelled), per_class_section(labelled), curves_section(labelled),
        pseudo_label_section(labelled), confusion_section(labelled), samples_section(groups, missing_samples),
    ]
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M")
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8><title>drsl report</title>"
        f"<style>{CSS}</style></head><body><main><h1>drsl report</h1>"
        f"<div class=sub>{len(runs)} run(s) compared · generated {stamp}</div>"
        f"{''.join(sections)}</main></body></html>\n"
    )


def default_report_path(run_dirs: Sequence[str | Path]) -> Path:
    """``RUN/report.html`` for one run; for several, ``report.html`` in the folder holding them."""
    folders = [Path(path).resolve() for path in run_dirs]
    if len(folders) == 1:
        return folders[0] / "report.html"
    return Path(os.path.commonpath(folders)) / "report.html"


def write_report(
    run_dirs: Sequence[str | Path], out: str | Path | None = None, samples: int = 3, device: str = "auto"
) -> Path:
    """Write the report of ``run_dirs`` to ``out`` (default: :func:`default_report_path`);
    ``samples`` validation images (0: none)."""
    runs = [load_run(path) for path in run_dirs]
    out = default_report_path(run_dirs) if out is None else out
    groups: list[SampleGroup] = []
    missing: dict[str, str] = {}
    if samples > 0:
        groups, missing = sample_predictions(dict(zip(run_labels(runs), runs)), samples, device)
    atomic_write_text(out, render_report(runs, groups, missing))
    return Path(out)
