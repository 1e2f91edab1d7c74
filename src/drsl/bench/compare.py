"""The method comparison on the generated benchmark (``drsl bench compare``).

Source-only and oracle are trained for every seed; CBST, DRSL and its ablations all start from the
ONE shared source-only checkpoint (the first seed's, or a given one) and are run for every seed,
or, with ``source_per_seed``, each seed's adaptation starts from that seed's own source-only run.
Every run is a normal run directory, skipped when its ``eval.json`` already exists, so an
interrupted comparison resumes where it stopped; a folder holding a run of another config (other
overrides, a packaged config changed since) is refused, never reported as the run asked for.
Output: ``results.json`` and a Markdown table ``results.md``.
"""

from __future__ import annotations

import json
import platform
import time
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from drsl.bench.variants import CONTROL, DEFAULT_VARIANTS, NETWORKS, VARIANTS, Variant, synth_config
from drsl.config import Config
from drsl.errors import RunDirError
from drsl.fileio import atomic_write_json, atomic_write_text


@dataclass
class Plan:
    """What to run: variants, seeds, data, output folder, extra overrides for every run,
    optionally an existing source-only checkpoint to adapt from (instead of training one) or
    ``source_per_seed`` (each seed adapts from its own source-only run), optionally the shift
    preset the data must have (generated with it when missing), and the network (a key of
    :data:`NETWORKS`: which packaged config folder the variants come from)."""

    out: Path
    data_root: Path
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    variants: list[str] = field(default_factory=lambda: list(DEFAULT_VARIANTS))
    overrides: list[str] = field(default_factory=list)
    source_checkpoint: Path | None = None
    shift: str | None = None
    network: str = "light"
    source_per_seed: bool = False


def run_dir(plan: Plan, variant: str, seed: int) -> Path:
    """Where one run lives."""
    return plan.out / "runs" / variant / f"seed{seed}"


def adaptation_start(plan: Plan, seed: int) -> Path:
    """The source-only checkpoint the adaptation runs of ``seed`` start from."""
    if plan.source_checkpoint is not None:
        return plan.source_checkpoint
    return run_dir(plan, "source_only", seed if plan.source_per_seed else plan.seeds[0]) / "checkpoints" / "latest.pt"


def run_one(plan: Plan, variant: Variant, seed: int) -> dict[str, Any]:
    """Train one (variant, seed) unless it already finished; returns its record."""
    from drsl.training import read_eval, run_training

    work = run_dir(plan, variant.name, seed)
    timing = work / "wall_time.json"
    extra = [*variant.overrides, *plan.overrides]
    if variant.adapts:
        extra.append(f"init_checkpoint={adaptation_start(plan, seed)}")
    config = synth_config(variant.config, plan.data_root, work, seed, extra, NETWORKS[plan.network])
    check_same_run(config)
    if not (work / "eval.json").is_file():
        start = time.perf_counter()
        run_training(config, resume="auto", device="cpu")
        atomic_write_json(timing, {"seconds": time.perf_counter() - start})
    summary = read_eval(work)
    return {
        "variant": variant.name,
        "seed": seed,
        "miou": summary["miou"],
        "per_class_iou": summary["per_class_iou"],
        "seconds": json.loads(timing.read_text())["seconds"] if timing.is_file() else None,
        "pseudo_labels": pseudo_label_rounds(work),
    }


def check_same_run(config: Config) -> None:
    """Refuse a run folder that holds a run of another config (an earlier comparison with other
    overrides, or a packaged config changed since): its result is not the one asked for."""
    from drsl.data.classes import bind_class_set
    from drsl.engine.run_dir import changes_from_recorded, describe_changes, recorded_config

    bind_class_set(config)  # the recorded config has the class set's values filled in
    changes = changes_from_recorded(recorded_config(config.work_dir), config)
    if changes:
        raise RunDirError(
            f"{config.work_dir} holds a run of another config ({describe_changes(changes)}): it is not "
            "the run asked for; choose another --out, or delete that folder to run it again"
        )


def pseudo_label_rounds(work: Path) -> list[dict[str, Any]]:
    """Precision and coverage of the pseudo-labels against the held-back target-train labels: per
    round of the rounds host (with its portion), and the EMA teacher's at the end of a teacher
    host (round "teacher", with its selection rule)."""
    rounds = []
    for folder in sorted((work / "pseudo_labels").glob("round_*"), key=lambda p: int(p.name[6:])):
        quality = folder / "quality.json"
        manifest = folder / "manifest.json"
        if quality.is_file() and manifest.is_file():
            q, m = json.loads(quality.read_text()), json.loads(manifest.read_text())
            rounds.append({"round": m["round"], "portion": m["portion"],
                           "precision": q["precision"], "coverage": q["coverage"]})
    teacher = work / "pseudo_labels" / "teacher" / "quality.json"
    if teacher.is_file():
        q = json.loads(teacher.read_text())
        rounds.append({"round": "teacher", "rule": q["rule"], "precision": q["precision"], "coverage": q["coverage"]})
    return rounds


def _mean_std(values: list[float]) -> tuple[float, float]:
    array = np.array(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if len(array) > 1 else 0.0


def aggregate(records: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and spread over seeds for every variant."""
    table: dict[str, Any] = {}
    for name in dict.fromkeys(r["variant"] for r in records):
        rows = [r for r in records if r["variant"] == name]
        miou = [100 * r["miou"]["19"] for r in rows]
        per_class = {
            c: _mean_std([100 * (r["per_class_iou"][c] or 0.0) for r in rows])[0] for c in rows[0]["per_class_iou"]
        }
        rounds: dict[int | str, list[dict[str, Any]]] = {}
        for r in rows:
            for pl in r["pseudo_labels"]:
                rounds.setdefault(pl["round"], []).append(pl)
        table[name] = {
            "seeds": [r["seed"] for r in rows],
            "miou19": _mean_std(miou),
            "miou16": _mean_std([100 * r["miou"]["16"] for r in rows]),
            "miou19_per_seed": miou,
            "per_class": per_class,
            "seconds": _mean_std([r["seconds"] for r in rows if r["seconds"] is not None] or [0.0]),
            "pseudo_labels": {
                k: {
                    "precision": _mean_std([100 * p["precision"] for p in v]),
                    "coverage": _mean_std([100 * p["coverage"] for p in v]),
                }
                for k, v in rounds.items()  # rounds in order, then the teacher
            },
        }
    return table


def paired_differences(table: dict[str, Any], name: str, base: str) -> dict[int, float]:
    """``name`` minus ``base`` (mIoU 19) for every seed both rows ran."""
    base_by_seed = dict(zip(table[base]["seeds"], table[base]["miou19_per_seed"]))
    return {seed: value - base_by_seed[seed]
            for seed, value in zip(table[name]["seeds"], table[name]["miou19_per_seed"]) if seed in base_by_seed}


def _paired_line(table: dict[str, Any], name: str, base: str) -> str:
    differences = paired_differences(table, name, base)
    mean = f"{np.mean(list(differences.values())):+.1f} mIoU" if differences else "no shared seed"
    per_seed = ", ".join(f"seed {seed} {value:+.2f}" for seed, value in differences.items())
    return f"- {name} − {base}: {mean}" + (f" ({per_seed})" if per_seed else "")


def markdown(table: dict[str, Any], command: str, shift: str, network: str = "light",
             source_per_seed: bool = False) -> str:
    """The comparison as Markdown: summary, gap closed, pseudo-label quality, per-class IoU."""
    start = "each seed's own source-only model" if source_per_seed else "one shared source-only model"
    lines = [
        f"Command: `{command}`  ",
        f"Data: the generated benchmark, shift preset `{shift}`; network: {network} "
        f"(`{NETWORKS[network]}/*` configs); adaptation starts from {start}  ",
        f"Machine: {platform.machine()}, {platform.processor() or 'CPU'}; date {date.today().isoformat()}",
        "",
        "| method | target-val mIoU(19) mean ± std | seeds | per seed | wall time / run (s) |",
        "|---|---|---|---|---|",
    ]
    for name, row in table.items():
        mean, std = row["miou19"]
        per_seed = ", ".join(f"{v:.1f}" for v in row["miou19_per_seed"])
        lines.append(f"| {name} | {mean:.1f} ± {std:.1f} | {len(row['seeds'])} | {per_seed} | {row['seconds'][0]:.0f} |")
    if "source_only" in table and "oracle" in table:
        low, high = table["source_only"]["miou19"][0], table["oracle"]["miou19"][0]
        lines += ["", f"Source-only to oracle gap: {high - low:.1f} mIoU. Share of the gap closed:", ""]
        for name, row in table.items():
            if name not in ("source_only", "oracle") and high > low:
                lines.append(f"- {name}: {100 * (row['miou19'][0] - low) / (high - low):.0f}%")
    if CONTROL in table:
        lines += ["", "Gain over the equal-budget control (source-only trained as long from the same start):", ""]
        lines += [_paired_line(table, name, CONTROL) for name in table
                  if VARIANTS[name].adapts and name != CONTROL]
    pairs = [(name, host) for name in table if (host := VARIANTS[name].host) is not None and host in table]
    if pairs:
        lines += ["", "The regulariser's own contribution (DRSL row minus its host, seed by seed):", ""]
        lines += [_paired_line(table, name, host) for name, host in pairs]
    lines += ["", "Pseudo-label quality against the held-back target-train labels (mean over seeds):", "",
              "| method | round | precision % | coverage % |", "|---|---|---|---|"]
    for name, row in table.items():
        for round_index, pl in row["pseudo_labels"].items():
            lines.append(
                f"| {name} | {round_index} | {pl['precision'][0]:.1f} ± {pl['precision'][1]:.1f} "
                f"| {pl['coverage'][0]:.1f} ± {pl['coverage'][1]:.1f} |"
            )
    names = next(iter(table.values()))["per_class"] if table else {}
    present = [c for c in names if any(row["per_class"][c] > 0 for row in table.values())]
    lines += ["", "Per-class IoU (mean over seeds):", "",
              "| method | " + " | ".join(present) + " |", "|---|" + "---|" * len(present)]
    for name, row in table.items():
        lines.append(f"| {name} | " + " | ".join(f"{row['per_class'][c]:.1f}" for c in present) + " |")
    return "\n".join(lines) + "\n"


def prepare_data(plan: Plan) -> str:
    """Generate the benchmark if it is missing; return its shift preset (checked against the plan's)."""
    from drsl.data.errors import DataError
    from drsl.data.synth import generate_benchmark
    from drsl.data.synth.shifts import DEFAULT_SHIFT, get_shift, recorded_shift

    if plan.shift is not None:
        get_shift(plan.shift)
    manifest = plan.data_root / "manifest.json"
    if not manifest.is_file():
        generate_benchmark(plan.data_root, seed=0, workers=2, progress=True, shift=plan.shift or DEFAULT_SHIFT)
    shift = recorded_shift(json.loads(manifest.read_text()))
    if plan.shift is not None and shift != plan.shift:
        raise DataError(f"{manifest}: the data has shift {shift!r}, not {plan.shift!r}; "
                        "generate it again or pass another --data")
    return shift


def run_comparison(plan: Plan, command: str) -> dict[str, Any]:
    """Run every (variant, seed) in order (source-only first) and write the tables."""
    shift = prepare_data(plan)
    order = sorted(plan.variants, key=lambda v: v != "source_only")
    if plan.source_checkpoint is None and "source_only" not in order and any(VARIANTS[v].adapts for v in order):
        order.insert(0, "source_only")
    records = []
    for name in order:
        seeds = plan.seeds if name in plan.variants or plan.source_per_seed else plan.seeds[:1]
        for seed in seeds:
            records.append(run_one(plan, VARIANTS[name], seed))
    table = aggregate([r for r in records if r["variant"] in plan.variants])
    atomic_write_json(plan.out / "results.json",
                      {"records": records, "table": table, "command": command, "shift": shift,
                       "network": plan.network})
    atomic_write_text(plan.out / "results.md", markdown(table, command, shift, plan.network, plan.source_per_seed))
    return table
