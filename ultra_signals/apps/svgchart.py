"""A price chart with signal markers, written as SVG text: the shadow/replay report's charts (issue 13).

Why not matplotlib, which drew them before: a chart here is one line, a few groups of triangles, two axes with
ticks, a grid, a title and a legend.  matplotlib's import and its per-chart layout, text and axis machinery (drawn
twice for a tight bounding box) cost about 30 % of a 30-day replay's whole process (0.7 s on a fast machine, 3.2 s
profiled on a slow one, for three charts), most of the report.  Writing the SVG directly takes milliseconds, and
the result is vector (sharp at any zoom), small, shown by every browser, GitHub and editors, and its content can be
read back by a test.  The status page already draws its charts as SVG the same way (``web/page.py``).

Pure: builds a string, no I/O.  ``evaluate`` and the TCA report still draw with matplotlib (step lines, bands):
those commands are not on the replay's path.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal
from xml.sax.saxutils import escape, quoteattr

#: Tick steps for a time axis, in minutes (1 min … 1 day, 2 d, 3 d, 1 w, 2 w, 4 w, 13 w, 1 y): the smallest that
#: keeps the labels apart is used.
_TIME_STEPS_MIN = (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440, 2880, 4320, 10080, 20160, 40320, 131040, 525600)
_TIME_STEPS_MS = tuple(m * 60_000 for m in _TIME_STEPS_MIN)
_DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Marks:
    """One group of markers: the same shape, colour and fill, one legend entry (``label (count)``)."""

    label: str
    times_ms: Sequence[int]
    prices: Sequence[float]
    shape: Literal["up", "down"]
    color: str
    filled: bool
    #: Half the triangle's width in px.
    size: float = 5.0
    opacity: float = 1.0


@dataclass(frozen=True, slots=True)
class Frame:
    """Where data lands on the canvas: the plot area and the two axes' ranges (after margins)."""

    left: float
    top: float
    width: float
    height: float
    t0: float
    t1: float
    y0: float
    y1: float

    def x(self, t: float) -> float:
        return self.left + (t - self.t0) * self.width / (self.t1 - self.t0)

    def y(self, v: float) -> float:
        return self.top + self.height - (v - self.y0) * self.height / (self.y1 - self.y0)


def nice_ticks(lo: float, hi: float, most: int = 8) -> tuple[list[float], int]:
    """Ticks inside [lo, hi] at a step of 1, 2, 2.5 or 5 × 10^k, at most ``most`` of them; and the decimals that
    tell neighbouring ticks apart.  ``lo < hi`` and both finite."""
    raw = (hi - lo) / max(1, most - 1)
    k = math.floor(math.log10(raw))
    m = 10.0
    for m in (1.0, 2.0, 2.5, 5.0, 10.0):  # 10 × 10^k >= raw always fits
        if math.floor(hi / (m * 10.0**k)) - math.ceil(lo / (m * 10.0**k)) + 1 <= most:
            break
    step = m * 10.0**k
    # Multiples of the step, computed from integers (no accumulated error: 0.1 + 0.2 is not 0.3).
    ticks = [i * step for i in range(math.ceil(lo / step), math.floor(hi / step) + 1)]
    # 2.5 × 10^k needs one decimal more than 10^k; 10 × 10^k one fewer.
    decimals = max(0, -k + (1 if m == 2.5 else -1 if m == 10.0 else 0))
    return ticks, decimals


def time_ticks(t0: float, t1: float, most: int = 8) -> tuple[list[int], str]:
    """Tick times (epoch ms, UTC multiples of a round step) inside [t0, t1], and their strftime format."""
    year = _TIME_STEPS_MS[-1]
    # Past the table: whole years, as many as keep the count (span / step + 1 <= most).
    step = year * max(1, math.ceil((t1 - t0) / (year * max(1, most - 1))))
    for s in _TIME_STEPS_MS:
        if math.floor(t1 / s) - math.ceil(t0 / s) + 1 <= most:
            step = s
            break
    ticks = [i * step for i in range(math.ceil(t0 / step), math.floor(t1 / step) + 1)]
    return ticks, ("%Y-%m-%d" if step >= _DAY_MS else "%m-%d %H:%M")


def _triangle(x: float, y: float, size: float, shape: Literal["up", "down"]) -> str:
    """A triangle of half-width ``size`` centred near (x, y), pointing up or down, as path commands."""
    h = 1.7 * size
    if shape == "up":
        return f"M{x:.1f},{y - size:.1f}l{size:g},{h:g}h{-2 * size:g}z"
    return f"M{x:.1f},{y + size:.1f}l{size:g},{-h:g}h{-2 * size:g}z"


def _triangles(marks: Marks, frame: Frame) -> str:
    """One path of every marker of a group.

    A marker that would land on the pixel of one already drawn in its group is left out: the group is painted
    with one opacity, so the picture is the same, and a 30-day run's thousands of blocked candidates stay a
    small file.
    """
    seen: set[tuple[int, int]] = set()
    parts: list[str] = []
    for t, p in zip(marks.times_ms, marks.prices, strict=True):
        if not math.isfinite(p):
            continue
        x = frame.x(t)
        y = frame.y(p)
        key = (round(x), round(y))
        if key not in seen:
            seen.add(key)
            parts.append(_triangle(x, y, marks.size, marks.shape))
    return "".join(parts)


def _text(x: float, y: float, text: str, **attrs: str) -> str:
    extra = "".join(f" {k.replace('_', '-')}={quoteattr(v)}" for k, v in attrs.items())
    return f'<text x="{x:.1f}" y="{y:.1f}"{extra}>{escape(text)}</text>'


def price_chart(
    *,
    title: str,
    x_label: str,
    y_label: str,
    line_label: str,
    times_ms: Sequence[int],
    prices: Sequence[float],
    marks: Sequence[Marks] = (),
    width: int = 1100,
    height: int = 450,
) -> str:
    """A standalone SVG document: ``prices`` against ``times_ms`` as a line, each :class:`Marks` group on top.

    Both axes take in the line and every marker, with 5 % margins, as the charts had before.  The legend sits
    under the plot, so it never hides data.
    """
    pts = [(t, p) for t, p in zip(times_ms, prices, strict=True) if math.isfinite(p)]
    xs = [t for t, _ in pts] + [t for m in marks for t, p in zip(m.times_ms, m.prices, strict=True) if math.isfinite(p)]
    ys = [p for _, p in pts] + [p for m in marks for p in m.prices if math.isfinite(p)]
    if xs:
        t0, t1, y0, y1 = float(min(xs)), float(max(xs)), min(ys), max(ys)
    else:
        t0, t1, y0, y1 = 0.0, 1.0, 0.0, 1.0
    if t1 == t0:
        t0, t1 = t0 - 60_000, t1 + 60_000
    if y1 == y0:
        d = abs(y0) * 0.01 or 1.0
        y0, y1 = y0 - d, y1 + d
    mt, my = (t1 - t0) * 0.05, (y1 - y0) * 0.05
    left, right, top, bottom = 86.0, 18.0, 34.0, 78.0
    f = Frame(left, top, width - left - right, height - top - bottom, t0 - mt, t1 + mt, y0 - my, y1 + my)
    bottom_y = f.top + f.height
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label={quoteattr(title)} font-family="DejaVu Sans, Arial, sans-serif" font-size="12">',
        f"<title>{escape(title)}</title>",
        f'<rect width="{width}" height="{height}" fill="#ffffff"/>',
        _text(width / 2, 20, title, text_anchor="middle", font_size="14"),
    ]
    # Grid and ticks.
    grid: list[str] = []
    labels: list[str] = []
    yt, dec = nice_ticks(f.y0, f.y1)
    for v in yt:
        y = f.y(v)
        grid.append(f"M{f.left:.1f},{y:.1f}H{f.left + f.width:.1f}")
        labels.append(_text(f.left - 6, y + 4, f"{v:.{dec}f}", text_anchor="end"))
    tt, fmt = time_ticks(f.t0, f.t1, most=max(2, int(f.width // 90)))  # a label is ~70 px wide
    for t in tt:
        x = f.x(t)
        grid.append(f"M{x:.1f},{f.top:.1f}V{bottom_y:.1f}")
        labels.append(
            _text(x, bottom_y + 16, datetime.fromtimestamp(t / 1000, tz=UTC).strftime(fmt), text_anchor="middle")
        )
    out.append(f'<path class="grid" d="{"".join(grid)}" stroke="#000000" stroke-opacity="0.15" fill="none"/>')
    out.append(
        f'<rect class="frame" x="{f.left:.1f}" y="{f.top:.1f}" width="{f.width:.1f}" height="{f.height:.1f}" '
        'fill="none" stroke="#000000" stroke-width="0.8"/>'
    )
    out.extend(labels)
    out.append(_text(f.left + f.width / 2, bottom_y + 36, x_label, text_anchor="middle"))
    out.append(
        _text(0, 0, y_label, text_anchor="middle", transform=f"translate(18,{f.top + f.height / 2:.1f}) rotate(-90)")
    )
    # Data.
    line = " ".join(f"{f.x(t):.1f},{f.y(p):.1f}" for t, p in pts)
    out.append(f'<polyline class="price" points="{line}" fill="none" stroke="#333333" stroke-width="0.9"/>')
    legend: list[tuple[str, str]] = [('<path d="M0,-4h22" stroke="#333333" stroke-width="1.2"/>', line_label)]
    for m in marks:
        style = (
            f'fill="{m.color if m.filled else "none"}" stroke="{m.color}" '
            f'stroke-width="{1.0 if m.filled else 1.2:g}" opacity="{m.opacity:g}"'
        )
        n = sum(1 for p in m.prices if math.isfinite(p))
        out.append(
            f'<path class="marks" data-label={quoteattr(m.label)} data-count="{n}" d="{_triangles(m, f)}" {style}/>'
        )
        legend.append((f'<path d="{_triangle(11, -4, m.size, m.shape)}" {style}/>', f"{m.label} ({n})"))
    # Legend: one row under the x label, entries spaced by their text (about 6.5 px per character at 11 px).
    x = f.left
    row = [f'<g class="legend" font-size="11" transform="translate(0,{height - 12})">']
    for swatch, text in legend:
        row.append(f'<g transform="translate({x:.1f},0)">{swatch}{_text(28, 0, text)}</g>')
        x += 40 + 6.5 * len(text)
    row.append("</g>")
    out.extend(row)
    out.append("</svg>")
    return "\n".join(out) + "\n"
