"""Small inline-SVG charts for the HTML report: grouped bars, x/y lines, heat maps.

The SVG is meant to be embedded in an HTML5 page, so it carries no namespace URL. Values of
None or NaN are skipped (bars, points) or drawn grey (heat-map cells).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from html import escape

import numpy as np

from drsl.viz.overlay import BLUES, heat_colors

FONT = "font-family='system-ui, sans-serif'"
AXIS = "#555"
GRID = "#e4e4e4"
#: Bars get narrower so that a bar chart stays about this wide.
MAX_BAR_CHART_WIDTH = 700


@dataclass(frozen=True)
class Series:
    """A named, coloured series: bar heights (one per category) or (x, y) points."""

    label: str
    color: str
    values: Sequence[float | None] = ()
    points: Sequence[tuple[float, float]] = ()
    #: Text drawn next to each point (x/y charts), e.g. round numbers.
    point_labels: Sequence[str] = field(default_factory=tuple)


def _finite(value: float | None) -> bool:
    return value is not None and not math.isnan(value)


def nice_ticks(low: float, high: float, count: int = 5) -> list[float]:
    """Round tick values covering [low, high] (about ``count`` of them)."""
    if not high > low:
        high = low + 1.0
    raw = (high - low) / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(s * magnitude for s in (1, 2, 2.5, 5, 10) if s * magnitude >= raw)
    start = math.floor(low / step + 1e-9) * step
    stop = math.ceil(high / step - 1e-9) * step
    return [round(start + i * step, 10) for i in range(int(round((stop - start) / step)) + 1)]


def _text(x: float, y: float, text: str, anchor: str = "middle", extra: str = "", size: int = 11) -> str:
    return (
        f"<text x='{x:.1f}' y='{y:.1f}' text-anchor='{anchor}' {FONT} font-size='{size}' {extra}>"
        f"{escape(text)}</text>"
    )


@dataclass(frozen=True)
class Frame:
    """The plotting area of a chart and the value ranges it maps onto it."""

    width: int
    height: int
    left: int
    bottom: int
    x_ticks: Sequence[float]
    y_ticks: Sequence[float]
    top: int = 12
    right: int = 16

    def x(self, value: float) -> float:
        """Pixel column of an x value."""
        low, high = self.x_ticks[0], self.x_ticks[-1]
        return self.left + (value - low) / (high - low) * (self.width - self.left - self.right)

    def y(self, value: float) -> float:
        """Pixel row of a y value."""
        low, high = self.y_ticks[0], self.y_ticks[-1]
        return self.height - self.bottom - (value - low) / (high - low) * (self.height - self.bottom - self.top)

    def axes(self, y_label: str, x_label: str | None, x_tick_labels: bool = True) -> list[str]:
        """Grid lines, tick labels and axis titles."""
        base = self.height - self.bottom
        parts = []
        for tick in self.y_ticks:
            y = self.y(tick)
            parts.append(_line(self.left, y, self.width - self.right, y, GRID))
            parts.append(_text(self.left - 5, y + 4, f"{tick:g}", "end"))
        if x_tick_labels:
            for tick in self.x_ticks:
                parts.append(_text(self.x(tick), base + 15, f"{tick:g}"))
        parts.append(_line(self.left, base, self.width - self.right, base, AXIS))
        parts.append(_line(self.left, self.top, self.left, base, AXIS))
        middle = (self.top + base) / 2
        parts.append(_text(14, middle, y_label, extra=f"transform='rotate(-90 14 {middle:.1f})'"))
        if x_label:
            parts.append(_text((self.left + self.width - self.right) / 2, self.height - 6, x_label))
        return parts


def _line(x1: float, y1: float, x2: float, y2: float, color: str, extra: str = "") -> str:
    return f"<line x1='{x1:.1f}' y1='{y1:.1f}' x2='{x2:.1f}' y2='{y2:.1f}' stroke='{color}' {extra}/>"


def _svg(width: int, height: int, parts: list[str], title: str) -> str:
    return (
        f"<svg class='chart' width='{width}' height='{height}' viewBox='0 0 {width} {height}' "
        f"role='img' aria-label='{escape(title)}'>{''.join(parts)}</svg>"
    )


def bar_chart(categories: Sequence[str], series: Sequence[Series], y_label: str, height: int = 340) -> str:
    """Grouped vertical bars: one group per category, one bar per series (None = no bar)."""
    values = [v for s in series for v in s.values if _finite(v)]
    bar = max(3, min(14, (MAX_BAR_CHART_WIDTH // max(1, len(categories)) - 10) // max(1, len(series))))
    group = bar * len(series) + 10
    frame = Frame(60 + group * len(categories) + 16, height, left=60, bottom=96, x_ticks=(0, 1),
                  y_ticks=nice_ticks(0, max(values, default=1.0)))
    parts = frame.axes(y_label, None, x_tick_labels=False)
    base = frame.y(0)
    for c, category in enumerate(categories):
        start = frame.left + 5 + c * group
        for s, item in enumerate(series):
            value = item.values[c] if c < len(item.values) else None
            if not _finite(value):
                continue
            top = frame.y(value)  # type: ignore[arg-type]
            parts.append(
                f"<rect x='{start + s * bar}' y='{top:.1f}' width='{bar - 1}' height='{base - top:.1f}' "
                f"fill='{item.color}'><title>{escape(f'{item.label} / {category}: {value:.1f}')}</title></rect>"
            )
        x = start + bar * len(series) / 2
        parts.append(_text(x, base + 12, category, "end", f"transform='rotate(-40 {x:.1f} {base + 12:.1f})'"))
    return _svg(frame.width, height, parts, y_label)


def _padded(values: Sequence[float]) -> tuple[float, float]:
    """The range of ``values``, widened by 5% on each side (a single value gets +-1)."""
    low, high = min(values, default=0.0), max(values, default=1.0)
    pad = 0.05 * (high - low) if high > low else 1.0
    return low - pad, high + pad


#: Approximate width of one character of 10-pixel label text.
CHAR_WIDTH = 5.5


def label_rows(labels: Sequence[tuple[float, str]]) -> list[int]:
    """A text row for each (x pixel, text) label, in order, so that no two labels of a row overlap:
    each goes to the first row whose last label ends left of it."""
    ends: list[float] = []
    rows = []
    for x, text in labels:
        row = next((r for r, end in enumerate(ends) if end < x), len(ends))
        if row == len(ends):
            ends.append(0.0)
        ends[row] = x + 3 + CHAR_WIDTH * len(text) + 4
        rows.append(row)
    return rows


def xy_chart(
    series: Sequence[Series], x_label: str, y_label: str, width: int = 560, height: int = 320,
    events: Sequence[tuple[float, str]] = (),
) -> str:
    """Lines with point markers (a single point is just a marker), optional point labels, and
    labelled dashed vertical lines at ``events`` (x, text). Points must be finite."""
    x_ticks = nice_ticks(*_padded([p[0] for s in series for p in s.points]))
    y_ticks = nice_ticks(*_padded([p[1] for s in series for p in s.points]))
    frame = Frame(width, height, left=60, bottom=42, x_ticks=x_ticks, y_ticks=y_ticks)
    parts = frame.axes(y_label, x_label)
    for (x, text), row in zip(events, label_rows([(frame.x(x), text) for x, text in events])):
        px = frame.x(x)
        parts.append(_line(px, frame.top, px, height - frame.bottom, "#999", "stroke-dasharray='4 3'"))
        parts.append(_text(px + 3, frame.top + 10 + 12 * row, text, "start", "fill='#777'", size=10))
    for item in series:
        pixels = [(frame.x(x), frame.y(y)) for x, y in item.points]
        if len(pixels) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in pixels)
            parts.append(f"<polyline points='{path}' fill='none' stroke='{item.color}' stroke-width='2'/>")
        for index, ((x, y), (vx, vy)) in enumerate(zip(pixels, item.points)):
            tip = f"{item.label}: ({vx:g}, {vy:.3g})"
            parts.append(
                f"<circle cx='{x:.1f}' cy='{y:.1f}' r='3.5' fill='{item.color}'><title>{escape(tip)}</title></circle>"
            )
            if index < len(item.point_labels):
                parts.append(_text(x + 6, y - 6, item.point_labels[index], "start", f"fill='{item.color}'"))
    return _svg(width, height, parts, y_label)


def heatmap(matrix: np.ndarray, row_labels: Sequence[str], col_labels: Sequence[str], cell: int = 16) -> str:
    """A white-to-blue heat map of values in [0, 1] (NaN grey), with percentages written in cells
    above 1% and the diagonal outlined."""
    rows, cols = matrix.shape
    left, top = 84, 84
    width, height = left + cols * cell + 8, top + rows * cell + 8
    colors = heat_colors(matrix, BLUES)
    parts = []
    for c, label in enumerate(col_labels):
        x = left + c * cell + cell / 2
        parts.append(_text(x, top - 6, label, "start", f"transform='rotate(-60 {x:.1f} {top - 6})'"))
    for r, label in enumerate(row_labels):
        y = top + r * cell
        parts.append(_text(left - 5, y + cell / 2 + 4, label, "end"))
        for c in range(cols):
            value = matrix[r, c]
            red, green, blue = colors[r, c]
            parts.append(
                f"<rect x='{left + c * cell}' y='{y}' width='{cell}' height='{cell}' fill='rgb({red},{green},{blue})'>"
                f"<title>{escape(f'{label} -> {col_labels[c]}: {value:.1%}')}</title></rect>"
            )
            if r == c:
                x = left + c * cell + 0.5
                parts.append(
                    f"<rect x='{x}' y='{y + 0.5}' width='{cell - 1}' height='{cell - 1}' fill='none' stroke='#333'/>"
                )
            if not math.isnan(value) and value >= 0.01:
                ink = "#fff" if value > 0.55 else "#123"
                middle = (left + c * cell + cell / 2, y + cell / 2 + 3)
                parts.append(_text(*middle, f"{100 * value:.0f}", extra=f"fill='{ink}'", size=8))
    return _svg(width, height, parts, "confusion matrix")
