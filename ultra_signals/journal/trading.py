"""Execution journal: orders, fills, trades and trading events (the ``exec_*`` tables of :mod:`.schema`).

Trades are what reconciliation compares the exchange with after a restart, and what the breakers' daily loss and
loss streak are rebuilt from, so an open trade is committed the moment its entry fills.  The store expects a
journal already at the schema's head (:class:`~ultra_signals.journal.writer.Journal` upgrades it on open); it
creates no table itself.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import Engine, Table, bindparam, insert, select, update
from sqlalchemy.exc import CompileError
from sqlalchemy.sql.schema import ScalarElementColumnDefault

from ultra_signals.journal.db import driver_write
from ultra_signals.journal.schema import exec_events, exec_fills, exec_orders, exec_trades

TRADE_OPEN_STATES = ("pending", "open")

# The writes' statements built once, their values passed to ``execute``: SQLAlchemy then reuses the compiled SQL
# from its cache.  ``.values(**row)`` baked each row's values into a new statement and coerced every one of them
# again (issue 13: about half of a what-if fill's cost in the replay profile).  Same rows, same columns.
_INSERT_ORDER = insert(exec_orders)
_INSERT_FILL = insert(exec_fills)
_INSERT_TRADE = insert(exec_trades)
_UPDATE_TRADE = update(exec_trades).where(exec_trades.c.decision_id == bindparam("_decision_id"))


def _known(row: dict[str, Any], table: Table) -> dict[str, Any]:
    """``row`` if every key names a column of ``table``: an insert given its values at execution would silently
    drop an unknown key, where ``.values(**row)`` refused it; this keeps the refusal."""
    unknown = row.keys() - table.c.keys()
    if unknown:
        raise CompileError(f"Unconsumed column names: {', '.join(sorted(unknown))}")
    return row


# SQLite: the same writes as plain SQL with ``?`` placeholders straight to the driver, one statement text per table
# and set of columns (cached), each still in its own transaction, committed before the call returns.  SQLAlchemy's
# statement execution (parameter processing, compiled-cache lookup, result set-up) was about half of a what-if
# fill's or order event's cost (issue 13, third round); other databases keep the SQLAlchemy statements above.  A
# SQLite file's writes go through its held connection (``db.HeldWriter``): no pool checkout and reset per commit.
_SQL: dict[tuple[str, tuple[str, ...]], str] = {}
#: Python-side column defaults SQLAlchemy fills in for a key the row leaves out (``exec_trades``' money columns).
_DEFAULTS = {
    t.name: {c.name: c.default.arg for c in t.c if isinstance(c.default, ScalarElementColumnDefault)}
    for t in (exec_orders, exec_fills, exec_trades)
}


def _insert_sql(table: Table, cols: tuple[str, ...], suffix: str = "") -> str:
    key = (table.name + suffix, cols)
    sql = _SQL.get(key)
    if sql is None:
        sql = _SQL[key] = f"INSERT INTO {table.name} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))}){suffix}"
    return sql


def _driver_insert(table: Table, row: dict[str, Any], suffix: str = "") -> tuple[str, tuple[Any, ...]]:
    """The INSERT of ``row`` (unknown keys refused, missing defaulted columns filled) and its parameters."""
    _known(row, table)
    defaults = _DEFAULTS[table.name]
    if defaults and not defaults.keys() <= row.keys():
        row = {**{k: v for k, v in defaults.items() if k not in row}, **row}
    cols = tuple(row)
    return _insert_sql(table, cols, suffix), tuple(row.values())


def _update_trade_sql(cols: tuple[str, ...]) -> str:
    key = ("update " + exec_trades.name, cols)
    sql = _SQL.get(key)
    if sql is None:
        sets = ", ".join(f"{c} = ?" for c in cols)
        sql = _SQL[key] = f"UPDATE {exec_trades.name} SET {sets} WHERE {exec_trades.name}.decision_id = ?"
    return sql


class ExecStore:
    """Thin writer/reader over the execution tables; every write commits (these rows are few and precious)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        #: SQLite (``?`` placeholders): writes go to the driver as plain SQL (see ``_driver_insert``).
        self._driver_sql = engine.dialect.name == "sqlite" and engine.dialect.paramstyle == "qmark"

    # -- orders and fills ------
    def order_event(self, run_id: str, symbol: str, status: str, **kw: Any) -> None:
        row = {"run_id": run_id, "symbol": symbol, "status": status, "wall": time.time(), **kw}
        if self._driver_sql:
            driver_write(self.engine, *_driver_insert(exec_orders, row))
            return
        with self.engine.begin() as c:
            c.execute(_INSERT_ORDER, _known(row, exec_orders))

    def fill(self, row: dict[str, Any]) -> bool:
        """Insert a fill; False when this (client id, trade id) is known (a replayed stream event)."""
        if self._driver_sql:
            # One statement: the unique index on (client_id, trade_id) refuses the duplicate the SELECT below
            # looks for; DO NOTHING applies to uniqueness only (a NOT NULL violation still raises), and SQLite
            # takes no id for a row it did not insert, so the ids are the two-statement path's.
            return driver_write(self.engine, *_driver_insert(exec_fills, row, " ON CONFLICT DO NOTHING")) == 1
        with self.engine.begin() as c:
            dup = c.execute(
                select(exec_fills.c.id).where(
                    exec_fills.c.client_id == row["client_id"], exec_fills.c.trade_id == row["trade_id"]
                )
            ).first()
            if dup:
                return False
            c.execute(_INSERT_FILL, _known(row, exec_fills))
        return True

    def fills(self, run_id: str | None = None) -> list[dict[str, Any]]:
        q = select(exec_fills).order_by(exec_fills.c.ts, exec_fills.c.id)
        if run_id is not None:
            q = q.where(exec_fills.c.run_id == run_id)
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q).mappings()]

    def orders(self, run_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as c:
            q = select(exec_orders).where(exec_orders.c.run_id == run_id).order_by(exec_orders.c.id)
            return [dict(r) for r in c.execute(q).mappings()]

    # -- trades ------
    def open_trade(self, row: dict[str, Any]) -> None:
        if self._driver_sql:
            driver_write(self.engine, *_driver_insert(exec_trades, row))
            return
        with self.engine.begin() as c:
            c.execute(_INSERT_TRADE, _known(row, exec_trades))

    def update_trade(self, decision_id: str, **values: Any) -> None:
        _known(values, exec_trades)  # a misspelt column is a bug, not a value to drop
        if self._driver_sql and values:
            driver_write(self.engine, _update_trade_sql(tuple(values)), (*values.values(), decision_id))
            return
        with self.engine.begin() as c:
            c.execute(_UPDATE_TRADE, {**values, "_decision_id": decision_id})

    def trade(self, decision_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as c:
            row = c.execute(select(exec_trades).where(exec_trades.c.decision_id == decision_id)).mappings().first()
        return dict(row) if row else None

    def open_trades(self, namespace: str, broker: str) -> list[dict[str, Any]]:
        q = select(exec_trades).where(
            exec_trades.c.namespace == namespace,
            exec_trades.c.broker == broker,
            exec_trades.c.status.in_(TRADE_OPEN_STATES),
        )
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q.order_by(exec_trades.c.opened_ts)).mappings()]

    def trades(self, run_id: str) -> list[dict[str, Any]]:
        q = select(exec_trades).where(exec_trades.c.run_id == run_id).order_by(exec_trades.c.opened_ts)
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q).mappings()]

    def closed_trades(self, namespace: str, broker: str, since_ms: int | None = None) -> list[dict[str, Any]]:
        q = select(exec_trades).where(
            exec_trades.c.namespace == namespace,
            exec_trades.c.broker == broker,
            exec_trades.c.status == "closed",
        )
        if since_ms is not None:
            q = q.where(exec_trades.c.closed_ts >= since_ms)
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q.order_by(exec_trades.c.closed_ts)).mappings()]

    # -- events (trips, resumes, kills, reconciliations, gate verdicts) ------
    def event(
        self,
        kind: str,
        name: str,
        detail: str | dict[str, Any],
        run_id: str | None = None,
        ts: int | None = None,
    ) -> None:
        text = detail if isinstance(detail, str) else json.dumps(detail, default=str)
        with self.engine.begin() as c:
            c.execute(
                insert(exec_events).values(run_id=run_id, kind=kind, name=name, detail=text, ts=ts, wall=time.time())
            )

    def events(self, run_id: str | None = None, kind: str | None = None) -> list[dict[str, Any]]:
        q = select(exec_events).order_by(exec_events.c.id)
        if run_id is not None:
            q = q.where(exec_events.c.run_id == run_id)
        if kind is not None:
            q = q.where(exec_events.c.kind == kind)
        with self.engine.connect() as c:
            return [dict(r) for r in c.execute(q).mappings()]
