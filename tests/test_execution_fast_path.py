"""The what-if executor's cheap paths (issue 13) give what the general paths gave.

The execution journal's SQLite writes go to the driver as plain SQL: the rows are the ones SQLAlchemy's statements
wrote (defaults, ids, a duplicate fill refused without taking an id), unknown columns are still refused.  The paper
broker prices its last bar only when it is read, and still fills brackets on a coarser bar that arrives first.
"""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.exc import CompileError, IntegrityError

from tests.test_paper_broker import T0, broker, feed, plan, trade
from ultra_signals.core.events import Kline
from ultra_signals.execution.brokers.base import OrderKind
from ultra_signals.journal.trading import ExecStore
from ultra_signals.journal.writer import Journal

MIN = 60_000


def _fill_row(client_id: str, trade_id: str, **kw: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "run_id": "run", "decision_id": "d1", "client_id": client_id, "trade_id": trade_id, "symbol": "BTCUSDT",
        "side": "BUY", "kind": "entry", "qty": 0.5, "price": 100.01, "reference_price": 100.0, "slippage_bps": 1.0,
        "fee": 0.025, "liquidity": "taker", "order_qty": 0.5, "order_ts": T0, "ts": T0 + 1, "simulated": 1,
    }  # fmt: skip
    row.update(kw)
    return row


def _writes(store: ExecStore) -> list[bool]:
    """One trade's writes as the router and the portfolio make them, with a duplicate fill in the middle."""
    store.open_trade(
        {
            "decision_id": "d1", "run_id": "run", "namespace": "ns", "broker": "paper", "symbol": "BTCUSDT",
            "side": "LONG", "status": "pending", "qty": 0.0, "entry_qty": 0.0, "arrival_price": 100.0, "stop": 99.0,
            "take_profit": 102.0, "stop_cid": "s1", "tp_cid": "t1", "opened_ts": T0,  # fees, funding, gross: defaults
        }
    )  # fmt: skip
    store.order_event("run", "BTCUSDT", "submitted", decision_id="d1", client_id="e1", kind="entry", detail="x", ts=T0)
    store.order_event("run", "BTCUSDT", "NEW", decision_id="d1", client_id="e1", kind="entry", reason=None, ts=T0)
    inserted = [store.fill(_fill_row("e1", "paper-1"))]
    store.update_trade("d1", status="open", qty=0.5, entry_qty=0.5, entry_price=100.01, fees=0.025, filled_ts=T0 + 1)
    inserted.append(store.fill(_fill_row("e1", "paper-1")))  # a replayed stream event: known, not booked
    inserted.append(store.fill(_fill_row("s1", "paper-2", side="SELL", kind="stop", price=98.9, ts=T0 + 9)))
    store.order_event("run", "BTCUSDT", "CANCELED", decision_id="d1", client_id="t1", kind="tp", reason="oco", ts=T0)
    store.update_trade("d1", status="closed", qty=0.0, exit_price=98.9, exit_kind="stop", pnl=-0.6, closed_wall=1.0)
    return inserted


def _rows(journal: Journal) -> dict[str, list[dict[str, Any]]]:
    out = {}
    with journal.engine.connect() as c:
        for table in ("exec_orders", "exec_fills", "exec_trades"):
            rows = c.execute(text(f"SELECT * FROM {table} ORDER BY 1")).mappings()
            out[table] = [{k: v for k, v in r.items() if k != "wall"} for r in rows]
    return out


def test_sqlite_driver_writes_are_the_rows_sqlalchemy_wrote(tmp_path: Path) -> None:
    fast_journal = Journal(f"sqlite:///{tmp_path}/fast.db")
    slow_journal = Journal(f"sqlite:///{tmp_path}/slow.db")
    fast, slow = ExecStore(fast_journal.engine), ExecStore(slow_journal.engine)
    slow._driver_sql = False  # the SQLAlchemy statements every other database uses
    assert fast._driver_sql
    assert _writes(fast) == _writes(slow) == [True, False, True]
    rows = _rows(fast_journal)
    assert rows == _rows(slow_journal)
    assert [r["id"] for r in rows["exec_fills"]] == [1, 2]  # the refused duplicate took no id
    (trade_row,) = rows["exec_trades"]
    assert (trade_row["fees"], trade_row["funding"], trade_row["status"]) == (0.025, 0.0, "closed")
    fast_journal.close()
    slow_journal.close()


@pytest.mark.parametrize("driver_sql", [True, False])
def test_unknown_columns_are_refused_and_a_missing_value_is_not_ignored(tmp_path: Path, driver_sql: bool) -> None:
    journal = Journal(f"sqlite:///{tmp_path}/j.db")
    store = ExecStore(journal.engine)
    store._driver_sql = driver_sql
    with pytest.raises(CompileError):
        store.order_event("run", "BTCUSDT", "NEW", client_idd="e1")
    with pytest.raises(CompileError):
        store.fill(_fill_row("e1", "paper-1", priec=1.0))
    with pytest.raises(CompileError):
        store.update_trade("d1", statuss="open")
    # ON CONFLICT DO NOTHING covers the (client id, trade id) index only: a NOT NULL column left empty still fails.
    with pytest.raises(IntegrityError):
        store.fill(_fill_row("e1", "paper-1", price=None))
    assert store.fills() == [] and store.orders("run") == []
    journal.close()


def _bar(tf: str, start: int, length: int, o: float, h: float, lo: float, c: float) -> Kline:
    return Kline("BTCUSDT", tf, start, start + length - 1, o, h, lo, c, 10.0)


def test_kill_on_bars_exits_at_the_last_bar_as_before() -> None:
    """The last bar is priced when read: a kill exits at its open's mid and time, as when it was stored per bar."""
    b, r = broker(latency_ms=0)
    b.submit(plan())
    feed(
        b,
        [
            _bar("1m", T0, MIN, 100.0, 100.4, 99.8, 100.2),  # the entry fills at this open; brackets 99 / 102 rest
            _bar("1m", T0 + MIN, MIN, 100.3, 100.9, 99.9, 100.6),
            _bar("5m", T0, 5 * MIN, 100.0, 100.9, 99.8, 100.6),  # a coarser bar last: its open counts, as before
        ],
    )
    asyncio.run(b.kill())
    exit_fill = r.fills[-1]
    half = 1.0 / 10_000.0 * 100.0
    assert exit_fill.kind is OrderKind.EXIT
    assert (exit_fill.price, exit_fill.ts_ms) == (((100.0 + half) + (100.0 - half)) / 2.0, T0)


def test_ticks_win_over_later_bars_for_the_reference_price() -> None:
    b, r = broker(latency_ms=0)
    b.submit(plan())
    feed(b, [trade(T0 + 1, 100.0), trade(T0 + 2, 100.5), _bar("1m", T0, MIN, 101.0, 101.2, 100.9, 101.1)])
    b.close_position("BTCUSDT", plan().side, Decimal("0.5"), plan().key, T0 + 3)
    feed(b, [trade(T0 + 4, 100.7)])
    exit_fill = r.fills[-1]
    assert exit_fill.kind is OrderKind.EXIT and exit_fill.reference_price == 100.5  # the tick's mid, not the bar


def test_a_bracket_fills_on_the_coarser_bar_that_arrives_first() -> None:
    """Why coarser bars still reach the paper broker: at one event time the replay sends the 5m bar before the 1m
    bar closing with it, and a bracket resting on the symbol fills on the 5m bar (its open, from its open time)."""
    b, r = broker(latency_ms=0)
    b.submit(plan())
    feed(
        b,
        [
            *[_bar("1m", T0 + i * MIN, MIN, 100.0, 100.5, 99.5, 100.0) for i in range(4)],  # entry at T0; no touch
            _bar("5m", T0, 5 * MIN, 100.0, 100.5, 98.5, 98.8),  # its range reaches the stop (99): fills here
            _bar("1m", T0 + 4 * MIN, MIN, 100.0, 100.0, 98.5, 98.8),  # too late: the position is closed
        ],
    )
    assert [f.kind for f in r.fills] == [OrderKind.ENTRY, OrderKind.STOP]
    stop = r.fills[1]
    assert stop.ts_ms == T0 and stop.price == pytest.approx(99.0 * (1 - 1e-4))
