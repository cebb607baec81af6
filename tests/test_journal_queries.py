"""The journal's read queries (journal/queries.py) on SQLite and PostgreSQL: namespaces kept apart, windows' edges,
newest-last order of recent signals."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.factories import T0, candidate
from ultra_signals.core.caps import HOUR_MS
from ultra_signals.core.decision import Decision, Side
from ultra_signals.journal import queries
from ultra_signals.journal.writer import Journal

BAR = 300_000


@pytest.fixture(params=["sqlite", "postgresql"])
def journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Journal]:
    url = f"sqlite:///{tmp_path}/j.db" if request.param == "sqlite" else str(request.getfixturevalue("pg_schema"))
    j = Journal(url)
    yield j
    j.close()


def _fill(j: Journal) -> tuple[str, str]:
    """Namespace a: allowed at T0 (BTC), T0+1 bar (ETH, short), T0+2 bars blocked, T0+12 bars allowed; b: one."""
    a, b = f"a-{uuid.uuid4().hex[:6]}", f"b-{uuid.uuid4().hex[:6]}"
    run = uuid.uuid4().hex[:10]
    j.start_run(run, mode="shadow", profile="shadow", source="sim", simulated=True, namespace=a, settings={})
    j.record(Decision(run, candidate(open_time=T0), True, None), a, True)
    j.record(Decision(run, candidate("ETHUSDT", Side.SHORT, open_time=T0 + BAR), True, None), a, True)
    j.record(Decision(run, candidate(open_time=T0 + 2 * BAR), False, "cooldown"), a, True)
    j.record(Decision(run, candidate(open_time=T0 + 12 * BAR), True, None), a, True)
    j.record(Decision(run, candidate(open_time=T0 + 3 * BAR), True, None), b, True)
    j.flush()
    return a, b


def test_recent_allowed_newest_last_and_per_namespace(journal: Journal) -> None:
    a, b = _fill(journal)
    rows = queries.recent_allowed(journal.engine, a, 2)
    assert [(r["symbol"], r["ts"]) for r in rows] == [("ETHUSDT", T0 + 2 * BAR), ("BTCUSDT", T0 + 13 * BAR)]
    assert rows[0]["side"] == Side.SHORT.value and isinstance(rows[0]["targets"], list) and rows[0]["targets"]
    assert len(queries.recent_allowed(journal.engine, b, 10)) == 1
    assert queries.recent_allowed(journal.engine, "nobody", 10) == []


def test_allowed_times_and_sliding_counts(journal: Journal) -> None:
    a, b = _fill(journal)
    assert queries.allowed_times(journal.engine, a) == [T0 + BAR, T0 + 2 * BAR, T0 + 13 * BAR]
    assert queries.allowed_times(journal.engine, b) == [T0 + 4 * BAR]
    last = T0 + 13 * BAR
    # (last - 1 hour, last]: the signal exactly one hour before is outside, the one at `last` inside
    assert queries.allowed_count(journal.engine, a, last - HOUR_MS, last) == 2
    assert queries.allowed_count(journal.engine, a, last - HOUR_MS - BAR, last) == 3
    assert queries.allowed_count(journal.engine, a, last, last + HOUR_MS) == 0


def test_last_decision_of_a_run(journal: Journal) -> None:
    _fill(journal)
    run = journal.latest_run_id()
    assert run is not None
    assert queries.last_decision_ms(journal.engine, run) == T0 + 13 * BAR
    assert queries.last_decision_ms(journal.engine, "no-such-run") is None
