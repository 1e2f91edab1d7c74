"""Subcommands of the ``drsl`` CLI that live in their own modules: each exposes
``add_parser(subparsers) -> None`` and ``run(args) -> int``."""
