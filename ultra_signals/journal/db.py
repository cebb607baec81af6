"""The journal's engine: one place that knows SQLite's durability settings and how a URL is shown in errors."""

from __future__ import annotations

import threading
import weakref
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from ultra_signals.core.redaction import redact_url


class JournalError(RuntimeError):
    """The journal cannot be opened or upgraded; the message names the journal (password hidden) and why."""


def shown(url: str) -> str:
    """``url`` with any password replaced by ``***``: safe for messages and logs."""
    try:
        make_url(url)
    except Exception:  # not even a URL: show nothing of it that could be a secret
        return "<unparsable journal URL>"
    return redact_url(url)  # the one redaction helper (core/redaction.py)


def make_engine(url: str) -> Engine:
    """An engine for ``url``; SQLite gets WAL and its folder created, so ``sqlite:///var/journal.db`` just works.

    SQLite durability: ``journal_mode=WAL`` with ``synchronous=NORMAL`` — a commit survives a crash of the process
    (the WAL is written before the commit returns); a power loss may lose the last commits before the WAL was
    checkpointed to disk, never corrupt the file.  See docs/journal.md.
    """
    u = make_url(url)
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})

        @event.listens_for(engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True)


class HeldWriter:
    """The hot writes of a SQLite file journal on one DBAPI connection held open, each committed before it returns.

    Checking a connection out of SQLAlchemy's pool for every write and resetting it on return cost about two thirds
    of a one-row commit (issue 13: ~60 of ~90 µs, measured on the 2-core test machine), and a replay makes ~1,700
    of them (allowed decisions, the what-if executor's orders, fills and trades).  Same statements, same
    transaction per write (the driver opens it on the first write, ``commit`` ends it), same pragmas (the
    connection is made by the engine's pool, so its ``connect`` listener ran, then detached from the pool), same
    durability; a driver error is rolled back and raised as SQLAlchemy's exception, as ``engine.begin()`` would.

    Only the thread that first wrote uses it (:func:`held_writer` gives other threads None: they take the engine as
    before).  The engine is only weakly referenced: a journal dropped without ``close`` frees its connection as
    before; ``close`` (and disposing the engine) closes it.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = weakref.ref(engine)
        self._error: type[Exception] = engine.dialect.loaded_dbapi.Error
        self.thread = threading.get_ident()
        self._conn: Any = None

    def execute(self, sql: str, params: Any, many: bool = False) -> int:
        """Run ``sql`` once (``many``: once per row of ``params``) in one transaction, commit; the rowcount."""
        conn = self._conn
        if conn is None:
            conn = self._conn = self._connect()
        try:
            n = (conn.executemany(sql, params) if many else conn.execute(sql, params)).rowcount
            conn.commit()
        except self._error as e:
            conn.rollback()
            raise DBAPIError.instance(sql, params, e, self._error, ismulti=many) from e
        return int(n)

    def _connect(self) -> Any:
        engine = self._engine()
        if engine is None:  # the registry drops a writer with its engine: not seen in practice
            raise JournalError("the journal's engine is gone")
        fairy = engine.raw_connection()
        conn = fairy.driver_connection
        fairy.detach()  # ours from now on: the pool neither resets nor hands it out, ``close`` closes it
        return conn

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()


_HELD: weakref.WeakKeyDictionary[Engine, HeldWriter] = weakref.WeakKeyDictionary()


def held_writer(engine: Engine) -> HeldWriter | None:
    """The engine's :class:`HeldWriter` for this thread: a SQLite file with ``?`` placeholders only, else None."""
    w = _HELD.get(engine)
    if w is None:
        u = engine.url
        if (
            engine.dialect.name != "sqlite"
            or engine.dialect.paramstyle != "qmark"
            or not u.database
            or u.database == ":memory:"
            or u.query.get("mode") == "memory"
        ):
            return None
        w = _HELD[engine] = HeldWriter(engine)
        if not event.contains(engine, "engine_disposed", release_writer):
            event.listen(engine, "engine_disposed", release_writer)
    return w if w.thread == threading.get_ident() else None


def driver_write(engine: Engine, sql: str, params: Any, many: bool = False) -> int:
    """Run plain driver SQL in its own transaction, committed before it returns; the rowcount.

    A SQLite file's writing thread uses its held connection (:class:`HeldWriter`); anything else checks a
    connection out of the engine's pool (``engine.begin()``).  The one place that choice is made.
    """
    held = held_writer(engine)
    if held is not None:
        return held.execute(sql, params, many)
    with engine.begin() as c:
        return int(c.exec_driver_sql(sql, params).rowcount)


def release_writer(engine: Engine) -> None:
    """Close the engine's held connection (``engine_disposed`` calls it; a later write opens a new one)."""
    w = _HELD.pop(engine, None)
    if w is not None:
        w.close()
