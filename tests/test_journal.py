"""Journal on SQLite (default, WAL) and PostgreSQL: decisions, immediate commit of allowed ones, restore, state."""

from __future__ import annotations

import gc
import json
import math
import sqlite3
import threading
import uuid
import weakref
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as hs
from sqlalchemy import text
from sqlalchemy.exc import IntegrityError

from tests.conftest import PG_URL, pg_unavailable
from tests.factories import T0, candidate
from ultra_signals.core.decision import Decision
from ultra_signals.journal.db import held_writer
from ultra_signals.journal.writer import Journal, JournalError, _targets_json


@pytest.fixture(params=["sqlite", "postgresql"])
def journal(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Journal]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/var/journal.db"
    else:
        if pg_unavailable() is not None:
            pytest.skip(f"no PostgreSQL answers at {PG_URL}")
        url = PG_URL
    j = Journal(url, batch_size=3)
    yield j
    j.close()


def _start(j: Journal, ns: str) -> str:
    run_id = uuid.uuid4().hex[:10]
    j.start_run(run_id, mode="shadow", profile="shadow", source="replay", simulated=False, namespace=ns, settings={})
    return run_id


def test_sqlite_folder_is_created_and_wal_is_on(tmp_path: Path) -> None:
    j = Journal(f"sqlite:///{tmp_path}/deep/er/j.db")
    with j.engine.connect() as c:
        assert c.execute(text("PRAGMA journal_mode")).scalar() == "wal"
    j.close()


def test_unwritable_journal_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # (tests may run as root, so permissions alone would not stop a write)
    with pytest.raises(JournalError, match="journal sqlite:///"):
        Journal(f"sqlite:///{blocker}/sub/j.db")


def test_allowed_is_committed_at_once_blocked_in_batches(journal: Journal) -> None:
    ns = f"ns-{uuid.uuid4().hex[:8]}"
    run_id = _start(journal, ns)
    other = Journal(journal.url)  # a second reader, as after a crash
    journal.record(Decision(run_id, candidate(open_time=T0), False, "cooldown"), ns, False)
    assert other.decisions(run_id) == []  # buffered
    journal.record(Decision(run_id, candidate(open_time=T0 + 300_000), True, None), ns, False)
    rows = other.decisions(run_id)
    assert [(r["allowed"], r["reason"]) for r in rows] == [(False, "cooldown"), (True, None)]
    for i in range(3):  # batch_size=3 flushes on its own
        journal.record(Decision(run_id, candidate(open_time=T0 + (2 + i) * 300_000), False, "hourly_cap"), ns, False)
    assert len(other.decisions(run_id)) == 5
    other.close()


def test_restore_reservations_per_namespace(journal: Journal) -> None:
    ns, ns2 = f"a-{uuid.uuid4().hex[:8]}", f"b-{uuid.uuid4().hex[:8]}"
    r1, r2 = _start(journal, ns), _start(journal, ns2)
    journal.record(Decision(r1, candidate(open_time=T0), True, None), ns, False)
    journal.record(Decision(r1, candidate(open_time=T0 + 300_000), False, "cooldown"), ns, False)
    journal.record(Decision(r2, candidate(symbol="ETHUSDT", open_time=T0), True, None), ns2, False)
    res = list(journal.allowed_reservations(ns))
    assert [(r.symbol, r.ts_ms) for r in res] == [("BTCUSDT", T0 + 300_000)]
    # The run-independent reservation key (what every runner of the namespace reserves), owned by the run.
    assert res[0].id == f"BTCUSDT:5m:{T0}"
    assert res[0].owner == r1


def test_taken_reason_names_the_winner(journal: Journal) -> None:
    ns = f"t-{uuid.uuid4().hex[:8]}"
    r1 = _start(journal, ns)
    journal.record(Decision(r1, candidate(open_time=T0), False, "taken", taken_by="20261130T170000-abcdef"), ns, False)
    (row,) = journal.decisions(r1)
    assert row["reason"] == "taken:20261130T170000-abcdef"


def test_run_lifecycle_and_state(journal: Journal) -> None:
    run_id = _start(journal, "x")
    journal.end_run(run_id, "completed", {"allowed": {}}, T0, T0 + 1)
    run = journal.run(run_id)
    assert run is not None and run["status"] == "completed" and run["market_end_ms"] == T0 + 1
    key = f"paused-{uuid.uuid4().hex[:6]}"
    assert journal.get_state(key) is None
    journal.set_state(key, "1")
    journal.set_state(key, "0")
    assert journal.get_state(key) == "0"


_EDGES = [0.0, -0.0, 1.0, 1e-5, 5e-5, 9.9e-5, 1e-4, 1.5e-4, 1e15, 9999999999999998.0, 1e16, 1.5e300, 5e-324]
_EDGES += [58389.895639455346, 0.1, 1 / 3, 100.00001, 10.00001, math.nan, math.inf, -math.inf]


@pytest.mark.parametrize("x", _EDGES + [-x for x in _EDGES])
def test_targets_json_is_json_dumps_at_every_layout_edge(x: float) -> None:
    """The journal's targets text is ``json.dumps``'s byte for byte, at each point where orjson's layout differs."""
    assert _targets_json((x,)) == json.dumps([x])
    assert _targets_json((1.0, x, 2.5)) == json.dumps([1.0, x, 2.5])


@settings(max_examples=2000, deadline=None)
@given(hs.lists(hs.floats() | hs.integers(-(10**6), 10**6), max_size=5))
def test_targets_json_is_json_dumps(xs: list[float]) -> None:
    assert _targets_json(tuple(xs)) == json.dumps(xs)


def test_targets_json_of_numpy_floats_is_json_dumps() -> None:
    xs = (np.float64(58389.895639455346), np.float64(1e-5), 2.5)
    assert _targets_json(xs) == json.dumps(list(xs))  # type: ignore[arg-type]
    with pytest.raises(TypeError):  # what json.dumps does with a value it cannot write
        _targets_json((np.float32(0.5),))  # type: ignore[arg-type]


def test_sqlite_hot_writes_hold_one_connection_and_give_it_back(tmp_path: Path) -> None:
    """A SQLite file's flushes share one held connection (with the journal's pragmas), which close() gives back."""
    j = Journal(f"sqlite:///{tmp_path}/j.db", batch_size=1)
    run_id = _start(j, "ns")
    held = held_writer(j.engine)
    assert held is not None and held_writer(j.engine) is held
    j.record(Decision(run_id, candidate(open_time=T0), True, None), "ns", False)
    conn = held._conn
    assert conn is not None and conn.execute("PRAGMA synchronous").fetchone() == (1,)  # NORMAL, as make_engine sets
    j.record(Decision(run_id, candidate(open_time=T0 + 300_000), False, "cooldown"), "ns", False)
    assert held._conn is conn
    j.close()
    assert held._conn is None and held_writer(j.engine) is not held
    with pytest.raises(sqlite3.ProgrammingError):  # closed with the engine
        conn.execute("SELECT 1")
    reader = Journal(j.url)
    assert len(reader.decisions(run_id)) == 2
    reader.close()


def test_sqlite_held_write_error_is_rolled_back_and_raised_as_sqlalchemy_does(tmp_path: Path) -> None:
    j = Journal(f"sqlite:///{tmp_path}/j.db")
    run_id = _start(j, "ns")
    d = Decision(run_id, candidate(open_time=T0), True, None)
    j.record(d, "ns", False)
    with pytest.raises(IntegrityError):  # the same decision id twice: the unique index refuses it
        j.record(d, "ns", False)
    j.record(Decision(run_id, candidate(open_time=T0 + 300_000), True, None), "ns", False)  # not left open
    reader = Journal(j.url)
    assert [r["ts"] for r in reader.decisions(run_id)] == [T0 + 300_000, T0 + 600_000]
    reader.close()
    j.close()


def test_sqlite_writes_from_another_thread_take_the_engine(tmp_path: Path) -> None:
    j = Journal(f"sqlite:///{tmp_path}/j.db")
    run_id = _start(j, "ns")
    j.record(Decision(run_id, candidate(open_time=T0), True, None), "ns", False)  # this thread holds the connection
    seen: list[object] = []

    def other() -> None:
        seen.append(held_writer(j.engine))
        j.record(Decision(run_id, candidate(open_time=T0 + 300_000), True, None), "ns", False)

    t = threading.Thread(target=other)
    t.start()
    t.join()
    assert seen == [None]
    assert len(j.decisions(run_id)) == 2
    j.close()


def test_a_journal_dropped_without_close_does_not_keep_its_engine(tmp_path: Path) -> None:
    """The held connection's registry holds engines weakly: an unclosed journal is freed as it was before."""
    j = Journal(f"sqlite:///{tmp_path}/j.db")
    j.record(Decision(_start(j, "ns"), candidate(open_time=T0), True, None), "ns", False)
    engine = weakref.ref(j.engine)
    del j
    gc.collect()
    assert engine() is None
