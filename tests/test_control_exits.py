"""Force-exit and balance through a real paper executor (control/exits.py): what the running process wires."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.factories import candidate
from ultra_signals.control import Control, JournalView, NotAvailable
from ultra_signals.control.exits import executor_balance, executor_closer
from ultra_signals.core.config import load_settings
from ultra_signals.core.decision import Decision
from ultra_signals.core.events import Trade
from ultra_signals.execution.executor import TradingExecutor, make_executor
from ultra_signals.journal.trading import ExecStore
from ultra_signals.journal.writer import Journal
from ultra_signals.observability.metrics import Metrics
from ultra_signals.transport.notifier import NullNotifier

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def journal(tmp_path: Path) -> Iterator[Journal]:
    j = Journal(f"sqlite:///{tmp_path}/journal.db")
    yield j
    j.close()


def open_paper_trade(journal: Journal) -> tuple[TradingExecutor, Decision, list[int]]:
    """A shadow paper executor with one filled entry on BTCUSDT; returns it, the decision and the market clock."""
    s = load_settings("shadow")
    journal.start_run("r1", mode="shadow", profile="shadow", source="sim", simulated=True, namespace="ns", settings={})
    e = make_executor(s, Metrics(), journal, NullNotifier(), "r1", "ns")
    assert isinstance(e, TradingExecutor)
    c = candidate()
    d = Decision("r1", c, True, None)
    clock = [c.ts]
    e.on_signal(d)
    for dt in (100, 200, 300):
        clock[0] = c.ts + dt
        e.on_market_event(Trade(c.symbol, clock[0], c.entry, 1.0, False))
    assert e.trades[d.id].status == "open"
    return e, d, clock


def test_force_exit_closes_the_paper_position_on_the_next_price_and_journals_it(journal: Journal) -> None:
    e, d, clock = open_paper_trade(journal)
    c = d.candidate
    control = Control(journal, JournalView(journal), close=executor_closer(e, lambda: clock[0], poll_s=0.01))

    async def go() -> None:
        task = asyncio.create_task(control.force_exit(c.symbol, confirm=True, by="telegram:111"))
        await asyncio.sleep(0.05)  # the exit order waits for the next market event, as in the runner
        for dt in (1_000, 1_100, 1_200):
            clock[0] = c.ts + dt
            e.on_market_event(Trade(c.symbol, clock[0], c.entry * 1.01, 1.0, False))
        r = await task
        assert r.closed and r.decision_id == d.id and r.venue == "paper" and r.by == "telegram:111"
        assert r.exit_price is not None and r.exit_price == pytest.approx(c.entry * 1.01, rel=1e-3)
        assert r.pnl is not None and (r.pnl > 0) == (c.side.value == "LONG")

    asyncio.run(go())
    assert ExecStore(journal.engine).trade(d.id)["status"] == "closed"  # type: ignore[index]
    [ev] = ExecStore(journal.engine).events(kind="force_exit")
    assert ev["name"] == "telegram:111" and d.id in ev["detail"]


def test_force_exit_of_a_symbol_without_a_position_is_refused(journal: Journal) -> None:
    e, _, clock = open_paper_trade(journal)
    control = Control(journal, JournalView(journal), close=executor_closer(e, lambda: clock[0]))
    with pytest.raises(NotAvailable, match="nothing to force-exit on ETHUSDT: no journaled open trade"):
        asyncio.run(control.force_exit("ETHUSDT", confirm=True, by="cli"))


def test_balance_is_the_paper_equity(journal: Journal) -> None:
    e, _, _ = open_paper_trade(journal)
    b = asyncio.run(Control(journal, JournalView(journal), balance=executor_balance(e)).balance())
    s = load_settings("shadow")
    assert b.source == "paper" and b.start_equity == s.execution.paper_equity_usdt
    assert b.equity == e.portfolio.equity
