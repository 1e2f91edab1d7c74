"""A Markdown reference of every config key, generated from the dataclass schema and its ``#:``
comments (``drsl config reference``; docs/configuration.md is this output)."""

from __future__ import annotations

import dataclasses
import functools
import inspect
import operator
import re
import types
import typing
from typing import Any

from drsl.config import Config

_FIELD = re.compile(r"^\s+(\w+):")


def field_comments(cls: type) -> dict[str, str]:
    """The ``#:`` comment lines written above each field of a dataclass."""
    comments: dict[str, str] = {}
    pending: list[str] = []
    for line in inspect.getsource(cls).splitlines():
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        match = _FIELD.match(line)
        if match and pending:
            comments[match.group(1)] = " ".join(pending)
        pending = []
    return comments


def _type_name(annotation: Any) -> str:
    """The type as written in Python, with any range in words after it: `int` (at least 1)."""
    ranges: list[str] = []

    def plain(hint: Any, each: str = "") -> Any:  # the hint without Annotated; ranges collected
        origin, args = typing.get_origin(hint), typing.get_args(hint)
        if origin is typing.Annotated:
            ranges.extend(each + bounds.describe() for bounds in args[1:])
            return plain(args[0], each)
        if origin is list:
            return list[plain(args[0], "each ")]  # type: ignore[misc]
        if origin in (typing.Union, types.UnionType):
            return functools.reduce(operator.or_, (plain(a, each) for a in args))
        return hint

    text = str(plain(annotation)).replace("typing.", "")
    text = re.sub(r"drsl\.config\.(\w+)", r"\1", text).replace("<class '", "").replace("'>", "")
    return f"`{text}`" + (f" ({', '.join(ranges)})" if ranges else "")


def _rows(cls: type, prefix: str, instance: Any) -> list[str]:
    hints = typing.get_type_hints(cls, include_extras=True)
    comments = field_comments(cls)
    rows: list[str] = []
    for f in dataclasses.fields(cls):
        value = getattr(instance, f.name)
        annotation = hints[f.name]
        nested = next((a for a in (annotation, *typing.get_args(annotation)) if isinstance(a, type) and dataclasses.is_dataclass(a)), None)
        key = f"{prefix}{f.name}"
        if nested is not None:
            rows.append(f"| `{key}` | {nested.__name__} or null | {'null' if value is None else 'see below'} | {comments.get(f.name, ' '.join((nested.__doc__ or '').split()))} |")
            rows += _rows(nested, f"{key}.", value if value is not None else nested())
        else:
            rows.append(f"| `{key}` | {_type_name(annotation)} | `{value!r}` | {comments.get(f.name, '')} |")
    return rows


def reference_markdown() -> str:
    """The whole reference as Markdown."""
    head = [
        "# Configuration reference",
        "",
        "Generated from the schema in `src/drsl/config.py` by `drsl config reference`; do not edit.",
        "A config file may name `_base_` files; keys merge strictly (unknown key or wrong type is an",
        "error naming the key); `KEY=VALUE` arguments override any key (values are YAML).",
        "",
        "| key | type | default | meaning |",
        "|---|---|---|---|",
    ]
    return "\n".join(head + _rows(Config, "", Config())) + "\n"
