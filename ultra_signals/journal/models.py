"""Journal tables (SQLAlchemy Core).  SQLite by default, any SQLAlchemy URL works (PostgreSQL is tested).

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
)

metadata = MetaData()

runs = Table(
    "runs",
    metadata,
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
