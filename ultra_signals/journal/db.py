"""The journal's engine: one place that knows SQLite's durability settings and how a URL is shown in errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url

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
