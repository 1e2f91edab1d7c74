"""The main job on the built-in benchmark: generate it (the default shift preset), train
source-only, continue from that checkpoint with the equal-budget control (more source-only
training), the mixing host and DRSL in the mixing host, evaluate each, and write a comparison
report. No downloads."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from drsl.bench.variants import CONTROL, VARIANTS, synth_config
from drsl.data.synth import generate_benchmark
from drsl.data.synth.shifts import DEFAULT_SHIFT, recorded_shift
from drsl.errors import RunDirError
from drsl.training import run_training
from drsl.viz.report import write_report

log = logging.getLogger("drsl")


#: Shorter schedules and a smaller benchmark than the packaged configs and `drsl bench compare`, so
#: that the whole job, install included, fits in 10 minutes on 2 CPU cores (about 6, BENCHMARKS.md).
#: At this budget the adaptation rows end level with the control; the schedules where they pull
#: ahead (1200+ iterations from a 1500-iteration start) take about three times the budget
#: (docs/experiments.md, "The main job's margins").
#: The rows that start from the source-only model, in the report's order (`drsl bench compare`
#: variants): the equal-budget control (source-only continued for the mixing host's schedule), then
#: the best host (mixing) without and with the DRSL regulariser. CBST (the rounds host) is left to
#: `drsl bench compare`: at the earlier demo schedule it ended below source-only and was the slowest
#: row (BENCHMARKS.md, "The main job and the test suite").
DEMO_METHODS = (CONTROL, "mix", "drsl_mix")
DEMO_ITERATIONS = {"source_only": 500, "mix": 200, "drsl_mix": 200}
DEMO_ITERATIONS[CONTROL] = DEMO_ITERATIONS["mix"]
DEMO_IMAGES = {"num_source": 400, "num_target_train": 400, "num_target_val": 100}


def _demo_data(data_root: Path, seed: int, overwrite: bool) -> None:
    """Generate the demo's benchmark, or reuse it when it was made with the same seed, sizes and shift."""
    manifest = data_root / "manifest.json"
    if manifest.is_file() and not overwrite:
        made = json.loads(manifest.read_text())
        counts = {split.removeprefix("num_"): n for split, n in DEMO_IMAGES.items()}
        if made.get("seed") != seed or made.get("counts") != counts or recorded_shift(made) != DEFAULT_SHIFT:
            raise RunDirError(
                f"{manifest}: the benchmark there was made with seed {made.get('seed')}, counts "
                f"{made.get('counts')} and shift {recorded_shift(made)!r}, the demo wants seed {seed}, "
                f"{counts} and shift {DEFAULT_SHIFT!r}: pass --overwrite to replace the demo folder, "
                "or choose another --out"
            )
        return
    generate_benchmark(data_root, seed=seed, workers=2, progress=True, overwrite=overwrite, **DEMO_IMAGES)


def run_demo(out: Path, seed: int = 0, overwrite: bool = False) -> dict[str, float]:
    """Run the whole pipeline under ``out``; returns target-val mIoU (19 classes) per method.

    A finished demo in ``out`` is reused as it is; ``overwrite`` replaces one made otherwise.
    """
    data_root = out / "data"
    _demo_data(data_root, seed, overwrite)
    results: dict[str, float] = {}
    source_dir = out / "source_only"
    iterations = f"train.iterations={DEMO_ITERATIONS['source_only']}"
    summary = run_training(
        synth_config("source_only", data_root, source_dir, seed, [iterations]), resume="auto", overwrite=overwrite
    )
    results["source_only"] = summary["miou"]["19"]
    init = source_dir / "checkpoints" / "latest.pt"
    for method in DEMO_METHODS:
        variant = VARIANTS[method]
        extra = [*variant.overrides, f"init_checkpoint={init}", f"train.iterations={DEMO_ITERATIONS[method]}"]
        config = synth_config(variant.config, data_root, out / method, seed, extra)
        results[method] = run_training(config, resume="auto", overwrite=overwrite)["miou"]["19"]
    report = out / "report.html"
    write_report([source_dir, *(out / method for method in DEMO_METHODS)], report)
    log.info("report written to %s", report)
    control = results[CONTROL]
    for method, miou in results.items():
        margin = "" if method in ("source_only", CONTROL) else f"  ({100 * (miou - control):+.1f} over the control)"
        print(f"{method:22s} target-val mIoU(19) = {100 * miou:.1f}%{margin}")
    return results
