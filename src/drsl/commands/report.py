"""``drsl report``: one self-contained HTML page comparing run directories."""

from __future__ import annotations

import argparse

from drsl.commands import options
from drsl.commands.help import add_device


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``drsl report``."""
    parser = subparsers.add_parser(
        "report", help="compare runs in one self-contained HTML page (mIoU, per-class IoU, curves, "
        "pseudo-label quality, confusion matrices, sample predictions)",
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR", help="run directories (work_dir of drsl train)")
    parser.add_argument("--out", help="HTML file to write (default: report.html inside the run directory; for "
                        "several runs, in the folder that holds them)")
    parser.add_argument("--samples", type=options.non_negative_int, default=3, help="validation images with predictions (0: none)")
    add_device(parser, "for the sample predictions")


def run(args: argparse.Namespace) -> int:
    """Write the report; a missing run directory, or a folder that holds no run, is an error naming it."""
    from drsl.engine.outputs import check_output
    from drsl.viz.report import default_report_path, write_report
    from drsl.viz.runs import check_run_folder

    for run_dir in args.run_dirs:
        check_run_folder(run_dir)
    out = args.out or default_report_path(args.run_dirs)
    check_output(out, [("the run directory", run_dir) for run_dir in args.run_dirs], inside_inputs=True, writer="report")
    out = write_report(args.run_dirs, out, samples=args.samples, device=args.device)
    print(f"wrote the report of {len(args.run_dirs)} run(s) to {out}")
    return 0
