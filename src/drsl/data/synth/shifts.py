"""Named domain shifts: which source and target domains a generated benchmark is drawn from.

A :class:`Shift` pairs a source domain with a target domain (see :mod:`.domains`); the
``--shift`` option of ``drsl data synth`` picks one by name and the manifest records it.
The presets form a ladder, each removing one cause of confidently wrong source-only
predictions on the target found in ``hard`` (docs/benchmark.md has the measurements):

- ``hard``: the original benchmark.
- ``lit``: ``hard``'s target; the simulator source now renders the cast shadows that the
  target's road shows (GTA5 renders shadows too), so a shadow is no longer an unseen pattern.
- ``aligned`` (the default): ``lit`` with the target camera's geometry overlapping the source's (both are
  car-mounted cameras, as in GTA5 and Cityscapes), so objects and sky appear at the scales and
  image positions the source shows; content, mode mixes and the photographic style as in ``hard``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

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


LIT_SOURCE = replace(SOURCE, shadows=True)
ALIGNED_TARGET = replace(TARGET, horizon=(0.42, 0.50), focal=(0.66, 0.80), elevation=(1.6, 2.1), roll_deg=1.0,
                         object_depth=(6.0, 60.0))

SHIFTS: dict[str, Shift] = {
    s.name: s
    for s in (
        Shift("hard", "the original benchmark: unlit flat source; photographic target with cast shadows, "
              "another camera geometry (lower, narrower field of view, higher horizon) and shifted mode mixes",
              SOURCE, TARGET),
        Shift("lit", "hard's target; the flat source shows cast shadows on the road too", LIT_SOURCE, TARGET),
        Shift("aligned", "lit, with the target camera's geometry overlapping the source's; content, mode mixes "
              "and photographic style shifted as in hard", LIT_SOURCE, ALIGNED_TARGET),
    )
}
DEFAULT_SHIFT = "aligned"


def get_shift(name: str) -> Shift:
    """The preset called ``name``; a ConfigError naming the known presets otherwise."""
    if name not in SHIFTS:
        raise ConfigError(f"unknown shift preset {name!r}; choose from {', '.join(SHIFTS)}")
    return SHIFTS[name]


def recorded_shift(manifest: dict) -> str:
    """The preset a benchmark's manifest records (``hard`` for manifests written before presets)."""
    return str(manifest.get("shift", "hard"))
