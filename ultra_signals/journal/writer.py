"""The journal's writer: runs, every decision, and small persistent operator state (pause, trading state).

Opening a :class:`Journal` upgrades its schema to the head (``journal/migrate.py``); the other stores on the same
engine (``journal/trading.py``, ``journal/outbox.py``) and the read queries (``journal/queries.py``) rely on that.

Allowed signals are committed the moment they are decided (they are what the caps are rebuilt from after a crash);
blocked candidates are buffered and written in batches, because they are the bulk of the rows and the replay
benchmark writes tens of thousands of them.  ``close()`` flushes, so a clean stop loses nothing.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import delete, func, insert, inspect, select, update
from sqlalchemy.engine import make_url

from ultra_signals.core.caps import Reservation, reservation_id_of
from ultra_signals.core.decision import Decision
from ultra_signals.core.redaction import redact
from ultra_signals.journal.db import JournalError, driver_write, make_engine, shown
from ultra_signals.journal.schema import decisions, runs, state

__all__ = ["Journal", "JournalError", "make_engine"]

#: A running run's liveness is kept in the ``state`` table under this prefix (no schema change): host, pid and
#: the wall time it was last seen alive.  A run whose process is gone is marked ``crashed`` at the next start.
ALIVE_PREFIX = "alive:"
#: A heartbeat older than this means the process is gone even if its pid exists (another host, pid reused).
ALIVE_STALE_S = 120.0


def sqlite_path(url: str) -> Path | None:
    """The database file of a SQLite URL (None for another database or in-memory SQLite)."""
    u = make_url(url)
    if u.get_backend_name() != "sqlite" or not u.database or u.database == ":memory:":
        return None
    return Path(u.database)


def _pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by someone else
    return True


def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and not math.isfinite(x)) else x


def _json(d: dict[str, float]) -> str:
    """Compact JSON of a float map, non-finite values as null (what ``_num`` + ``json.dumps`` wrote before).

    orjson writes NaN and ±inf as null itself and is ~10× faster than the standard library here; this runs three
    times per candidate (issue 13: the journal was 35 % of the run loop).  The text may spell a float differently
    (``1e-5`` for ``1e-05``); every reader parses it back to the same float.
    """
    return orjson.dumps(d, default=_num_default).decode()


def _targets_json(targets: tuple[float, ...]) -> str:
    """Exactly ``json.dumps(list(targets))``, from orjson's text where the two agree, else from ``json.dumps``.

    Both write a float as its shortest round-trip digits; they differ only in layout, which the bytes show: orjson
    writes NaN/inf as ``null`` (json: ``NaN``), an exponent as ``1e16``/``1e-5`` (json: ``1e+16``/``1e-05``) and
    1e-5 ≤ |x| < 1e-4 without one (``0.00005``; json switches to an exponent below 1e-4), and separates items
    with ``,`` (json: ``, ``).  So text with an ``e``, an ``n``, ``0.0000`` or a string is redone by ``json.dumps``,
    and the rest only needs its separators widened.  ~2.5× faster than ``repr`` of each float (issue 13); checked
    against ``json.dumps`` on a million floats of every magnitude (tests/test_journal.py samples them).
    """
    try:
        text = orjson.dumps(targets)
    except TypeError:  # a value orjson does not know (a numpy scalar): the standard encoder's text
        return json.dumps(list(targets))
    if b"e" in text or b"n" in text or b"0.0000" in text or b'"' in text:
        return json.dumps(list(targets))
    return text.decode().replace(",", ", ")


def _num_default(x: Any) -> Any:
    """Values orjson does not know (a numpy scalar): as a plain float, non-finite as null."""
    return _num(float(x))


#: The decision row's columns in the order :meth:`Journal.record` builds its tuples.
_DECISION_COLUMNS = (
    "decision_id",
    "run_id",
    "namespace",
    "ts",
    "symbol",
    "timeframe",
    "side",
    "score",
    "confidence",
    "allowed",
    "reason",
    "entry",
    "stop",
    "targets_json",
    "components_json",
    "features_json",
    "latency_ms",
    "simulated",
)


def _positional_insert(paramstyle: str) -> str | None:
    """The decisions INSERT for a driver with positional placeholders, else None (the SQLAlchemy path)."""
    mark = {"qmark": "?", "format": "%s"}.get(paramstyle)
    if mark is None:
        return None
    return (
        f"INSERT INTO {decisions.name} ({', '.join(_DECISION_COLUMNS)}) "
        f"VALUES ({', '.join([mark] * len(_DECISION_COLUMNS))})"
    )


_CORRUPT = ("file is not a database", "database disk image is malformed")


def unreadable_sqlite(url: str, error: BaseException) -> str | None:
    """One line for a SQLite journal that exists but cannot be read (random bytes, a truncated copy), else None.

    The runner does not start on it, whatever the mode: it cannot even record a HALTED state there, and moving
    the operator's file aside by itself would hide the loss.  The line says how to proceed; once the file is
    restored or moved aside, a canary/production start on the new journal begins HALTED (docs/journal.md).
    """
    path = sqlite_path(url)
    text = str(error)
    why = next((c for c in _CORRUPT if c in text), None)
    if path is None or why is None or not path.exists():
        return None
    return (
        f"journal {path} exists but cannot be read ({why}): restore a backup with "
        f"`ultra-signals db restore --from BACKUP --force`, or move the file aside (keep it for inspection) and "
        f"start again: a canary/production start on a new journal begins HALTED"
    )


class Journal:
    def __init__(self, url: str, batch_size: int = 500) -> None:
        self.url = url
        try:
            self.engine = make_engine(url)
        except Exception as e:  # an unwritable path must say which journal
            # Redacted, and not chained: the driver's exception may carry the URL with its password.
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise JournalError(f"journal {shown(url)}: {redact(first)}") from None
        try:
            #: True when this open created the journal (no ``runs`` table before): a canary/live start on a
            #: journal that had to be created begins HALTED (the caps' windows and trading state are gone).
            self.created = not inspect(self.engine).has_table("runs")
            # Opening brings the schema to the code's head (see journal/migrate.py); a journal written by a newer
            # release is refused here, before anything is written to it.
            from ultra_signals.journal import migrate  # Alembic is loaded only when a journal is opened

            self.schema_from, self.schema = migrate.upgrade(self.engine, url)
        except JournalError:
            self.engine.dispose()
            raise
        except Exception as e:  # an unreachable database must say which journal too
            self.engine.dispose()
            unreadable = unreadable_sqlite(url, e)
            if unreadable is not None:
                raise JournalError(unreadable) from None
            raise JournalError(f"journal {shown(url)}: {e}") from e
        self.batch_size = batch_size
        self._pending: list[tuple[Any, ...]] = []
        self._insert_sql = _positional_insert(self.engine.dialect.paramstyle)
        self.rows_written = 0

    # -- runs ------------------------------------------------------------------------------------------------
    def start_run(
        self,
        run_id: str,
        *,
        mode: str,
        profile: str,
        source: str,
        simulated: bool,
        namespace: str,
        settings: dict[str, Any],
    ) -> None:
        with self.engine.begin() as c:
            c.execute(
                insert(runs).values(
                    run_id=run_id,
                    started_at=time.time(),
                    status="running",
                    mode=mode,
                    profile=profile,
                    source=source,
                    simulated=simulated,
                    namespace=namespace,
                    settings_json=json.dumps(settings, default=str),
                )
            )
        self.heartbeat(run_id)

    def heartbeat(self, run_id: str) -> None:
        """Record that this process still runs ``run_id`` (the runner calls it every few seconds)."""
        alive = {"host": socket.gethostname(), "pid": os.getpid(), "at": time.time()}
        self.set_state(f"{ALIVE_PREFIX}{run_id}", json.dumps(alive))

    def mark_crashed_runs(self, now: float | None = None) -> list[dict[str, Any]]:
        """Runs left ``running`` by a process that is gone become ``crashed``, with their last decision time.

        Gone: on this host its pid no longer exists, or its heartbeat is older than :data:`ALIVE_STALE_S`, or it
        never wrote one (a runner always writes one at start).  Returns what was marked, for the operator.
        """
        now = time.time() if now is None else now
        host = socket.gethostname()
        marked: list[dict[str, Any]] = []
        with self.engine.connect() as c:
            running = [str(r) for (r,) in c.execute(select(runs.c.run_id).where(runs.c.status == "running"))]
        for run_id in running:
            raw = self.get_state(f"{ALIVE_PREFIX}{run_id}")
            seen: float | None = None
            try:
                alive = json.loads(raw) if raw else None
            except ValueError:
                alive = None
            if isinstance(alive, dict):
                seen = float(alive.get("at", 0.0))
                same_host = alive.get("host") == host
                if now - seen <= ALIVE_STALE_S and not (same_host and not _pid_alive(int(alive.get("pid", 0)))):
                    continue  # alive (or too recently seen to tell)
            with self.engine.begin() as c:
                last = c.execute(
                    select(func.max(decisions.c.ts), func.count()).where(decisions.c.run_id == run_id)
                ).first()
                last_ts, n = (last[0], last[1]) if last else (None, 0)
                summary = {
                    "crash": "process gone while running (SIGKILL, power loss or OOM); marked at the next start",
                    "last_decision_ts": last_ts,
                    "decisions_journaled": n,
                    "last_seen_alive": seen,
                }
                c.execute(
                    update(runs)
                    .where(runs.c.run_id == run_id, runs.c.status == "running")
                    .values(
                        status="crashed",
                        ended_at=seen,
                        market_end_ms=last_ts,
                        summary_json=json.dumps(summary),
                    )
                )
                c.execute(delete(state).where(state.c.key == f"{ALIVE_PREFIX}{run_id}"))
            marked.append({"run_id": run_id, **summary})
        return marked

    def end_run(
        self, run_id: str, status: str, summary: dict[str, Any], market_start_ms: int | None, market_end_ms: int | None
    ) -> None:
        self.flush()
        with self.engine.begin() as c:
            c.execute(delete(state).where(state.c.key == f"{ALIVE_PREFIX}{run_id}"))
            c.execute(
                update(runs)
                .where(runs.c.run_id == run_id)
                .values(
                    ended_at=time.time(),
                    status=status,
                    summary_json=json.dumps(summary, default=str),
                    market_start_ms=market_start_ms,
                    market_end_ms=market_end_ms,
                )
            )

    def run(self, run_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            row = c.execute(select(runs).where(runs.c.run_id == run_id)).mappings().first()
        return dict(row) if row else None

    def runs(self, profile: str | None = None) -> list[dict[str, Any]]:
        """Every run (of one profile, if given), oldest first."""
        q = select(runs).order_by(runs.c.started_at)
        if profile is not None:
            q = q.where(runs.c.profile == profile)
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q).mappings()]

    def latest_run_id(self) -> str | None:
        with self.engine.connect() as c:
            row = c.execute(select(runs.c.run_id).order_by(runs.c.started_at.desc()).limit(1)).first()
        return str(row[0]) if row else None

    # -- decisions -------------------------------------------------------------------------------------------
    def record(self, d: Decision, namespace: str, simulated: bool) -> None:
        """Buffer one candidate's row; an allowed one is written and committed before this returns (durability:
        the runner announces it and hands it to the executor only afterwards)."""
        c = d.candidate
        # A tuple in _DECISION_COLUMNS order: cheaper to build than a dict, and what the driver takes as is.
        self._pending.append(
            (
                d.id,
                d.run_id,
                namespace,
                c.ts,
                c.symbol,
                c.timeframe,
                c.side.value,
                c.score,
                c.confidence,
                d.allowed,
                d.journal_reason,
                c.entry,
                c.stop,
                _targets_json(c.targets),  # as before: a NaN target stays NaN, not null
                _json(c.components),
                _json(c.features),
                d.latency_ms,
                simulated,
            )
        )
        if d.allowed or len(self._pending) >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        """Write the buffered rows in one transaction (the runner calls this at least once a second).

        One ``executemany`` of plain tuples straight to the driver where its placeholders are positional
        (SQLite's ``?``, ``%s``): SQLAlchemy's per-row parameter processing was most of a flush (issue 13).  A
        SQLite file's flush runs on its held connection (``db.HeldWriter``: no pool checkout per commit).  Other
        drivers take the SQLAlchemy path with the same rows.
        """
        if not self._pending:
            return
        rows, self._pending = self._pending, []
        if self._insert_sql is not None:
            driver_write(self.engine, self._insert_sql, rows, many=True)
        else:
            with self.engine.begin() as c:
                c.execute(insert(decisions), [dict(zip(_DECISION_COLUMNS, r, strict=True)) for r in rows])
        self.rows_written += len(rows)

    def decisions(self, run_id: str) -> list[dict[str, Any]]:
        self.flush()
        with self.engine.connect() as c:
            res = c.execute(
                select(decisions).where(decisions.c.run_id == run_id).order_by(decisions.c.ts, decisions.c.id)
            )
            return [dict(r) for r in res.mappings()]

    def allowed_reservations(self, namespace: str, since_ms: int | None = None) -> Iterator[Reservation]:
        """Allowed signals of a namespace: what the memory counters are rebuilt from at start.

        Ids are the run-independent reservation keys (whatever run wrote the row), owners the run ids.
        """
        q = select(decisions.c.decision_id, decisions.c.symbol, decisions.c.ts, decisions.c.run_id).where(
            decisions.c.namespace == namespace, decisions.c.allowed.is_(True)
        )
        if since_ms is not None:
            q = q.where(decisions.c.ts >= since_ms)
        with self.engine.connect() as c:
            for did, sym, ts, run_id in c.execute(q.order_by(decisions.c.ts)):
                # The journal row id is run-scoped; the counters hold the run-independent key (owner = run).
                yield Reservation(id=reservation_id_of(str(did)), symbol=str(sym), ts_ms=int(ts), owner=str(run_id))

    def budget_history(
        self, namespace: str, since_ms: int | None = None
    ) -> Iterator[tuple[int, str, bool, bool, float | None, str]]:
        """``(ts, timeframe, long, allowed, quality, key)`` of a namespace's candidates in decision order: what ranked
        selection's threshold and the same-direction bound are rebuilt from at start (quality None: the candidate
        never reached the budget step, or the run was not ranked; key: the run-independent decision key)."""
        self.flush()
        q = select(
            decisions.c.ts,
            decisions.c.timeframe,
            decisions.c.side,
            decisions.c.allowed,
            decisions.c.features_json,
            decisions.c.decision_id,
        ).where(decisions.c.namespace == namespace)
        if since_ms is not None:
            q = q.where(decisions.c.ts >= since_ms)
        with self.engine.connect() as c:
            for ts, tf, side, allowed, feats, did in c.execute(q.order_by(decisions.c.ts, decisions.c.id)):
                value = json.loads(feats).get("quality") if feats else None
                yield (
                    int(ts),
                    str(tf),
                    side == "LONG",
                    bool(allowed),
                    None if value is None else float(value),
                    reservation_id_of(str(did)),
                )

    # -- operator state (pause, trading state) --------------------------------------------------------------
    def get_state(self, key: str, default: str | None = None) -> str | None:
        with self.engine.connect() as c:
            row = c.execute(select(state.c.value).where(state.c.key == key)).first()
        return str(row[0]) if row else default

    def set_state(self, key: str, value: str) -> None:
        with self.engine.begin() as c:
            n = c.execute(update(state).where(state.c.key == key).values(value=value, updated_at=time.time())).rowcount
            if not n:
                c.execute(insert(state).values(key=key, value=value, updated_at=time.time()))

    # -- backup and retention -------------------------------------------------------------------------------
    def sqlite_path(self) -> Path | None:
        """The database file of a SQLite journal (None for another database or in-memory SQLite)."""
        return sqlite_path(self.url)

    def backup(self, dest: Path) -> int:
        """A consistent copy of a SQLite journal while runners keep writing (SQLite's online backup API).

        Returns the bytes written.  PostgreSQL journals are backed up with ``pg_dump`` (docs/operations.md).
        """
        import sqlite3

        src_path = self.sqlite_path()
        if src_path is None:
            raise JournalError(
                f"journal {make_url(self.url).render_as_string(hide_password=True)} is not a SQLite file: "
                "back it up with pg_dump (see docs/operations.md)"
            )
        self.flush()
        dest.parent.mkdir(parents=True, exist_ok=True)
        src = sqlite3.connect(f"file:{src_path}?mode=ro", uri=True, timeout=30)
        dst = sqlite3.connect(dest)
        try:
            src.backup(dst, pages=1024)  # in steps: writers are never locked out for long
        finally:
            dst.close()
            src.close()
        return dest.stat().st_size

    def prune(self, keep_days: float, now_ms: int | None = None) -> dict[str, int]:
        """Retention: delete decisions older than ``keep_days`` (event time) and runs ended before then.

        At least 2 days are kept, whatever is asked: the caps' windows and cooldowns are rebuilt from the last
        day of allowed decisions at every start.
        """
        if not math.isfinite(keep_days) or keep_days < 2:
            raise JournalError(f"keep at least 2 days of journal (asked {keep_days}): the caps are rebuilt from it")
        self.flush()
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        cutoff_ms = now_ms - int(keep_days * 86_400_000)
        with self.engine.begin() as c:
            n_dec = c.execute(delete(decisions).where(decisions.c.ts < cutoff_ms)).rowcount
            n_runs = c.execute(
                delete(runs).where(runs.c.status != "running", runs.c.ended_at < cutoff_ms / 1000.0)
            ).rowcount
        return {"decisions": int(n_dec or 0), "runs": int(n_runs or 0)}

    def close(self) -> None:
        self.flush()
        self.engine.dispose()  # closes the held connection too (db.release_writer)
