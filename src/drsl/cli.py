"""The ``drsl`` command. Subcommands parse their arguments and delegate; errors that come from
the user's input (config, data, checkpoints) are printed as one clear line, without a traceback.

Nothing here imports torch: a subcommand imports what it needs when it runs, so ``drsl --help``
and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

from drsl import __version__
from drsl.bench.compare import Plan
from drsl.bench.variants import DEFAULT_VARIANTS, NETWORKS, QUICK_VARIANTS, VARIANTS
from drsl.commands import bench_speed, export, options, predict, report
from drsl.commands.help import LazyParser, Parser, RawHelpFormatter, add_device
from drsl.config import FUSIONS, ConfigError
from drsl.data.errors import DataError
from drsl.data.synth.shifts import DEFAULT_SHIFT, SHIFTS
from drsl.errors import CheckpointError, DistributedError, NonFiniteLossError, RunDirError, WeightsError, user_error_message

USER_ERRORS = (
    ConfigError, DataError, CheckpointError, WeightsError, NonFiniteLossError, FileNotFoundError, RunDirError,
    DistributedError,
)

EPILOG = """examples:
  drsl data synth data/synth --seed 0            generate the built-in benchmark
  drsl train synth/source_only                   train on it (a packaged config name or a YAML path)
  drsl train synth/drsl init_checkpoint=runs/synth_source_only/checkpoints/latest.pt
  drsl evaluate runs/synth_drsl/checkpoints/latest.pt --flip
  drsl demo                                      all of the above, then a report
"""


def _add_overrides(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "overrides", nargs="*", metavar="KEY=VALUE",
        help="dotted config overrides, e.g. train.iterations=100 data.batch_size=4",
    )


def _add_config_source(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("checkpoint", help="a drsl checkpoint (training checkpoint or export)")
    parser.add_argument("--config", help="config to use instead of the one stored in the checkpoint")
    add_device(parser)
    _add_overrides(parser)


def _add_inference_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mode", choices=["whole", "slide"],
                        help="whole-image or sliding-window inference (default: the config's eval.mode)")
    parser.add_argument("--flip", action="store_true", help="horizontal-flip test-time augmentation")
    parser.add_argument("--scales", type=options.positive, nargs="+",
                        help="multi-scale inference, e.g. 0.75 1 1.25 (default: the config's eval.scales)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every subcommand."""
    parser = Parser(
        prog="drsl",
        description="Unsupervised domain adaptation for semantic segmentation: DRSL, class-balanced "
        "self-training (CBST) and source-only baselines, on GTA5 / SYNTHIA / Cityscapes layouts "
        "or your own folders.",
        epilog=EPILOG,
        formatter_class=RawHelpFormatter,
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--version", action="version", version=f"drsl {__version__}",
                        help="print drsl's version and exit")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    data = sub.add_parser("data", help="generate the built-in benchmark, check or convert datasets")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    synth = data_sub.add_parser("synth", help="write the generated street benchmark (GTA5 + Cityscapes layouts)")
    synth.add_argument("out", help="output folder (source/ and target/ are written inside)")
    synth.add_argument("--seed", type=options.seed, default=0, help="random seed of the generated scenes")
    synth.add_argument("--num-source", type=options.non_negative_int, default=600, help="labelled source (simulator) images")
    synth.add_argument("--num-target-train", type=options.non_negative_int, default=600, help="target (camera) training images")
    synth.add_argument("--num-target-val", type=options.non_negative_int, default=150, help="labelled target validation images")
    synth.add_argument("--workers", type=options.count, default=2, help="processes rendering images")
    synth.add_argument("--overwrite", action="store_true", help="replace OUT if it is not empty")
    synth.add_argument("--shift", default=DEFAULT_SHIFT,
                       help=f"domain-shift preset, one of {', '.join(SHIFTS)} (default {DEFAULT_SHIFT}; docs/benchmark.md)")
    check = data_sub.add_parser("check", help="validate a dataset before a long run")
    check.add_argument("root", help="dataset root in its official layout")
    check.add_argument("--layout", required=True,
                       help="on-disk layout of the dataset: gta5, synthia, cityscapes, folder or a plug-in's")
    check.add_argument("--split", default="train", help="Cityscapes split")
    check.add_argument("--classes", default="cityscapes19", help="class set: a registered name or a class file")
    check.add_argument("--mapping", help="the class file's mapping of raw label values (default: the layout's own)")
    check.add_argument("--class-map", help="folder layout: YAML/JSON raw value -> class id or name map")
    check.add_argument("--json", help="also write the report as JSON here")
    check.add_argument("--convert", metavar="OUT", help="write train-id PNGs and class statistics to OUT")
    check.add_argument("--overwrite", action="store_true", help="with --convert: replace OUT if it is not empty")

    train = sub.add_parser("train", help="train source-only, oracle, CBST or DRSL from a config")
    train.add_argument("config", help="YAML config path, or a packaged name such as synth/drsl")
    continued = train.add_mutually_exclusive_group()
    continued.add_argument("--resume", action="store_true",
                           help="continue the run in work_dir from its checkpoints/latest.pt, with its recorded config")
    continued.add_argument("--resume-from", metavar="CHECKPOINT", help="continue from this training checkpoint")
    continued.add_argument("--overwrite", action="store_true",
                           help="replace the run that work_dir holds (its files are deleted) with a fresh one")
    train.add_argument("--change-config", action="store_true",
                       help="with --resume: continue with the KEY=VALUE overrides changing the recorded config "
                       "(e.g. a longer schedule); the change is logged and recorded in run.json")
    train.add_argument("--accept-changes", action="store_true",
                       help="with --resume: continue although the class file or dataset files changed since the run "
                       "recorded them (recorded in run.json)")
    train.add_argument("--work-dir", help="run directory (overrides work_dir)")
    train.add_argument("--amp", choices=["none", "bf16", "fp16"], help="mixed precision (overrides train.amp)")
    add_device(train)
    _add_overrides(train)

    evaluate = sub.add_parser("evaluate", help="19/16/13-class mIoU of a checkpoint on its val set")
    _add_config_source(evaluate)
    _add_inference_options(evaluate)
    evaluate.add_argument("--head", choices=["segmentation", "mmdl", "product"], default="segmentation",
                          help="the class posterior evaluated: a DRSL model's MMDL head, or its product with "
                               "the segmentation head, instead of the segmentation head")
    evaluate.add_argument("--out", help="write the JSON summary here")

    pseudo = sub.add_parser("pseudo-label", help="write class-balanced pseudo-labels for a target set")
    _add_config_source(pseudo)
    pseudo.add_argument("--out", required=True, help="output folder (pred/, score/, manifest.json with the thresholds)")
    pseudo.add_argument("--portion", type=options.portion, default=0.5, help="portion of each class's pixels kept")
    pseudo.add_argument("--round", type=options.non_negative_int, default=0, help="round index recorded in the manifest")
    pseudo.add_argument("--fusion", choices=FUSIONS,
                        help="how a DRSL checkpoint's MMDL head joins the selection (default: the run's own "
                        "adapt.pseudo_label.fusion; none for checkpoints without the head)")
    pseudo.add_argument("--flip", action="store_true", help="horizontal-flip test-time augmentation")
    pseudo.add_argument("--scales", type=options.positive, nargs="+",
                        help="multi-scale inference, e.g. 0.75 1 1.25 (default: adapt.pseudo_label.scales)")

    bench = sub.add_parser("bench", help="benchmarks: method comparison table, speed")
    bench_sub = bench.add_subparsers(dest="bench_command", required=True, metavar="ACTION", parser_class=LazyParser)
    compare = bench_sub.add_parser(
        "compare", help="source-only, oracle, CBST, DRSL and ablations on the generated benchmark, over seeds"
    )
    compare.add_argument("--out", default="runs/compare", help="folder for runs and results.{json,md}")
    compare.add_argument("--data", default="data/synth", help="generated benchmark root (made if missing)")
    compare.add_argument("--shift", help=f"shift preset of the data ({', '.join(SHIFTS)}): generated with it if "
                         f"missing (default {DEFAULT_SHIFT}), checked against its manifest if present")
    compare.add_argument("--seeds", action=options.ValuesThenOverrides, parse=options.seed, default=[0, 1, 2],
                         help="one run per seed and variant (KEY=VALUE overrides may follow)")
    compare.add_argument(
        "--variants", action=options.ValuesThenOverrides, metavar="VARIANT",
        help=f"default: {', '.join(DEFAULT_VARIANTS)}; also {', '.join(v for v in VARIANTS if v not in DEFAULT_VARIANTS)} "
        "(KEY=VALUE overrides may follow)",
    )
    compare.add_argument("--quick", action="store_true", help=f"one seed; {', '.join(QUICK_VARIANTS)}")
    compare.add_argument("--network", choices=list(NETWORKS), default="light",
                         help="light: the from-scratch network (synth/* configs); pretrained: ImageNet "
                         "EfficientNet-Lite0 (synth_pretrained/* configs)")
    start = compare.add_mutually_exclusive_group()
    start.add_argument(
        "--source-checkpoint",
        help="start every adaptation run from this source-only checkpoint instead of training one "
        "(source-only is then not a row of the table)",
    )
    start.add_argument("--source-per-seed", action="store_true",
                       help="each seed's adaptation runs start from that seed's own source-only run "
                       "(default: all from the first seed's)")
    _add_overrides(compare)
    bench_speed.add_actions(bench_sub)

    config = sub.add_parser("config", help="show a resolved config, list packaged configs, print the key reference")
    config_sub = config.add_subparsers(dest="config_command", required=True, metavar="ACTION")
    show = config_sub.add_parser("show", help="print a config after _base_ merging and overrides")
    show.add_argument("config", help="YAML path or packaged name")
    _add_overrides(show)
    config_sub.add_parser("list", help="list the packaged configs")
    config_sub.add_parser("reference", help="print the Markdown reference of every key")

    demo = sub.add_parser("demo", help="the main job: generate the benchmark, train source-only, the equal-budget control, adapt (mixing, DRSL-mix), evaluate")
    demo.add_argument("--out", default="runs/demo", help="folder for data and runs")
    demo.add_argument("--seed", type=options.seed, default=0, help="seed of the generated data and of every run")
    demo.add_argument("--overwrite", action="store_true", help="replace a demo folder made with other settings (default: off)")
    for command in (predict, export, report):
        command.add_parser(sub)
    return parser


def _command_data(args: argparse.Namespace) -> int:
    if args.data_command == "synth":
        from drsl.data.synth import generate_benchmark

        manifest = generate_benchmark(
            args.out, seed=args.seed, num_source=args.num_source,
            num_target_train=args.num_target_train, num_target_val=args.num_target_val,
            workers=args.workers, progress=True, overwrite=args.overwrite, shift=args.shift,
        )
        print(f"wrote the generated benchmark to {args.out} ({json.dumps(manifest.get('counts', {}))})")
        return 0
    from drsl.config import DatasetConfig
    from drsl.data.checks import check_dataset, convert_dataset
    from drsl.data.classes import load_class_set
    from drsl.engine.outputs import check_output
    from drsl.fileio import atomic_write_json, require_free_folder

    classes = load_class_set(args.classes)
    cfg = DatasetConfig(layout=args.layout, root=args.root, split=args.split, mapping=args.mapping, class_map=args.class_map)
    inputs = [("the dataset root", args.root), ("--classes", args.classes), ("--class-map", args.class_map)]
    if args.json:
        check_output(args.json, [*inputs, ("--convert", args.convert)], inside_inputs=True)
    if args.convert:
        check_output(args.convert, inputs, folder=True, whole=True)
        require_free_folder(args.convert, args.overwrite)
    report = check_dataset(cfg, classes)
    print(report.to_text())
    if args.json:
        atomic_write_json(args.json, report.to_dict())
    if args.convert:
        convert_dataset(cfg, classes, args.convert, overwrite=args.overwrite)
        print(f"converted to {args.convert}")
    return 1 if report.problems else 0


def _command_train(args: argparse.Namespace) -> int:
    from drsl.config import load_config
    from drsl.config_scope import check_keys_take_effect
    from drsl.configs import resolve_config_path

    overrides = list(args.overrides)
    if args.work_dir:
        overrides.append(f"work_dir={args.work_dir}")
    if args.amp:
        overrides.append(f"train.amp={args.amp}")
    config = load_config(resolve_config_path(args.config), overrides)
    check_keys_take_effect(config, overrides)
    resume = args.resume_from or args.resume or None
    if args.change_config and not resume:
        raise ConfigError("--change-config applies to a resumed run: add --resume")
    if args.accept_changes and not resume:
        raise ConfigError("--accept-changes applies to a resumed run: add --resume")
    if os.environ.get("RANK", "0") == "0":  # at once: importing torch and the models takes seconds
        length = "resuming" if resume else f"{config.train.iterations} iterations"
        print(f"run {config.name}: {length}, writing to {config.work_dir}", flush=True)
    from drsl.engine.run_dir import continued_config
    from drsl.training import run_training

    if resume:
        config = continued_config(config, overrides)
    run_training(
        config, resume, args.device, overwrite=args.overwrite, allow_config_change=args.change_config,
        accept_changes=args.accept_changes, announce=False,
    )
    return 0


def _inference_overrides(args: argparse.Namespace) -> list[str]:
    return list(args.overrides) + predict.inference_overrides(args)


def _command_evaluate(args: argparse.Namespace) -> int:
    from drsl.api import evaluate_checkpoint
    from drsl.engine.outputs import check_output
    from drsl.fileio import atomic_write_json

    if args.out:
        check_output(args.out, [("the checkpoint", args.checkpoint), ("--config", args.config)])
    summary = evaluate_checkpoint(args.checkpoint, args.config, _inference_overrides(args), args.device, args.head)
    from drsl.evaluation.metrics import format_table

    head = "" if args.head == "segmentation" else f", {args.head} head"
    print(format_table(summary, f"{args.checkpoint} on its validation set{head}"))
    if args.out:
        atomic_write_json(args.out, summary)
    return 0


def _command_pseudo_label(args: argparse.Namespace) -> int:
    from drsl.api import pseudo_label_checkpoint
    from drsl.engine.outputs import check_output

    check_output(args.out, [("the checkpoint", args.checkpoint), ("--config", args.config)], folder=True)
    overrides = list(args.overrides)
    if args.flip:
        overrides.append("adapt.pseudo_label.flip=true")
    if args.scales:
        overrides.append(f"adapt.pseudo_label.scales={list(args.scales)}")
    manifest = pseudo_label_checkpoint(
        args.checkpoint, args.out, args.portion, args.round, args.fusion, args.config, overrides, args.device
    )
    coverage = manifest["coverage"]
    kept = "nothing predicted" if coverage is None else f"{100 * coverage:.1f}% of the predicted pixels kept"
    chosen = "given by --fusion" if args.fusion else "the run's adapt.pseudo_label.fusion"
    print(f"wrote {manifest['num_images']} pseudo-labels to {args.out} ({kept}; fusion {manifest['fusion']}, {chosen})")
    return 0


def _command_bench(args: argparse.Namespace) -> int:
    if args.bench_command != "compare":
        return bench_speed.run(args)
    from drsl.bench.compare import run_comparison

    seeds = args.seeds[:1] if args.quick else args.seeds
    chosen = args.variants or []
    unknown = [v for v in chosen if v not in VARIANTS]
    if unknown:
        raise ConfigError(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    variants = chosen or list(QUICK_VARIANTS if args.quick else DEFAULT_VARIANTS)
    shared = Path(args.source_checkpoint) if args.source_checkpoint else None
    if shared is not None and not shared.is_file():
        raise FileNotFoundError(f"--source-checkpoint {shared} is not a file")
    from drsl.engine.outputs import check_output

    check_output(args.out, [("--data", args.data), ("--source-checkpoint", shared)], folder=True)
    plan = Plan(Path(args.out), Path(args.data), seeds, variants, args.overrides, shared, args.shift, args.network,
                args.source_per_seed)
    run_comparison(plan, "drsl " + " ".join(sys.argv[1:]))
    print((Path(args.out) / "results.md").read_text())
    return 0


def _command_config(args: argparse.Namespace) -> int:
    from drsl.configs import available_configs, resolve_config_path

    if args.config_command == "list":
        print("\n".join(available_configs()))
    elif args.config_command == "reference":
        from drsl.config_reference import reference_markdown

        print(reference_markdown(), end="")
    else:
        from drsl.config import dump_config, load_config

        print(dump_config(load_config(resolve_config_path(args.config), args.overrides)), end="")
    return 0


def _command_demo(args: argparse.Namespace) -> int:
    from drsl.demo import run_demo
    from drsl.engine.outputs import check_output

    check_output(args.out, folder=True)
    run_demo(Path(args.out), args.seed, args.overwrite)
    return 0


COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "data": _command_data,
    "train": _command_train,
    "evaluate": _command_evaluate,
    "pseudo-label": _command_pseudo_label,
    "bench": _command_bench,
    "config": _command_config,
    "demo": _command_demo,
    "predict": predict.run,
    "export": export.run,
    "report": report.run,
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The parsed command line; KEY=VALUE overrides may also follow options, and the values of
    the options that take several (:class:`~drsl.commands.options.ValuesThenOverrides`)."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    trailing = vars(args).pop("trailing_overrides", [])
    if trailing:
        args.overrides = [*args.overrides, *trailing]
    if extra:
        if not hasattr(args, "overrides") or any("=" not in e or e.startswith("-") for e in extra):
            parser.error(f"unrecognized arguments: {' '.join(extra)}")
        args.overrides = [*args.overrides, *extra]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``drsl`` console script."""
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    try:
        return COMMANDS[args.command](args)
    except Exception as exc:
        message = user_error_message(exc, USER_ERRORS)
        if message is None:
            raise
        if args.verbose:
            traceback.print_exc()
        print(f"drsl {args.command}: error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; resume with --resume", file=sys.stderr)
        return 130
    finally:
        if "torch" in sys.modules:  # a command that never imported torch has no process group
            from drsl.engine.distributed import shutdown

            shutdown()


if __name__ == "__main__":
    sys.exit(main())
