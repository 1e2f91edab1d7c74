"""argparse value types that check ranges with the config schema's own rules (:class:`~drsl.config.Bounds`),
so a command-line number out of range is refused before any work, in the same words as a config key."""

from __future__ import annotations

import argparse
import math
import typing
from collections.abc import Callable
from typing import Any

from drsl.config import Count, NonNegativeInt, Portion, Positive, Probability, Seed
from drsl.errors import shorten


def bounded(annotation: Any) -> Callable[[str], Any]:
    """An argparse ``type`` for a schema type such as ``Count``: parse, then check its bounds."""
    kind, *rules = typing.get_args(annotation)

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{shorten(text)} is not {'an integer' if kind is int else 'a number'}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{shorten(text)} is not a finite number")
        for rule in rules:
            if not rule.holds(value):
                raise argparse.ArgumentTypeError(f"{shorten(text, quote=False)} is out of range (must be {rule.describe()})")
        return value

    parse.__name__ = kind.__name__
    return parse


class ValuesThenOverrides(argparse.Action):
    """An option taking several values that ``KEY=VALUE`` config overrides may follow
    (``--seeds 0 1 train.iterations=100``): the values are parsed with ``parse``, the overrides
    kept in ``trailing_overrides`` for :func:`drsl.cli.parse_args` to add to the command's own."""

    def __init__(self, option_strings: list[str], dest: str, parse: Callable[[str], Any] = str, **kwargs: Any):
        super().__init__(option_strings, dest, nargs="+", **kwargs)
        self.parse = parse

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        overrides = [v for v in values if "=" in v]
        chosen = [v for v in values if "=" not in v]
        if not chosen:
            raise argparse.ArgumentError(self, "names no value (only KEY=VALUE overrides follow it)")
        try:
            setattr(namespace, self.dest, [self.parse(v) for v in chosen])
        except argparse.ArgumentTypeError as exc:
            raise argparse.ArgumentError(self, str(exc)) from None
        namespace.trailing_overrides = [*getattr(namespace, "trailing_overrides", []), *overrides]


count = bounded(Count)
non_negative_int = bounded(NonNegativeInt)
seed = bounded(Seed)
positive = bounded(Positive)
portion = bounded(Portion)
probability = bounded(Probability)
