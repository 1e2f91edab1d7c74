"""argparse value types that check ranges with the config schema's own rules (:class:`~drsl.config.Bounds`),
so a command-line number out of range is refused before any work, in the same words as a config key."""

from __future__ import annotations

import argparse
import math
import typing
from collections.abc import Callable
from typing import Any

from drsl.config import Count, NonNegativeInt, Portion, Positive, Probability, Seed


def bounded(annotation: Any) -> Callable[[str], Any]:
    """An argparse ``type`` for a schema type such as ``Count``: parse, then check its bounds."""
    kind, *rules = typing.get_args(annotation)

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {'an integer' if kind is int else 'a number'}") from None
        if kind is float and not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        for rule in rules:
            if not rule.holds(value):
                raise argparse.ArgumentTypeError(f"{text} is out of range (must be {rule.describe()})")
        return value

    parse.__name__ = kind.__name__
    return parse


def or_override(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """``parse``, but a ``KEY=VALUE`` token passes through as text: the config overrides that
    follow an option taking several values (``--seeds 0 1 train.iterations=100``)."""

    def parse_or_pass(text: str) -> Any:
        return text if "=" in text else parse(text)

    parse_or_pass.__name__ = parse.__name__
    return parse_or_pass


count = bounded(Count)
non_negative_int = bounded(NonNegativeInt)
seed = bounded(Seed)
positive = bounded(Positive)
portion = bounded(Portion)
probability = bounded(Probability)
