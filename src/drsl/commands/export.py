"""``drsl export``: write the slim inference checkpoint (weights and config only)."""

from __future__ import annotations

import argparse
from pathlib import Path


def megabytes(path: Path) -> str:
    """The size of ``path`` in MB, for messages."""
    return f"{path.stat().st_size / 1e6:.2f} MB"


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``drsl export``."""
    parser = subparsers.add_parser(
        "export", help="write a slim inference checkpoint (no optimizer, EMA teacher or RNG state)"
    )
    parser.add_argument("checkpoint", help="a drsl training checkpoint")
    parser.add_argument("out", help="path of the exported checkpoint")


def run(args: argparse.Namespace) -> int:
    """Export and print the size of the result against the original."""
    from drsl.api import export_checkpoint

    source = Path(args.checkpoint)
    out = export_checkpoint(source, args.out)
    ratio = out.stat().st_size / source.stat().st_size
    print(f"exported {source} ({megabytes(source)}) to {out} ({megabytes(out)}, {ratio:.0%} of the original)")
    return 0
