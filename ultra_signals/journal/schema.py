"""Every journal table in one SQLAlchemy ``MetaData``: runs, decisions, operator state, execution, Telegram outbox.

SQLite by default, any SQLAlchemy URL works (PostgreSQL is tested).  This module is the schema at the migrations'
head: a change here needs a new revision in ``migrations/versions`` (``tests/test_journal_migrate.py`` compares
the two and fails when they disagree) and :data:`SCHEMA_HEAD` names it.  A new journal is made from these tables
and stamped at the head; every existing one is upgraded by the migrations only (``journal/migrate.py``).

Core tables rather than ORM classes: the journal is written in batches on the hot path, and Core's executemany is
several times cheaper than building ORM objects.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
)

metadata = MetaData()

#: The newest revision in ``migrations/versions``: the schema below.  A journal stamped with it needs no migration,
#: which is decided without importing Alembic (tests check this equals the revisions' head).
SCHEMA_HEAD = "0002"

runs = Table(
    "runs",
    metadata,
    Column("run_id", String(64), primary_key=True),
    Column("started_at", Float, nullable=False),  # wall time, epoch seconds
    Column("ended_at", Float),
    Column("status", String(16), nullable=False),  # running | completed | failed | interrupted | crashed
    Column("mode", String(16), nullable=False),
    Column("profile", String(64), nullable=False),
    Column("source", String(16), nullable=False),
    Column("simulated", Boolean, nullable=False),
    Column("namespace", String(128), nullable=False),
    Column("market_start_ms", BigInteger),
    Column("market_end_ms", BigInteger),
    Column("settings_json", Text, nullable=False),
    Column("summary_json", Text),
)

decisions = Table(
    "decisions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("decision_id", String(200), nullable=False, unique=True),
    Column("run_id", String(64), nullable=False),
    Column("namespace", String(128), nullable=False),
    Column("ts", BigInteger, nullable=False),  # event time of the decision (bar close), epoch ms
    Column("symbol", String(32), nullable=False),
    Column("timeframe", String(8), nullable=False),
    Column("side", String(8), nullable=False),
    Column("score", Float, nullable=False),
    Column("confidence", Float, nullable=False),
    Column("allowed", Boolean, nullable=False),
    Column("reason", String(32)),
    Column("entry", Float, nullable=False),
    Column("stop", Float, nullable=False),
    Column("targets_json", Text, nullable=False),
    Column("components_json", Text, nullable=False),
    Column("features_json", Text, nullable=False),
    Column("latency_ms", Float, nullable=False),
    Column("simulated", Boolean, nullable=False),
    Index("ix_decisions_run", "run_id", "ts"),
    Index("ix_decisions_allowed", "namespace", "allowed", "ts"),
)

state = Table(
    "state",
    metadata,
    Column("key", String(128), primary_key=True),
    Column("value", Text, nullable=False),
    Column("updated_at", Float, nullable=False),
)

# -- execution: orders, fills, trades and trading events (see journal/trading.py) --
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
    Index("ix_exec_events_kind", "kind", "id"),  # revision 0002: the rollout reads trips, resumes, gates by kind
)

# -- the Telegram outbox (see journal/outbox.py) --
telegram_outbox = Table(
    "telegram_outbox",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),  # delivery order within a chat
    Column("sender", String(200), nullable=False),
    Column("chat_id", String(64), nullable=False),
    Column("chat_key", String(255)),  # idempotency key (decision id); None: no de-duplication
    Column("part", Integer, nullable=False),  # index of this part of a split message
    Column("kind", String(32), nullable=False),
    Column("text", Text, nullable=False),  # HTML, ≤ 4096 characters
    Column("silent", Boolean, nullable=False),
    Column("status", String(16), nullable=False),  # pending | sent | failed
    Column("attempts", Integer, nullable=False),
    Column("created_at", Float, nullable=False),  # wall time, epoch seconds
    Column("sent_at", Float),
    Column("message_id", Integer),
    Column("last_error", Text),
    UniqueConstraint("chat_id", "chat_key", "part", name="uq_telegram_outbox_key"),
    Index("ix_telegram_outbox_pending", "sender", "status", "chat_id", "id"),
)
