"""Market events: a bar is read-only by type (mypy) and cheap to build (issue 13)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from mypy import api as mypy_api

from ultra_signals.core.events import Kline, event_time

REPO = Path(__file__).resolve().parents[1]


def _bar(**kw: object) -> Kline:
    return Kline("BTCUSDT", "1m", 0, 59_999, 1.0, 2.0, 0.5, 1.5, 10.0, **kw)  # type: ignore[arg-type]


def test_assigning_a_bar_field_is_a_type_error(tmp_path: Path) -> None:
    """Kline is not frozen at run time (speed), so the guard that no stage changes a bar the others read is
    mypy --strict, which `make check` runs on the package."""
    snippet = tmp_path / "mutate.py"
    snippet.write_text(
        "from ultra_signals.core.events import Kline\n"
        'k = Kline("BTCUSDT", "1m", 0, 59_999, 1.0, 2.0, 0.5, 1.5, 10.0)\n'
        "k.close = 2.0\n"
        "print(k.close)\n"
    )
    out, err, code = mypy_api.run(
        ["--strict", "--no-error-summary", "--cache-dir", str(tmp_path / "cache"), str(snippet)]
    )
    assert code == 1, (out, err)
    lines = out.splitlines()
    assert len(lines) == 1 and "mutate.py:3:" in lines[0] and "read-only" in lines[0], out


def test_a_bar_constructs_type_checks_and_compares_as_before() -> None:
    a, b = _bar(), _bar()
    assert a == b and hash(a) == hash(b) and len({a, b}) == 1  # hashable, as the frozen class was
    assert a != _bar(closed=False) and a.key == ("BTCUSDT", "1m", 0)
    assert not hasattr(a, "__dict__")  # slotted: no per-bar dict
    assert dataclasses.replace(a, close=1.6).close == 1.6 and a.close == 1.5
    assert event_time(a) == 60_000 and event_time(_bar(closed=False)) == 0
