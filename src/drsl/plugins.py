"""Registries of named parts, and the user code that adds to them (docs/extending.md).

A config names its backbone (``model.backbone``), decode head (``model.decoder``), dataset layouts
(``data.*.layout``) and class set (``data.classes``) from four :class:`Registry` tables. A name is
found, in this order:

1. among drsl's own entries and those that user code added (``BACKBONES["my_net"] = ...``) in a
   module the config's ``custom_imports`` names, imported before the config is checked;
2. in a family of names with a prefix (``timm/<name>``: any timm encoder);
3. among the entry points of installed distributions in the registry's group (``drsl.backbones``,
   ``drsl.decoders``, ``drsl.layouts``, ``drsl.class_sets``), each named like the entry it gives
   and loaded on first use, so a pip-installed plug-in needs no edit of drsl.

drsl's own entries are :class:`Deferred`: their modules (and torch) are imported when an entry is
first used, so checking a config's names stays fast.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from drsl.config import ConfigError
from drsl.errors import shorten

T = TypeVar("T")


@dataclass(frozen=True)
class Deferred:
    """An object in a module imported on first use (``module:attribute``); calling it calls that
    object, so a deferred function can stand where a function is expected."""

    target: str

    def resolve(self) -> Any:
        """The object itself (its module imported now)."""
        module, attribute = self.target.split(":")
        return getattr(importlib.import_module(module), attribute)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.resolve()(*args, **kwargs)


class Registry(dict[str, T], Generic[T]):
    """Name -> entry (a builder, a class, a file), extended by user code and entry points; a
    :class:`Deferred` entry is resolved when first read."""

    def __init__(
        self,
        kind: str,
        key: str,
        group: str,
        entries: dict[str, T | Deferred],
        accepts: Callable[[Any], bool],
        expects: str,
        families: dict[str, Callable[[str], T]] | None = None,
    ) -> None:
        """``kind`` names an entry in messages (backbone), ``key`` the config key that picks one,
        ``group`` the entry-point group; an entry point must give an object ``accepts`` takes
        (``expects`` says which, in words). ``families`` map a name prefix to a function that makes
        the entry of the name after it (or raises ConfigError)."""
        super().__init__(entries)
        self.kind, self.key, self.group = kind, key, group
        self.accepts, self.expects = accepts, expects
        self.families = dict(families or {})

    def __getitem__(self, name: str) -> T:
        entry = super().__getitem__(name)
        if isinstance(entry, Deferred):
            entry = entry.resolve()
            self[name] = entry
        return entry

    def check(self, name: str, key: str | None = None) -> None:
        """A ConfigError (see :meth:`lookup`) unless ``name`` is registered; entries already in the
        table are not resolved."""
        if name not in self:
            self.lookup(name, key)

    def find(self, name: str) -> T | None:
        """The entry called ``name``, or None when nothing registers it."""
        if name in self:
            return self[name]
        for prefix, make in self.families.items():
            if name.startswith(prefix):
                return make(name[len(prefix):])
        for point in importlib.metadata.entry_points(group=self.group, name=name):
            self[name] = self._load(point)
            return self[name]
        return None

    def lookup(self, name: str, key: str | None = None) -> T:
        """The entry called ``name``, or a ConfigError naming ``key`` (default: the registry's)
        and listing every registered name."""
        found = self.find(name)
        if found is None:
            raise ConfigError(
                f"config key '{key or self.key}': unknown {self.kind} {shorten(name)} (registered: {', '.join(self.names())}; "
                f"add one with custom_imports or the {self.group} entry-point group: docs/extending.md)"
            )
        return found

    def names(self) -> list[str]:
        """Every name this registry can give: its entries, its families and its entry points."""
        plugins = (p.name for p in importlib.metadata.entry_points(group=self.group))
        return [*self, *(f"{prefix}<name>" for prefix in self.families), *sorted(set(plugins) - set(self))]

    def _load(self, point: importlib.metadata.EntryPoint) -> T:
        where = f"the {self.group} entry point {point.name} = {point.value}"
        if point.dist is not None:
            where += f" (package {point.dist.name})"
        try:
            entry = point.load()
        except Exception as exc:  # plug-in code may raise anything while it is imported
            raise ConfigError(f"{where} cannot be loaded: {type(exc).__name__}: {exc}") from None
        if not self.accepts(entry):
            raise ConfigError(f"{where} gives {shorten(entry)}, not {self.expects}")
        return entry


def import_modules(names: Iterable[str], where: str) -> None:
    """Import the modules ``custom_imports`` names (their code registers entries); a module that
    cannot be found or fails while importing is a ConfigError naming it and ``where``."""
    for name in names:
        try:
            importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name is None or not (name == exc.name or name.startswith(f"{exc.name}.")):
                raise ConfigError(f"{where}: importing module {shorten(name)} failed: ModuleNotFoundError: {exc}") from None
            raise ConfigError(
                f"{where}: no module named {shorten(name)} (install it, or put the folder that holds it on PYTHONPATH)"
            ) from None
        except Exception as exc:  # user code may raise anything while it is imported
            raise ConfigError(f"{where}: importing module {shorten(name)} failed: {type(exc).__name__}: {exc}") from None
