"""Baseline: the journal of release 0.1.0, exactly as its three ``create_all`` calls made it.

Revision ID: 0001
Revises: (none)

0.1.0 had no migrations: ``journal/models.py`` (runs, decisions, state), ``execution/store.py`` (exec_*) and
``transport/telegram/outbox.py`` (telegram_outbox) each created their tables when first used, so a 0.1.0 journal
holds the first group always and the others only if that process ran an executor or a Telegram notifier.  The
tables are frozen here (never import the live schema into a migration: it moves on), and created only where
missing, which is what makes an unversioned 0.1.0 journal this revision (``journal/migrate.py`` checks the existing
tables' columns first).  Downgrade drops every table: below the baseline there is no journal.
"""

from __future__ import annotations

from alembic import op
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

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def tables() -> MetaData:
    """The 0.1.0 tables on a fresh ``MetaData`` (also read by ``migrate.py`` to recognise an unversioned journal)."""
    md = MetaData()
    Table(
        "runs",
        md,
        Column("run_id", String(64), primary_key=True),
        Column("started_at", Float, nullable=False),  # wall time, epoch seconds
        Column("ended_at", Float),
        Column("status", String(16), nullable=False),  # running | completed | failed | interrupted
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

    Table(
        "decisions",
        md,
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

    Table(
        "state",
        md,
        Column("key", String(128), primary_key=True),
        Column("value", Text, nullable=False),
        Column("updated_at", Float, nullable=False),
    )

    # -- execution (0.1.0: execution/store.py) --
    Table(
        "exec_orders",
        md,
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

    Table(
        "exec_fills",
        md,
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

    Table(
        "exec_trades",
        md,
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

    Table(
        "exec_events",
        md,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("run_id", String(64)),
        Column("kind", String(24), nullable=False),  # trip | resume | kill | reconcile | gate | refused
        Column("name", String(64), nullable=False),  # breaker name, gate stage, ...
        Column("detail", Text, nullable=False),
        Column("ts", BigInteger),  # market time where known
        Column("wall", Float, nullable=False),
        Index("ix_exec_events_run", "run_id", "id"),
    )

    # -- Telegram outbox (0.1.0: transport/telegram/outbox.py) --
    Table(
        "telegram_outbox",
        md,
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
    return md


def upgrade() -> None:
    tables().create_all(op.get_bind(), checkfirst=True)


def downgrade() -> None:
    tables().drop_all(op.get_bind(), checkfirst=True)
