"""Help text conventions of every ``drsl`` parser: each option says what it does and its default."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
import typing
from typing import Any

DEVICE_HELP = "where to run: auto picks CUDA when available"


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to an option's help, except where there is nothing to show (a flag
    that is off, or no default: the help then says what happens without the option)."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.default is None or action.default is False or action.required:
            return action.help
        if isinstance(action.default, (list, tuple)):
            text = " ".join(str(value) for value in action.default)
            return f"{action.help} (default: {text})"
        return super()._get_help_string(action)


class RawHelpFormatter(argparse.RawDescriptionHelpFormatter, HelpFormatter):
    """:class:`HelpFormatter` that keeps the description and epilog as written (the examples)."""


class Parser(argparse.ArgumentParser):
    """An ArgumentParser whose sub-parsers (and theirs) all use :class:`HelpFormatter`."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]

    def error(self, message: str) -> typing.NoReturn:
        """A usage error as one line (exit status 2), pointing at the help instead of printing it."""
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class LazyParser(Parser):
    """A sub-parser whose arguments are added on first use by ``populate(parser)``, so that
    defining them (which may import torch) costs nothing unless this sub-command is asked for."""

    def __init__(self, *args: Any, populate: Callable[[argparse.ArgumentParser], None] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._populate = populate

    def populate(self) -> LazyParser:
        """Add the arguments now (once); returns the parser."""
        if self._populate is not None:
            populate, self._populate = self._populate, None
            populate(self)
        return self

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: Any = None) -> Any:
        return super(LazyParser, self.populate()).parse_known_args(args, namespace)

    def format_help(self) -> str:
        return super(LazyParser, self.populate()).format_help()

    def format_usage(self) -> str:
        return super(LazyParser, self.populate()).format_usage()


def add_device(parser: argparse.ArgumentParser, what: str = "") -> None:
    """The ``--device auto|cpu|cuda`` option."""
    suffix = f" ({what})" if what else ""
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help=DEVICE_HELP + suffix)
