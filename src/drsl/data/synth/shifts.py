"""Named domain shifts: which source and target domains a generated benchmark is drawn from.

A :class:`Shift` pairs a source domain with a target domain (see :mod:`.domains`); the
``--shift`` option of ``drsl data synth`` picks one by name and the manifest records it.
docs/benchmark.md says what each preset changes and why.
"""

from __future__ import annotations

from dataclasses import dataclass

from drsl.config import ConfigError

from .domains import SOURCE, TARGET, Domain


@dataclass(frozen=True)
class Shift:
    """A named pair of domains and a one-line description."""

    name: str
    summary: str
    source: Domain
    target: Domain

    def domain(self, role: str) -> Domain:
        """The ``"source"`` or ``"target"`` domain."""
        return self.source if role == "source" else self.target


SHIFTS: dict[str, Shift] = {
    s.name: s
    for s in (
        Shift("hard", "the first generated benchmark: unlit flat source; target with another camera geometry, "
              "cast shadows and fully shifted mode mixes", SOURCE, TARGET),
    )
}
DEFAULT_SHIFT = "hard"


def get_shift(name: str) -> Shift:
    """The preset called ``name``; a ConfigError naming the known presets otherwise."""
    if name not in SHIFTS:
        raise ConfigError(f"unknown shift preset {name!r}; choose from {', '.join(SHIFTS)}")
    return SHIFTS[name]
