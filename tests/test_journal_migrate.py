"""Journal migrations (journal/migrate.py): a 0.1.0 journal upgrades to the head without losing a row, the app
then reads and writes it, upgrade → downgrade → upgrade keeps every row, the schema module equals the migrations'
head, and a journal written by a newer release is refused with a clear error — on SQLite and on PostgreSQL.

The 0.1.0 journal is ``tests/fixtures/journal-0.1.0.sqlite``, written by 0.1.0's own code (see
``tests/fixtures/make_journal_0_1_0.py``).  On PostgreSQL each test works in a schema of its own (``search_path``),
dropped afterwards, so parallel runs do not collide; the 0.1.0 journal is rebuilt there with the baseline's frozen
tables (what 0.1.0's ``create_all`` made) and the fixture's rows.
"""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Engine, create_engine, insert, inspect, select, text

from ultra_signals.apps.rollout import status as rollout_status
from ultra_signals.core.caps import reservation_id_of
from ultra_signals.core.config import load_settings
from ultra_signals.counters.factory import policy_from
from ultra_signals.counters.windows import MemoryCounters
from ultra_signals.execution.breakers import TradingState, load_state
from ultra_signals.journal import migrate
from ultra_signals.journal.db import JournalError, make_engine
from ultra_signals.journal.outbox import Outbox
from ultra_signals.journal.schema import SCHEMA_HEAD, metadata
from ultra_signals.journal.trading import ExecStore
from ultra_signals.journal.writer import Journal

FIXTURE = Path(__file__).parent / "fixtures" / "journal-0.1.0.sqlite"
TABLES_0_1_0 = (
    "runs",
    "decisions",
    "state",
    "exec_orders",
    "exec_fills",
    "exec_trades",
    "exec_events",
    "telegram_outbox",
)
NS = "fixture:shadow"  # the fixture's journal namespace (counter namespace "fixture", profile shadow)


def _dump(engine: Engine) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every 0.1.0 table, in a stable order, through the 0.1.0 table definitions."""
    out: dict[str, list[tuple[Any, ...]]] = {}
    with engine.connect() as c:
        for table in migrate.baseline_tables().sorted_tables:
            key = list(table.primary_key.columns)
            out[table.name] = [tuple(r) for r in c.execute(select(table).order_by(*key))]
    return out


def _fixture_rows() -> dict[str, list[tuple[Any, ...]]]:
    eng = create_engine(f"sqlite:///{FIXTURE}")
    try:
        return _dump(eng)
    finally:
        eng.dispose()


@pytest.fixture
def sqlite_0_1_0(tmp_path: Path) -> str:
    """A copy of the committed 0.1.0 journal (the file in the repo is never written)."""
    path = tmp_path / "journal.db"
    shutil.copyfile(FIXTURE, path)
    return f"sqlite:///{path}"


def _pg_0_1_0(url: str) -> None:
    """The fixture's journal rebuilt on PostgreSQL as 0.1.0 made it: its create_all tables, then its rows."""
    src = create_engine(f"sqlite:///{FIXTURE}")
    dst = make_engine(url)
    try:
        baseline = migrate.baseline_tables()
        baseline.create_all(dst)
        with src.connect() as s, dst.begin() as d:
            for table in baseline.sorted_tables:
                rows = [dict(r) for r in s.execute(select(table)).mappings()]
                if rows:
                    d.execute(insert(table), rows)
                if "id" in table.c and table.c.id.autoincrement is True:  # as if 0.1.0 had inserted them itself
                    d.execute(
                        text(f"SELECT setval(pg_get_serial_sequence('{table.name}', 'id'), max(id)) FROM {table.name}")
                    )
    finally:
        src.dispose()
        dst.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def journal_0_1_0(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_0_1_0"))
    url = str(request.getfixturevalue("pg_schema"))
    _pg_0_1_0(url)
    return url


def _indexes(engine: Engine, table: str) -> set[str]:
    return {str(i["name"]) for i in inspect(engine).get_indexes(table)}


# -- the 0.1.0 fixture ------------------------------------------------------------------------------------------
def test_fixture_is_an_unversioned_0_1_0_journal_with_rows_in_every_table() -> None:
    con = sqlite3.connect(f"file:{FIXTURE}?mode=ro", uri=True)
    try:
        names = {n for (n,) in con.execute("select name from sqlite_master where type='table'")}
        assert names == set(TABLES_0_1_0)  # no alembic_version: 0.1.0 had no migrations
        for t in TABLES_0_1_0:
            assert con.execute(f'select count(*) from "{t}"').fetchone()[0] > 0, t
        assert con.execute("select count(*) from decisions where allowed").fetchone()[0] >= 1
        assert con.execute("select count(*) from decisions where not allowed").fetchone()[0] >= 1
    finally:
        con.close()
    assert FIXTURE.stat().st_size < 300_000


def test_upgrade_keeps_every_row(journal_0_1_0: str) -> None:
    before = _fixture_rows()
    eng = make_engine(journal_0_1_0)
    try:
        rev = migrate.current(eng)
        assert rev.current is None and rev.unversioned and rev.known
        assert migrate.upgrade(eng, journal_0_1_0) == (None, migrate.head())
        assert migrate.current(eng).at_head
        after = _dump(eng)
        assert {t: len(r) for t, r in after.items()} == {t: len(r) for t, r in before.items()}
        assert after == before  # row for row, column for column
        assert "ix_exec_events_kind" in _indexes(eng, "exec_events")
        # opening again is a no-op
        assert migrate.upgrade(eng, journal_0_1_0) == (migrate.head(), migrate.head())
    finally:
        eng.dispose()


def test_the_app_reads_and_writes_an_upgraded_0_1_0_journal(journal_0_1_0: str) -> None:
    j = Journal(journal_0_1_0)  # opening upgrades
    try:
        assert j.schema_from is None and j.schema == migrate.head()
        # counters are rebuilt from the journal's allowed signals, as a runner does at start
        seed = list(j.allowed_reservations(NS))
        allowed = [r for r in _fixture_rows()["decisions"] if r[10]]  # column 10: allowed
        # 0.1.0's run-scoped ids read back as run-independent reservation keys, owned by the run (issue 12, item 2)
        assert sorted(r.id for r in seed) == sorted(reservation_id_of(str(r[1])) for r in allowed)
        assert sorted(r.owner for r in seed) == sorted(str(r[2]) for r in allowed)
        counters = MemoryCounters(policy_from(load_settings("shadow").sniper))
        counters.seed(seed)
        last = max(r.ts_ms for r in seed)
        assert counters.window_counts(last)["day"] == len(seed)
        # the run history, the trading state, the trades, the gate, the outbox
        runs = j.runs()
        assert len(runs) == 2 and {r["status"] for r in runs} == {"completed"}
        assert j.decisions(str(runs[0]["run_id"])) or j.decisions(str(runs[1]["run_id"]))
        assert load_state(j).state is TradingState.ACTIVE
        assert j.get_state("paused") == "0"
        store = ExecStore(j.engine)
        assert len(store.closed_trades("default", "paper")) == 2
        assert [e["kind"] for e in store.events(kind="resume")] == ["resume"]
        st = rollout_status(j)
        assert len(st["runs"]) == 2 and [g["verdict"] for g in st["gates"]] == ["NO-GO"]
        box = Outbox(j.engine, "fixture:shadow")
        assert box.pending_count() == 2
        nxt = box.next_pending("1001")
        assert nxt is not None and nxt.part == 0 and nxt.kind == "daily_summary"
        # and it takes new rows of every kind
        assert box.enqueue("1001", "signal", ["new"], chat_key="after-upgrade", silent=False)
        assert not box.enqueue("1001", "signal", ["<b>BTCUSDT</b> LONG"], chat_key="fixture-d1", silent=False)
        store.event("gate", "shadow", {"verdict": "GO", "criteria": []}, run_id="after")
        j.start_run("after", mode="shadow", profile="shadow", source="sim", simulated=True, namespace=NS, settings={})
        j.set_state("paused", "1")
        assert j.latest_run_id() == "after" and j.get_state("paused") == "1"
    finally:
        j.close()


def test_downgrade_to_baseline_and_up_again_keeps_every_row(journal_0_1_0: str) -> None:
    before = _fixture_rows()
    eng = make_engine(journal_0_1_0)
    try:
        migrate.upgrade(eng, journal_0_1_0)
        assert migrate.downgrade(eng, journal_0_1_0, migrate.BASELINE) == (migrate.head(), migrate.BASELINE)
        assert migrate.current(eng).current == migrate.BASELINE
        assert "ix_exec_events_kind" not in _indexes(eng, "exec_events")
        assert _dump(eng) == before
        assert migrate.upgrade(eng, journal_0_1_0) == (migrate.BASELINE, migrate.head())
        assert "ix_exec_events_kind" in _indexes(eng, "exec_events")
        assert _dump(eng) == before
    finally:
        eng.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/new/journal.db"
    return str(request.getfixturevalue("pg_schema"))


def test_schema_head_is_the_newest_revision() -> None:
    assert migrate.head() == SCHEMA_HEAD


@pytest.mark.parametrize("how", ["stamped", "migrated"])
def test_a_new_journal_equals_the_schema_module(empty_url: str, how: str) -> None:
    """``schema.py`` and the revisions must agree, however a new journal came to be: ``stamped`` is the start-up path
    (create_all + stamp), ``migrated`` runs every revision.  A change to one without the other fails here."""
    eng = make_engine(empty_url)
    try:
        if how == "stamped":
            assert migrate.upgrade(eng, empty_url) == (None, SCHEMA_HEAD)
        else:
            assert migrate.upgrade(eng, empty_url, migrate.head()) == (None, SCHEMA_HEAD)
        assert migrate.current(eng).at_head
        with eng.connect() as c:
            diff = compare_metadata(MigrationContext.configure(c), metadata)
            assert MigrationContext.configure(c).get_current_heads() == (SCHEMA_HEAD,)
        assert diff == []
        # down to base removes every journal table, and up again rebuilds them
        migrate.downgrade(eng, empty_url, "base")
        assert set(inspect(eng).get_table_names()) & set(metadata.tables) == set()
        migrate.upgrade(eng, empty_url)
        assert set(metadata.tables) <= set(inspect(eng).get_table_names())
    finally:
        eng.dispose()


def test_stamped_and_migrated_sqlite_journals_have_the_same_ddl(tmp_path: Path) -> None:
    """On SQLite the stored DDL itself can be compared: the two ways give the same tables and indexes."""
    ddl = []
    for name, target in (("stamped", "head"), ("migrated", SCHEMA_HEAD)):
        url = f"sqlite:///{tmp_path}/{name}.db"
        eng = make_engine(url)
        migrate.upgrade(eng, url, target)
        with eng.connect() as c:
            rows = c.execute(text("SELECT type, name, tbl_name, sql FROM sqlite_master")).all()
        eng.dispose()
        ddl.append(sorted(tuple(r) for r in rows))
    assert ddl[0] == ddl[1]
    assert any(r[1] == "ix_exec_events_kind" for r in ddl[0])


def test_a_journal_newer_than_the_code_is_refused_and_left_alone(journal_0_1_0: str) -> None:
    eng = make_engine(journal_0_1_0)
    try:
        migrate.upgrade(eng, journal_0_1_0)
        with eng.begin() as c:
            c.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
        before = _dump(eng)
    finally:
        eng.dispose()
    with pytest.raises(JournalError) as ei:
        Journal(journal_0_1_0)
    msg = str(ei.value)
    assert "9999_from_the_future" in msg and "newer release" in msg and migrate.head() in msg
    assert "Traceback" not in msg
    eng = make_engine(journal_0_1_0)
    try:
        assert _dump(eng) == before
        rev = migrate.current(eng)
        assert rev.current == "9999_from_the_future" and not rev.known
        with pytest.raises(JournalError, match="newer release"):
            migrate.downgrade(eng, journal_0_1_0, migrate.BASELINE)
    finally:
        eng.dispose()


# -- unversioned journals that are, or are not, 0.1.0's ---------------------------------------------------------
def test_a_0_1_0_journal_without_execution_and_outbox_tables_gets_them(sqlite_0_1_0: str) -> None:
    """0.1.0 created exec_* only with an executor and telegram_outbox only with a Telegram sink."""
    path = sqlite_0_1_0.removeprefix("sqlite:///")
    con = sqlite3.connect(path)
    for t in ("exec_orders", "exec_fills", "exec_trades", "exec_events", "telegram_outbox"):
        con.execute(f'DROP TABLE "{t}"')
    con.commit()
    con.close()
    before = _fixture_rows()
    j = Journal(sqlite_0_1_0)
    try:
        after = _dump(j.engine)
        for t in ("runs", "decisions", "state"):
            assert after[t] == before[t]
        assert ExecStore(j.engine).events() == [] and Outbox(j.engine, "x").rows() == []
        with j.engine.connect() as c:
            assert compare_metadata(MigrationContext.configure(c), metadata) == []
    finally:
        j.close()


def test_an_unversioned_journal_with_other_columns_is_not_adopted(tmp_path: Path) -> None:
    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE runs (run_id TEXT PRIMARY KEY, owner TEXT)")
    con.commit()
    con.close()
    with pytest.raises(JournalError) as ei:
        Journal(f"sqlite:///{path}")
    msg = str(ei.value)
    assert "'runs'" in msg and "owner" in msg and "0.1.0" in msg
    con = sqlite3.connect(path)
    try:  # nothing was created beside it
        names = {n for (n,) in con.execute("select name from sqlite_master where type='table'")}
    finally:
        con.close()
    assert names == {"runs"}


def test_an_unknown_target_revision_is_a_clear_error(sqlite_0_1_0: str) -> None:
    eng = make_engine(sqlite_0_1_0)
    try:
        migrate.upgrade(eng, sqlite_0_1_0)
        with pytest.raises(JournalError, match="unknown revision 'nope'"):
            migrate.downgrade(eng, sqlite_0_1_0, "nope")
        assert migrate.current(eng).at_head
    finally:
        eng.dispose()


def test_processes_opening_a_new_journal_together_upgrade_it_once(empty_url: str) -> None:
    """Four openers at once (threads standing in for runners): every one gets a journal at the head."""
    errors: list[BaseException] = []
    results: list[tuple[str | None, str]] = []
    start = threading.Barrier(4, timeout=30)

    def opener() -> None:
        try:
            eng = make_engine(empty_url)
            try:
                start.wait()
                results.append(migrate.upgrade(eng, empty_url))
            finally:
                eng.dispose()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=opener) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    head = migrate.head()
    assert sorted(results, key=str) == sorted([(None, head)] + [(head, head)] * 3, key=str)
