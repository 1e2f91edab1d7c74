"""The ``python -m drsl.bench.X`` entry point shared by the benchmark modules."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from typing import Any

from drsl.commands.help import Parser
from drsl.fileio import atomic_write_json


def standalone_main(
    module: str,
    doc: str,
    add_arguments: Callable[[argparse.ArgumentParser], None],
    run: Callable[[argparse.Namespace], int],
    argv: Sequence[str] | None = None,
) -> int:
    """Parse ``argv`` with the module's arguments and run it (``python -m drsl.bench.<module>``)."""
    parser = Parser(prog=f"python -m drsl.bench.{module}", description=doc.split("\n\n")[0])
    add_arguments(parser)
    return run(parser.parse_args(argv))


def report_result(result: dict[str, Any], text: str, json_path: str | None) -> int:
    """Print a benchmark's table and, when asked, write its results as JSON; returns exit code 0."""
    print(text)
    if json_path:
        atomic_write_json(json_path, result)
    return 0
