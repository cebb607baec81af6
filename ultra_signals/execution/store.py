"""Execution journal: orders, fills, trades and trading events, in tables of our own on the journal's engine.

Own :class:`MetaData` so execution can evolve its tables without touching the decision journal.  Trades are
what reconciliation compares the exchange with after a restart, and what the breakers' daily loss and loss
streak are rebuilt from, so an open trade is committed the moment its entry fills.
"""

from __future__ import annotations

import json
import time
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Engine,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    insert,
    select,
    update,
)

metadata = MetaData()

exec_orders = Table(
    "exec_orders",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(64), nullable=False),
    Column("decision_id", String(200)),
    Column("client_id", String(40)),
    Column("symbol", String(32), nullable=False),
    Column("kind", String(8)),  # entry | stop | tp | exit
    Column("status", String(24), nullable=False),  # submitted | refused | NEW | FILLED | CANCELED | REJECTED ...
    Column("reason", String(64)),
    Column("detail", Text),
    Column("ts", BigInteger),  # market time, epoch ms
    Column("wall", Float, nullable=False),
    Index("ix_exec_orders_run", "run_id", "ts"),
)

exec_fills = Table(
    "exec_fills",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(64), nullable=False),
    Column("decision_id", String(200)),
    Column("client_id", String(40), nullable=False),
    Column("trade_id", String(64), nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("side", String(4), nullable=False),
    Column("kind", String(8), nullable=False),
    Column("qty", Float, nullable=False),
    Column("price", Float, nullable=False),
    Column("reference_price", Float, nullable=False),
    Column("slippage_bps", Float, nullable=False),
    Column("fee", Float, nullable=False),
    Column("liquidity", String(8), nullable=False),
    Column("order_qty", Float, nullable=False),
    Column("order_ts", BigInteger, nullable=False),
    Column("ts", BigInteger, nullable=False),
    Column("simulated", Integer, nullable=False),  # 1: paper (what-if), 0: exchange fill
    Index("ix_exec_fills_run", "run_id", "ts"),
    Index("ux_exec_fills_trade", "client_id", "trade_id", unique=True),
)

exec_trades = Table(
    "exec_trades",
    metadata,
    Column("decision_id", String(200), primary_key=True),
    Column("run_id", String(64), nullable=False),
    Column("namespace", String(128), nullable=False),
    Column("broker", String(16), nullable=False),
    Column("symbol", String(32), nullable=False),
    Column("side", String(8), nullable=False),
    Column("status", String(12), nullable=False),  # pending | open | closed | cancelled
    Column("qty", Float, nullable=False),  # open quantity
    Column("entry_qty", Float, nullable=False),
    Column("entry_price", Float),
    Column("exit_price", Float),
    Column("exit_kind", String(8)),
    Column("arrival_price", Float, nullable=False),
    Column("stop", Float, nullable=False),
    Column("take_profit", Float, nullable=False),
    Column("stop_cid", String(40), nullable=False),
    Column("tp_cid", String(40), nullable=False),
    Column("fees", Float, nullable=False, default=0.0),
    Column("funding", Float, nullable=False, default=0.0),
    Column("gross_pnl", Float, nullable=False, default=0.0),
    Column("pnl", Float),  # net: gross - fees + funding, set when closed
    Column("opened_ts", BigInteger, nullable=False),  # decision time
    Column("filled_ts", BigInteger),
    Column("closed_ts", BigInteger),
    Column("closed_wall", Float),  # wall time of the close: the loss streak restarts at an operator's resume
    Index("ix_exec_trades_ns", "namespace", "status", "closed_ts"),
)

exec_events = Table(
    "exec_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("run_id", String(64)),
    Column("kind", String(24), nullable=False),  # trip | resume | kill | reconcile | gate | refused
    Column("name", String(64), nullable=False),  # breaker name, gate stage, ...
    Column("detail", Text, nullable=False),
    Column("ts", BigInteger),  # market time where known
    Column("wall", Float, nullable=False),
    Index("ix_exec_events_run", "run_id", "id"),
)

TRADE_OPEN_STATES = ("pending", "open")


class ExecStore:
    """Thin writer/reader over the execution tables; every write commits (these rows are few and precious)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata.create_all(engine)

    # -- orders and fills ------
    def order_event(self, run_id: str, symbol: str, status: str, **kw: Any) -> None:
        with self.engine.begin() as c:
            c.execute(insert(exec_orders).values(run_id=run_id, symbol=symbol, status=status, wall=time.time(), **kw))

    def fill(self, row: dict[str, Any]) -> bool:
        """Insert a fill; False when this (client id, trade id) is known (a replayed stream event)."""
        with self.engine.begin() as c:
            dup = c.execute(
                select(exec_fills.c.id).where(
                    exec_fills.c.client_id == row["client_id"], exec_fills.c.trade_id == row["trade_id"]
                )
            ).first()
            if dup:
                return False
            c.execute(insert(exec_fills).values(**row))
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
        with self.engine.begin() as c:
            c.execute(insert(exec_trades).values(**row))

    def update_trade(self, decision_id: str, **values: Any) -> None:
        with self.engine.begin() as c:
            c.execute(update(exec_trades).where(exec_trades.c.decision_id == decision_id).values(**values))

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
