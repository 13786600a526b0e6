"""The report page's plots as inline SVG: rectangles, lines and text written out directly.

Why not a plotting library: the page holds five small charts, and drawing them with matplotlib cost about 1.5 s
of every run (its import and the Agg rasteriser: a third of a warm rerun), for PNGs that were larger than this
markup. Here a chart is a few dozen elements, written in a millisecond, with the same bytes for the same figures
(every coordinate is printed at one decimal). Every string a user wrote (a judge stage's name) is escaped; no
element refers to anything outside the page, and there is no script.

Three shapes cover the page: ``histogram`` (overlaid densities), ``bars`` (horizontal, one value per label) and
``columns`` (vertical, stacked layers per category), and ``figure`` puts panels side by side.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass
from typing import Sequence

import numpy as np

CHAR_PX = 6.2  # mean width of an 11 px sans-serif glyph: enough to place labels, not to typeset them
FONT = 11
LABEL_CHARS = 32  # longer category labels are cut (the full text stays in a <title>)
_AXIS = 'stroke="#444" stroke-width="1"'


def _e(text) -> str:
    return html.escape(str(text), quote=True)


def _n(value: float) -> str:
    return f"{value:.1f}"


def nice_ticks(lo: float, hi: float, target: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 times a power of ten) covering [lo, hi]."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        lo, hi = 0.0, 1.0
    if hi <= lo:
        hi = lo + (abs(lo) or 1.0)
    raw = (hi - lo) / target
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step + 1e-9)
    return [round((first + i) * step, 12) for i in range(int(math.ceil(hi / step - 1e-9)) - first + 1)]


def _tick_label(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 and float(value).is_integer() else f"{value:.4g}"


def _y_label_room(ticks: list[float]) -> float:
    """Left margin for a vertical axis: its rotated title, then the widest tick label."""
    return 24 + max(len(_tick_label(t)) for t in ticks) * CHAR_PX + 8


def _short(label: str) -> str:
    label = str(label)
    return label if len(label) <= LABEL_CHARS else label[: LABEL_CHARS - 1] + "…"


@dataclass(frozen=True)
class Panel:
    """One chart: its elements drawn in a box of ``width`` x ``height`` whose top left is (0, 0)."""

    width: float
    height: float
    elements: tuple[str, ...]


def figure(panels: Sequence[Panel], label: str, gap: float = 16.0) -> str:
    """Panels side by side in one ``<svg>``, described by ``label`` for readers that cannot see it."""
    width = sum(p.width for p in panels) + gap * (len(panels) - 1)
    height = max(p.height for p in panels)
    body, x = [], 0.0
    for p in panels:
        body.append(f'<g transform="translate({_n(x)},0)">{"".join(p.elements)}</g>')
        x += p.width + gap
    return (
        f'<svg viewBox="0 0 {_n(width)} {_n(height)}" width="{_n(width)}" height="{_n(height)}" role="img" '
        f'aria-label="{_e(label)}" font-family="system-ui,sans-serif" font-size="{FONT}">'
        f"<title>{_e(label)}</title>{''.join(body)}</svg>"
    )


def _text(x: float, y: float, text, anchor: str = "start", extra: str = "") -> str:
    return f'<text x="{_n(x)}" y="{_n(y)}" text-anchor="{anchor}"{extra}>{_e(text)}</text>'


def _rect(x: float, y: float, w: float, h: float, colour: str, opacity: float = 1.0, title: str = "") -> str:
    fill = f' fill-opacity="{opacity:.2f}"' if opacity < 1 else ""
    tip = f"<title>{_e(title)}</title>" if title else ""
    return (
        f'<rect x="{_n(x)}" y="{_n(y)}" width="{_n(max(w, 0.0))}" height="{_n(max(h, 0.0))}" '
        f'fill="{colour}"{fill}>{tip}</rect>'
    )


def _legend_width(labels: Sequence[str]) -> float:
    """Room a legend takes at the right of a panel, beside the plot rather than over it."""
    return max(len(label) for label in labels) * CHAR_PX + 22 if labels else 0.0


def _legend(entries: Sequence[tuple[str, str]], right: float, top: float, opacity: float = 1.0) -> list[str]:
    width = _legend_width([label for label, _ in entries])
    out = []
    for i, (label, colour) in enumerate(entries):
        y = top + 16 * i
        out.append(_rect(right - width, y, 10, 10, colour, opacity))
        out.append(_text(right - width + 14, y + 9, label))
    return out


def _line(x1: float, y1: float, x2: float, y2: float) -> str:
    return f'<line x1="{_n(x1)}" y1="{_n(y1)}" x2="{_n(x2)}" y2="{_n(y2)}" {_AXIS}/>'


def _y_axis(left: float, top: float, bottom: float, ticks: list[float], y_of, title: str) -> list[str]:
    out = [_line(left, top, left, bottom)]
    for t in ticks:
        out += [_line(left - 4, y_of(t), left, y_of(t)), _text(left - 6, y_of(t) + 4, _tick_label(t), "end")]
    mid = (top + bottom) / 2
    return out + [_text(12, mid, title, "middle", f' transform="rotate(-90 12 {_n(mid)})"')]


def _x_axis(left: float, right: float, base: float, ticks: list[float], x_of, title: str) -> list[str]:
    out = [_line(left, base, right, base)]
    for t in ticks:
        out += [_line(x_of(t), base, x_of(t), base + 4), _text(x_of(t), base + 16, _tick_label(t), "middle")]
    return out + [_text((left + right) / 2, base + 32, title, "middle")]


def histogram(series: Sequence[tuple[str, np.ndarray, str]], xlabel: str, bins: int = 40) -> Panel:
    """Densities of each (label, values, colour) over shared bins, drawn over one another at 60 % opacity."""
    series = [(label, np.asarray(v, dtype=np.float64), colour) for label, v, colour in series if len(v)]
    values = np.concatenate([v for _, v, _ in series])
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    densities = [np.histogram(v, bins=edges, density=True)[0] for _, v, _ in series]
    keys = [f"{label} (n={len(v)})" for label, v, _ in series]
    y_ticks = nice_ticks(0.0, max(float(d.max()) for d in densities))
    width, height, left, top, bottom = 640.0, 260.0, _y_label_room(y_ticks), 10.0, 214.0
    right = width - 10 - _legend_width(keys) - 8
    x_ticks = [t for t in nice_ticks(lo, hi) if lo <= t <= hi]

    def x_of(v: float) -> float:
        return left + (v - lo) / (hi - lo) * (right - left)

    def y_of(v: float) -> float:
        return bottom - v / y_ticks[-1] * (bottom - top)

    out = _y_axis(left, top, bottom, y_ticks, y_of, "density")
    for (label, _, colour), density in zip(series, densities):
        for i, d in enumerate(density):
            if d > 0:
                x0, x1 = x_of(edges[i]), x_of(edges[i + 1])
                out.append(_rect(x0, y_of(d), x1 - x0, bottom - y_of(d), colour, 0.6))
    out += _x_axis(left, right, bottom, x_ticks, x_of, xlabel)
    out += _legend([(key, colour) for key, (_, _, colour) in zip(keys, series)], width - 10, top, 0.6)
    return Panel(width, height, tuple(out))


def bars(labels: Sequence[str], values: Sequence[float], xlabel: str, fmt: str = "{:.3g}", colour="#4c72b0") -> Panel:
    """One horizontal bar per label, top to bottom in the given order, each with its value printed at its end."""
    left = 12 + max(len(_short(label)) for label in labels) * CHAR_PX
    width, row = 640.0, 22.0
    top, right = 8.0, width - 60
    bottom = top + row * len(labels)
    lo, hi = min(0.0, min(values)), max(0.0, max(values))
    x_ticks = nice_ticks(lo, hi)
    lo, hi = x_ticks[0], x_ticks[-1]

    def x_of(v: float) -> float:
        return left + (v - lo) / (hi - lo) * (right - left)

    out = [_line(left, top, left, bottom)]
    for i, (label, v) in enumerate(zip(labels, values)):
        y = top + row * i
        x0, x1 = sorted((x_of(0.0), x_of(v)))
        out.append(_rect(x0, y + 3, x1 - x0, row - 6, colour, title=f"{label}: {fmt.format(v)}"))
        out.append(_text(left - 6, y + row / 2 + 4, _short(label), "end"))
        out.append(_text(x1 + 3, y + row / 2 + 4, fmt.format(v), extra=' font-size="9"'))
    out += _x_axis(left, right, bottom, x_ticks, x_of, xlabel)
    return Panel(width, bottom + 40, tuple(out))


def columns(
    categories: Sequence[str],
    layers: Sequence[tuple[str, Sequence[float], str]],
    ylabel: str,
    width: float = 640.0,
    notes: Sequence[str] | None = None,
) -> Panel:
    """One column per category, its (label, values, colour) layers stacked bottom up; a legend names the layers
    when there are two or more. ``notes`` (one per category, or None) are printed just above a column's base."""
    totals = [sum(float(layer[1][i]) for layer in layers) for i in range(len(categories))]
    keys = [label for label, _, _ in layers] if len(layers) > 1 else []
    y_ticks = nice_ticks(0.0, max(totals) or 1.0)
    left, top, bottom = _y_label_room(y_ticks), 10.0, 200.0
    right = width - 10 - (_legend_width(keys) + 8 if keys else 0)
    slot = (right - left) / max(len(categories), 1)
    slanted = any(len(_short(c)) * CHAR_PX > slot for c in categories)
    below = 12 + (max(len(_short(c)) for c in categories) * CHAR_PX * 0.5 if slanted else 8)

    def y_of(v: float) -> float:
        return bottom - v / y_ticks[-1] * (bottom - top)

    out = _y_axis(left, top, bottom, y_ticks, y_of, ylabel)
    for i, category in enumerate(categories):
        x, base = left + slot * i + slot * 0.15, 0.0
        for label, values, colour in layers:
            v = float(values[i])
            out.append(
                _rect(x, y_of(base + v), slot * 0.7, y_of(base) - y_of(base + v), colour, title=f"{label}: {v:g}")
            )
            base += v
        centre = left + slot * (i + 0.5)
        if notes and notes[i]:
            out.append(_text(centre, bottom - 4, notes[i], "middle", ' font-size="9"'))
        rotate = f' transform="rotate(-20 {_n(centre)} {_n(bottom + 14)})"' if slanted else ""
        out.append(_text(centre, bottom + 14, _short(category), "end" if slanted else "middle", rotate))
    out.append(_line(left, bottom, right, bottom))
    if keys:
        out += _legend([(label, colour) for label, _, colour in layers], width - 10, top)
    return Panel(width, bottom + below + 8, tuple(out))
