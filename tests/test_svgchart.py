"""The report's SVG price chart: what is drawn where, read back from the SVG; and what a real browser makes of it."""

from __future__ import annotations

import asyncio
import itertools
import math
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ultra_signals.apps.svgchart import Marks, nice_ticks, price_chart, time_ticks

NS = {"s": "http://www.w3.org/2000/svg"}
T0 = 1_700_000_000_000
MIN = 60_000


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)


def _points(root: ET.Element) -> list[tuple[float, float]]:
    line = root.find("s:polyline[@class='price']", NS)
    assert line is not None
    return [(float(x), float(y)) for x, y in (p.split(",") for p in line.attrib["points"].split())]


def _marks(root: ET.Element) -> dict[str, ET.Element]:
    return {m.attrib["data-label"]: m for m in root.findall("s:path[@class='marks']", NS)}


def _apexes(path: ET.Element) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in re.findall(r"M(-?[\d.]+),(-?[\d.]+)", path.attrib["d"])]


def _texts(root: ET.Element) -> list[str]:
    return [t.text or "" for t in root.iter("{http://www.w3.org/2000/svg}text")]


def _chart(**kw: object) -> str:
    args: dict[str, object] = {
        "title": "BTCUSDT — run r1",
        "x_label": "bar open time (UTC)",
        "y_label": "price",
        "line_label": "BTCUSDT close",
        "times_ms": [T0 + i * MIN for i in range(100)],
        "prices": [100.0 + i for i in range(100)],
    }
    args.update(kw)
    return price_chart(**args)  # type: ignore[arg-type]


def test_the_line_runs_left_to_right_and_up_with_the_price() -> None:
    root = _parse(_chart())
    pts = _points(root)
    assert len(pts) == 100
    assert all(b[0] > a[0] for a, b in itertools.pairwise(pts))  # time to the right
    assert all(b[1] < a[1] for a, b in itertools.pairwise(pts))  # a higher price is higher up
    frame = root.find("s:rect[@class='frame']", NS)
    assert frame is not None
    x0, y0 = float(frame.attrib["x"]), float(frame.attrib["y"])
    x1, y1 = x0 + float(frame.attrib["width"]), y0 + float(frame.attrib["height"])
    assert all(x0 < x < x1 and y0 < y < y1 for x, y in pts)  # inside the plot, with margins
    # Equal steps in time and price are equal steps on the canvas (a linear scale).
    dx = {round(b[0] - a[0], 1) for a, b in itertools.pairwise(pts)}
    assert max(dx) - min(dx) <= 0.2


def test_a_marker_sits_on_the_point_of_its_bar_and_price() -> None:
    times = [T0 + i * MIN for i in range(100)]
    prices = [100.0 + (i % 7) for i in range(100)]
    m = Marks("LONG allowed", [times[40]], [prices[40]], "up", "#1a9850", filled=True, size=6.0)
    s = Marks("SHORT blocked", [times[70]], [prices[70]], "down", "#d73027", filled=False, size=4.0, opacity=0.8)
    root = _parse(_chart(times_ms=times, prices=prices, marks=[s, m]))
    pts = _points(root)
    marks = _marks(root)
    ((ax, ay),) = _apexes(marks["LONG allowed"])
    assert ax == pytest.approx(pts[40][0], abs=0.05) and ay == pytest.approx(pts[40][1] - 6.0, abs=0.11)
    ((bx, by),) = _apexes(marks["SHORT blocked"])
    assert bx == pytest.approx(pts[70][0], abs=0.05) and by == pytest.approx(pts[70][1] + 4.0, abs=0.11)
    assert marks["LONG allowed"].attrib["fill"] == "#1a9850"
    assert marks["SHORT blocked"].attrib["fill"] == "none" and marks["SHORT blocked"].attrib["opacity"] == "0.8"
    # Drawn in the order given: the allowed group last, on top.
    assert [p.attrib["data-label"] for p in root.findall("s:path[@class='marks']", NS)] == [
        "SHORT blocked",
        "LONG allowed",
    ]


def test_markers_on_one_pixel_are_drawn_once_and_all_counted() -> None:
    """A 30-day run's thousands of blocked candidates: the file stays small, the legend keeps the count."""
    times = [T0 + 50 * MIN] * 500 + [T0 + 10 * MIN]
    prices = [120.0] * 500 + [105.0]
    root = _parse(_chart(marks=[Marks("LONG blocked", times, prices, "up", "#1a9850", filled=False)]))
    group = _marks(root)["LONG blocked"]
    assert len(_apexes(group)) == 2 and group.attrib["data-count"] == "501"
    assert "LONG blocked (501)" in _texts(root)


def test_the_axes_take_in_the_markers_outside_the_line() -> None:
    """A candidate's entry above every close is still inside the plot (both axes span line and markers)."""
    root = _parse(_chart(marks=[Marks("LONG allowed", [T0 + 99 * MIN], [500.0], "up", "#1a9850", filled=True)]))
    frame = root.find("s:rect[@class='frame']", NS)
    assert frame is not None
    ((_x, y),) = _apexes(_marks(root)["LONG allowed"])
    assert float(frame.attrib["y"]) < y + 5.0  # the apex is 5 px above the entry, the entry inside
    labels = [float(t) for t in _texts(root) if re.fullmatch(r"-?\d+(\.\d+)?", t)]
    assert max(labels) >= 450.0  # the price axis reaches the marker


def test_ticks_label_the_axes_in_utc_and_round_prices() -> None:
    root = _parse(
        _chart(times_ms=[T0 + i * 3_600_000 for i in range(24 * 30)], prices=[30_000.0 + i for i in range(720)])
    )
    texts = _texts(root)
    days = [t for t in texts if re.fullmatch(r"\d{4}-\d{2}-\d{2}", t)]
    assert 3 <= len(days) <= 11
    first = datetime.strptime(days[0], "%Y-%m-%d").replace(tzinfo=UTC)
    assert T0 <= first.timestamp() * 1000 <= T0 + 30 * 86_400_000
    prices = [t for t in texts if re.fullmatch(r"\d+", t)]
    assert prices and all(int(p) % 100 == 0 for p in prices)


def test_text_is_escaped_and_titles_name_the_run() -> None:
    svg = _chart(title='A<&>"B — SIMULATED', line_label="<close>")
    root = _parse(svg)  # well-formed
    title = root.find("s:title", NS)
    assert title is not None and title.text == 'A<&>"B — SIMULATED'
    assert "<close> " not in svg and "<close>" in _texts(root)


@pytest.mark.parametrize(
    ("times", "prices"),
    [
        ([T0], [42.0]),  # one bar
        ([T0 + i * MIN for i in range(10)], [7.0] * 10),  # a flat price
        ([T0, T0 + MIN, T0 + 2 * MIN], [1.0, math.nan, 3.0]),  # a missing price
        ([], []),  # nothing at all
        ([T0 + i * MIN for i in range(5)], [0.0] * 5),  # flat at zero
    ],
)
def test_degenerate_series_still_give_a_valid_chart(times: list[int], prices: list[float]) -> None:
    svg = _chart(times_ms=times, prices=prices, marks=[Marks("LONG blocked", times, prices, "up", "#000", False)])
    root = _parse(svg)
    assert len(_points(root)) == sum(1 for p in prices if math.isfinite(p))
    assert "nan" not in svg.lower() and "inf" not in svg.lower()


@given(
    lo=st.floats(min_value=-1e9, max_value=1e9, allow_nan=False),
    span=st.floats(min_value=1e-6, max_value=1e9),
    most=st.integers(min_value=5, max_value=12),
)
def test_nice_ticks_are_inside_evenly_spaced_and_tell_apart(lo: float, span: float, most: int) -> None:
    """What the reader sees: labels inside the range, one round step apart, never two alike."""
    hi = lo + span
    if span < abs(lo) * 1e-6:  # a range a millionth of the level: no price chart has one, and floats blur it
        return
    ticks, decimals = nice_ticks(lo, hi, most)
    assert 1 <= len(ticks) <= most
    tol = span * 1e-9
    assert all(lo - tol <= t <= hi + tol for t in ticks)
    labels = [Decimal(f"{t:.{decimals}f}") for t in ticks]
    steps = {b - a for a, b in itertools.pairwise(labels)}
    assert len(steps) <= 1  # evenly spaced, as printed
    if steps:
        (step,) = steps
        assert step > 0 and step.normalize().as_tuple().digits in {(1,), (2,), (2, 5), (5,)}
    assert len(ticks) >= 2  # the step chosen is at most 2.5 × one that gave more than ``most`` ticks


@given(t0=st.integers(min_value=0, max_value=4_000_000_000_000), span=st.integers(min_value=60_000, max_value=10**12))
def test_time_ticks_are_round_utc_times_inside(t0: int, span: int) -> None:
    ticks, fmt = time_ticks(t0, t0 + span, most=10)
    assert len(ticks) <= 10 and all(t0 <= t <= t0 + span for t in ticks)
    assert ticks == sorted(ticks)
    if len(ticks) >= 2:
        assert (ticks[1] - ticks[0]) % 60_000 == 0
        assert fmt == ("%Y-%m-%d" if ticks[1] - ticks[0] >= 86_400_000 else "%m-%d %H:%M")


def test_a_browser_draws_it(tmp_path: Path, chromium: Path) -> None:
    """Chromium loads the file as an image: the line has length, every marker lies inside the plot."""
    from playwright.async_api import async_playwright

    times = [T0 + i * MIN for i in range(300)]
    prices = [100.0 + math.sin(i / 20) * 5 for i in range(300)]
    marks = [
        Marks("LONG blocked", times[::7], prices[::7], "up", "#1a9850", filled=False),
        Marks("SHORT allowed", times[::50], prices[::50], "down", "#d73027", filled=True, size=6.0),
    ]
    path = tmp_path / "chart.svg"
    path.write_text(_chart(times_ms=times, prices=prices, marks=marks), encoding="utf-8")

    async def main() -> dict[str, object]:
        async with async_playwright() as p:
            browser = await p.chromium.launch(executable_path=str(chromium), headless=True)
            try:
                page = await browser.new_page(viewport={"width": 1100, "height": 450})
                await page.goto(path.as_uri())
                got: dict[str, object] = await page.evaluate(
                    """() => {
                        const f = document.querySelector("rect.frame").getBBox();
                        const line = document.querySelector("polyline.price");
                        const inside = [...document.querySelectorAll("path.marks")].map((m) => {
                          const b = m.getBBox();
                          return b.x >= f.x && b.y >= f.y && b.x + b.width <= f.x + f.width
                            && b.y + b.height <= f.y + f.height;
                        });
                        return {length: line.getTotalLength(), inside, texts: document.querySelectorAll("text").length};
                    }"""
                )
                await page.screenshot(path=str(tmp_path / "chart.png"))
                return got
            finally:
                await browser.close()

    got = asyncio.run(main())
    assert float(got["length"]) > 500  # type: ignore[arg-type]
    assert got["inside"] == [True, True]
    assert int(got["texts"]) > 10  # type: ignore[call-overload]
    assert (tmp_path / "chart.png").stat().st_size > 5_000
