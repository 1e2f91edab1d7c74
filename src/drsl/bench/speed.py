"""``drsl bench speed``: drsl's training steps, evaluation and pseudo-labelling next to plain PyTorch.

The cases (see :mod:`drsl.bench.cases`: a bare PyTorch step, the source-only/CBST/DRSL
``Trainer.step`` from the packaged GTA5 -> Cityscapes configs, a plain batched forward, the
evaluation and a pseudo-labelling pass) run in one process on the same data, the batch moved to the
device inside every case, with repetitions interleaved (the order rotates every repetition) so that
load from other processes hits every case alike.

Ratios (:data:`RATIOS`) are medians of per-repetition ratios, with their spread: of step times for
training, of time per image for evaluation and pseudo-labelling against the plain forward. Each
training case also reports the operations one of its steps dispatches and how many of them would
make the host wait for a GPU (:mod:`drsl.bench.syncs`). Step peak memory: on CUDA
``torch.cuda.max_memory_allocated`` during one step minus the memory allocated before it; on CPU a
separate process per case builds it, resets the kernel's peak-RSS mark and reports the peak over
two steps minus the RSS before them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from drsl.bench.cases import ALL_CASES, Case, build_cases, make_batch, write_eval_data
from drsl.bench.standalone import report_result, standalone_main
from drsl.bench.syncs import count_syncs
from drsl.commands import options
from drsl.commands.help import add_device
from drsl.engine.distributed import wants_cuda

#: Ratios reported, and the targets they are held to (None: reported only).
RATIOS: dict[str, float | None] = {
    "source_only/floor": 1.05, "cbst/floor": None, "drsl/floor": None, "drsl/cbst": 1.10,
    "evaluation/forward": 1.5, "pseudo_label/forward": 1.5,
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ------------------------------------------------------------------------------------ memory
def _proc_status_mb(key: str) -> float | None:
    """A memory line of /proc/self/status (VmRSS, VmHWM) in MB; None off Linux."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith(f"{key}:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def _child_memory(case: str, args: argparse.Namespace, data: Path) -> dict[str, float]:
    """Peak RSS of a fresh process that builds only ``case`` and runs it (see :func:`child_main`)."""
    plain = {k: v for k, v in vars(args).items() if isinstance(v, (str, int, float, bool, list, type(None)))}
    options = {**plain, "cases": [case], "device": "cpu", "data": str(data)}
    argv = [sys.executable, "-m", "drsl.bench.speed", "--child", json.dumps(options)]
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=1800)
    return json.loads(out.stdout.strip().splitlines()[-1])


def child_main(options: dict[str, Any]) -> int:
    """Build one case, then run it twice; print the resident memory before and the peak during.

    The peak mark is reset after the build, so ``peak_step_mb`` (peak minus resident before the
    steps) is what the steps add: activations, gradients, optimizer state, allocator slack.
    """
    args = argparse.Namespace(**options)
    if args.threads:
        torch.set_num_threads(args.threads)
    case = args.cases[0]
    batch = make_batch(args.batch, tuple(args.crop))
    fn = build_cases(args, torch.device("cpu"), [case], Path(args.data))[case].fn
    before = _proc_status_mb("VmRSS")
    exact = _reset_peak_rss()
    for _ in range(2):
        fn(batch)
    peak = _proc_status_mb("VmHWM") if exact else None
    if peak is None:  # no /proc reset: the process's lifetime peak, imports included
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"resident_before_mb": before, "peak_rss_mb": peak,
                      "peak_step_mb": None if before is None or not exact else peak - before}))
    return 0


# ------------------------------------------------------------------------------------ run
def _spread(values: list[float]) -> dict[str, float]:
    q = np.percentile(values, [25, 50, 75]) if len(values) > 1 else [values[0]] * 3
    return {"median": float(q[1]), "p25": float(q[0]), "p75": float(q[2]), "min": float(min(values)), "max": float(max(values))}


def _ratios(cases: dict[str, Case], times: dict[str, list[float]]) -> dict[str, Any]:
    """The :data:`RATIOS` whose two cases ran: per repetition, then their spread."""
    out = {}
    for key, target in RATIOS.items():
        top, bottom = key.split("/")
        if top in times and bottom in times:
            per_image = cases[top].kind == "image"
            scale = cases[bottom].images / cases[top].images if per_image else 1.0
            per_repeat = [scale * a / b for a, b in zip(times[top], times[bottom])]
            median = statistics.median(per_repeat)
            out[key] = {**_spread(per_repeat), "of": "time per image" if per_image else "step time",
                        "target": target, "met": None if target is None else median <= target}
    return out


def _step_profile(case: Case, batch: Any) -> dict[str, Any]:
    """Operations one call dispatches, and those that would wait for a GPU, by kind."""
    with count_syncs() as counter:
        case.fn(batch)
    return {"ops": counter.ops, "syncs": counter.total, "syncs_by_kind": dict(counter.counts)}


def run_speed_benchmark(args: argparse.Namespace) -> dict[str, Any]:
    """Build every case, time them interleaved and return the results (see module docstring)."""
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if wants_cuda(args.device) else "cpu")
    batch = make_batch(args.batch, tuple(args.crop))
    tmp = tempfile.TemporaryDirectory(prefix="drsl_bench_speed_")
    data = write_eval_data(Path(tmp.name) / "cityscapes", args.eval_images, args.eval_size)
    cases = build_cases(args, device, args.cases, data)
    names = list(cases)
    times: dict[str, list[float]] = {name: [] for name in names}
    rows: dict[str, dict[str, Any]] = {name: {} for name in names}
    for name in names:  # warm-up (allocator, kernel selection), CUDA step peaks, operation counts
        case = cases[name]
        for _ in range(args.warmup):
            case.fn(batch)
        if device.type == "cuda":
            _sync(device)
            before = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            case.fn(batch)
            _sync(device)
            rows[name]["peak_step_mb"] = (torch.cuda.max_memory_allocated(device) - before) / 2**20
        if case.kind == "step":
            rows[name].update(_step_profile(case, batch))
    for repeat in range(args.repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            _sync(device)
            start = time.perf_counter()
            cases[name].fn(batch)
            _sync(device)
            times[name].append(time.perf_counter() - start)
    for name in names:
        spread = _spread(times[name])
        rows[name].update(seconds=spread, images=cases[name].images, kind=cases[name].kind,
                          images_per_s=cases[name].images / spread["median"], state_mb=cases[name].state_megabytes())
    if device.type == "cpu" and args.memory:
        for name in names:
            rows[name].update(_child_memory(name, args, data))
        memory_note = ("CPU: a separate process per case; peak = peak RSS over two steps minus the RSS "
                       "after building the case (activations, gradients, optimizer state)")
    elif device.type == "cuda":
        memory_note = "CUDA: max_memory_allocated during one step minus memory allocated before it"
    else:
        memory_note = "not measured (--no-memory)"
    tmp.cleanup()
    return {
        "config": {
            "configs": "gta5_cityscapes/<method> (packaged)", "backbone": args.backbone,
            "light_width": args.light_width if args.backbone == "light" else None,
            "crop": list(args.crop), "batch": args.batch, "amp": args.amp, "channels_last": args.channels_last,
            "eval_size": list(args.eval_size), "eval_images": args.eval_images, "eval_batch": args.eval_batch,
            "workers": args.workers, "repeats": args.repeats, "warmup": args.warmup,
        },
        "environment": {
            "device": str(device),
            "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "date": time.strftime("%Y-%m-%d"), "argv": sys.argv,
        },
        "cases": rows,
        "ratios": _ratios(cases, times),
        "memory_note": memory_note,
    }


def format_speed(result: dict[str, Any]) -> str:
    """The results as a plain-text table."""
    cfg, env = result["config"], result["environment"]
    lines = [
        f"drsl bench speed: {cfg['backbone']}, crop {cfg['crop'][0]}x{cfg['crop'][1]}, batch {cfg['batch']} "
        f"(+{cfg['batch']} target for cbst/drsl), eval {cfg['eval_images']} images of "
        f"{cfg['eval_size'][0]}x{cfg['eval_size'][1]}, amp {cfg['amp']}, {cfg['repeats']} interleaved repeats, "
        f"{env['device']} ({env['device_name']}), {env['torch_threads']} threads",
        f"{'case':14s} {'median ms':>10s} {'p25-p75 ms':>17s} {'img/s':>8s} {'state MB':>9s} "
        f"{'step peak MB':>12s} {'ops':>6s} {'syncs':>5s}",
    ]
    for name, row in result["cases"].items():
        s = row["seconds"]
        peak, state = row.get("peak_step_mb"), row["state_mb"]
        lines.append(
            f"{name:14s} {1000 * s['median']:10.1f} {1000 * s['p25']:8.1f}-{1000 * s['p75']:<8.1f} "
            f"{row['images_per_s']:8.2f} {'' if state is None else f'{state:.0f}':>9s} "
            f"{'' if peak is None else f'{peak:.0f}':>12s} {row.get('ops', ''):>6} {row.get('syncs', ''):>5}"
        )
    for key, r in result["ratios"].items():
        verdict = "" if r["target"] is None else f"; target <= {r['target']:.2f}: {'met' if r['met'] else 'MISSED'}"
        lines.append(
            f"ratio {key:20s} {r['median']:.3f} (p25-p75 {r['p25']:.3f}-{r['p75']:.3f}, "
            f"min {r['min']:.3f}, max {r['max']:.3f}; {r['of']}){verdict}"
        )
    lines.append(f"memory: {result['memory_note']}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------ CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``drsl bench speed``."""
    parser.add_argument("--backbone", default="light", help="encoder (model.backbone), e.g. light, resnet101")
    parser.add_argument("--light-width", type=options.count, default=2, help="width of the light backbone")
    parser.add_argument("--crop", type=options.count, nargs=2, default=[256, 256], metavar=("H", "W"), help="training crop size")
    parser.add_argument("--batch", type=options.count, default=2, help="source images per step (cbst/drsl add as many target)")
    parser.add_argument("--eval-size", type=options.count, nargs=2, default=[256, 512], metavar=("H", "W"),
                        help="size of the generated evaluation/target images (the model sees half of it)")
    parser.add_argument("--eval-images", type=options.count, default=8, help="images per evaluation and pseudo-label pass")
    parser.add_argument("--eval-batch", type=options.non_negative_int, default=0, help="eval.batch_size (0: the config's)")
    parser.add_argument("--workers", type=options.non_negative_int, default=0, help="DataLoader workers of evaluation and pseudo-labelling")
    parser.add_argument("--repeats", type=options.count, default=10, help="timed calls per case, interleaved")
    parser.add_argument("--warmup", type=options.non_negative_int, default=2, help="untimed calls per case first")
    add_device(parser)
    parser.add_argument("--amp", default="none", choices=["none", "bf16", "fp16"], help="mixed precision")
    parser.add_argument("--channels-last", default="auto", choices=["auto", "true", "false"],
                        help="NHWC memory format (auto: on CUDA)")
    parser.add_argument("--threads", type=options.non_negative_int, default=0, help="torch intra-op threads (0: torch's default)")
    parser.add_argument("--cases", nargs="+", default=list(ALL_CASES), choices=ALL_CASES, help="cases timed")
    parser.add_argument("--no-memory", dest="memory", action="store_false",
                        help="CPU: skip the per-case peak-RSS processes")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--child", help=argparse.SUPPRESS)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark, print the table, optionally write JSON."""
    if args.child:
        return child_main(json.loads(args.child))
    result = run_speed_benchmark(args)
    return report_result(result, format_speed(result), args.json)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m drsl.bench.speed``."""
    return standalone_main("speed", __doc__ or "", add_arguments, run, argv)


if __name__ == "__main__":
    raise SystemExit(main())
