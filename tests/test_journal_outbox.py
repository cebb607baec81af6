"""The Telegram outbox store (journal/outbox.py) on SQLite and PostgreSQL: order per chat, idempotency keys across instances, sender isolation."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine, create_engine, text

from tests.conftest import PG_URL, skip_or_fail_under_ci
from ultra_signals.journal import migrate
from ultra_signals.journal.db import make_engine
from ultra_signals.journal.outbox import FAILED, SENT, Outbox
from ultra_signals.journal.writer import Journal


def _pg_engine(schema: str) -> Engine:
    return create_engine(PG_URL, connect_args={"options": f"-csearch_path={schema}"}, pool_pre_ping=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path}/journal.db"
        eng = make_engine(url)
        migrate.upgrade(eng, url)
        yield eng
        eng.dispose()
        return
    schema = f"tg_{uuid.uuid4().hex[:10]}"
    admin = create_engine(PG_URL)
    try:
        with admin.begin() as c:
            c.execute(text(f"CREATE SCHEMA {schema}"))
    except Exception as e:
        admin.dispose()
        skip_or_fail_under_ci(f"no PostgreSQL answers at {PG_URL}", f"under CI it must answer ({e})")
    eng = _pg_engine(schema)
    migrate.upgrade(eng, f"{PG_URL} (schema {schema})")
    yield eng
    eng.dispose()
    with admin.begin() as c:
        c.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()


def test_rows_come_out_in_order_per_chat(engine: Engine) -> None:
    ob = Outbox(engine, "ns:shadow")
    assert ob.enqueue("1", "signal", ["a1", "a2"], "d-a", silent=False)
    assert ob.enqueue("2", "signal", ["b"], "d-b", silent=True)
    assert ob.enqueue("1", "stop", ["c"], None, silent=False)
    assert sorted(ob.chats_with_pending()) == ["1", "2"]
    assert ob.pending_count() == 4
    got = []
    while (row := ob.next_pending("1")) is not None:
        got.append((row.text, row.part))
        assert ob.mark_sent(row.id, 7)
    assert got == [("a1", 0), ("a2", 1), ("c", 0)]
    row = ob.next_pending("2")
    assert row is not None and row.silent and row.kind == "signal"
    ob.note_attempt(row.id, "HTTP 500")
    ob.mark_failed(row.id, "HTTP 403: blocked")
    assert ob.pending_count() == 0
    statuses = [(r["chat_id"], r["status"], r["attempts"]) for r in ob.rows()]
    assert statuses == [("1", SENT, 1), ("1", SENT, 1), ("2", FAILED, 2), ("1", SENT, 1)]
    assert ob.rows("2")[0]["last_error"] == "HTTP 403: blocked"


def test_same_key_is_never_enqueued_twice_even_by_a_new_instance(engine: Engine) -> None:
    ob = Outbox(engine, "ns:shadow")
    assert ob.enqueue("1", "signal", ["x"], "run1:BTCUSDT:5m:1", silent=False)
    row = ob.next_pending("1")
    assert row is not None and ob.mark_sent(row.id, 1)
    again = Outbox(engine, "ns:shadow")  # a restarted process
    assert not again.enqueue("1", "signal", ["x"], "run1:BTCUSDT:5m:1", silent=False)
    assert not again.mark_sent(row.id, 2)  # a sent row cannot be "sent" again
    assert again.enqueue("2", "signal", ["x"], "run1:BTCUSDT:5m:1", silent=False)  # another chat: its own copy
    assert again.pending_count() == 1
    # Without a key there is no de-duplication (start/stop notices without ids).
    assert again.enqueue("1", "start", ["s"], None, silent=False)
    assert again.enqueue("1", "start", ["s"], None, silent=False)


def test_senders_only_see_their_own_rows(engine: Engine) -> None:
    shadow, canary = Outbox(engine, "ns:shadow"), Outbox(engine, "ns:canary")
    shadow.enqueue("1", "signal", ["s"], "k1", silent=False)
    canary.enqueue("1", "signal", ["c"], "k2", silent=False)
    row = shadow.next_pending("1")
    assert row is not None and row.text == "s"
    assert shadow.pending_count() == canary.pending_count() == 1


def test_outbox_shares_the_journal_database(tmp_path: Path) -> None:
    j = Journal(f"sqlite:///{tmp_path}/j.db")
    ob = Outbox(j.engine, "ns:shadow")
    ob.enqueue("1", "signal", ["x"], "k", silent=False)
    j.set_state("paused", "1")
    with j.engine.connect() as c:
        tables = {r[0] for r in c.execute(text("select name from sqlite_master where type='table'"))}
    assert {"telegram_outbox", "decisions", "state"} <= tables
    j.close()
