"""The stored execution timelines: fixed market events and decisions into the executor, everything it does out.

Each scenario drives a real executor (paper broker, or the Binance broker against the local fake exchange) step
by step and records, after every step, what changed: the commands the broker received, the rows added to the
execution tables (orders, fills, trades, events), the trading state, the notices.  The money path must produce
exactly these bytes before and after a refactor.  Work that changes execution on purpose regenerates the files
with ``python -m tests.golden_execution`` in a commit that says which behaviour changed and shows the diff.

Wall-clock fields (``wall``, ``closed_wall``, the state's ``at``) are left out: they differ on every run and no
decision reads them except the loss streak's "closed after the last resume", which the scenarios exercise.
"""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

from sqlalchemy import select

from tests.factories import MIN, T0, bar_decision, paper_broker, replay_settings
from tests.helpers import RecordingNotifier
from ultra_signals.core.config import Settings, load_settings
from ultra_signals.core.decision import Decision, Side
from ultra_signals.core.events import BookTicker, Funding, Kline, MarketEvent, Trade
from ultra_signals.execution.breakers import (
    STATE_KEY,
    RunnerHealth,
    StateRecord,
    TradingState,
    resume_trading,
    save_state,
)
from ultra_signals.execution.brokers.base import EntryPlan
from ultra_signals.execution.executor import TradingExecutor
from ultra_signals.journal.schema import exec_events, exec_fills, exec_orders, exec_trades
from ultra_signals.journal.writer import Journal
from ultra_signals.observability.metrics import Metrics
from ultra_signals.transport.messages import plain_text

GOLDEN = Path(__file__).parent / "golden"
WALL_FIELDS = frozenset({"id", "wall", "closed_wall"})


class RecordingBroker:
    """A real broker with a log of the commands the executor gave it (a spy that delegates, not a mock)."""

    def __init__(self, inner: Any, log: list[dict[str, Any]]) -> None:
        self._inner = inner
        self._log = log

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def submit(self, plan: EntryPlan) -> None:
        self._log.append({"submit": _plan(plan)})
        self._inner.submit(plan)

    def close_position(self, symbol: str, side: Side, qty: Decimal, decision_id: str, ts_ms: int) -> None:
        self._log.append({"close_position": [symbol, side.value, str(qty), decision_id, ts_ms]})
        self._inner.close_position(symbol, side, qty, decision_id, ts_ms)


def _plan(p: EntryPlan) -> dict[str, Any]:
    return {
        "decision_id": p.decision_id,
        "run_id": p.run_id,
        "symbol": p.symbol,
        "side": p.side.value,
        "qty": str(p.qty),
        "stop": str(p.stop),
        "take_profit": str(p.take_profit),
        "arrival_price": p.arrival_price,
        "ts_ms": p.ts_ms,
        "entry_type": p.entry_type,
        "limit_price": None if p.limit_price is None else str(p.limit_price),
        "limit_timeout_ms": p.limit_timeout_ms,
        "market_fallback": p.market_fallback,
    }


class Timeline:
    """Diffs the execution tables, state and notices after each step into one JSON line per step."""

    def __init__(self, journal: Journal, notifier: RecordingNotifier, drop: frozenset[str] = WALL_FIELDS) -> None:
        self.journal = journal
        self.notifier = notifier
        self.drop = drop
        self.commands: list[dict[str, Any]] = []
        self.lines: list[str] = []
        self._seen = {"orders": 0, "fills": 0, "events": 0}
        self._trades: dict[str, dict[str, Any]] = {}
        self._notices = 0
        self._state: dict[str, Any] | None = None

    def _rows(self, table: Any) -> list[dict[str, Any]]:
        with self.journal.engine.connect() as c:
            order = table.c.id if "id" in table.c else table.c.opened_ts
            return [dict(r) for r in c.execute(select(table).order_by(order)).mappings()]

    def _clean(self, row: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in row.items() if k not in self.drop}

    def step(self, name: str, extra: dict[str, Any] | None = None) -> None:
        out: dict[str, Any] = {"step": name}
        if self.commands:
            out["commands"] = list(self.commands)
            self.commands.clear()
        for key, table in (("orders", exec_orders), ("fills", exec_fills), ("events", exec_events)):
            rows = self._rows(table)
            new = rows[self._seen[key] :]
            self._seen[key] = len(rows)
            if new:
                out[key] = [self._clean(r) for r in new]
        changed = []
        for r in self._rows(exec_trades):
            clean = self._clean(r)
            if self._trades.get(r["decision_id"]) != clean:
                self._trades[r["decision_id"]] = clean
                changed.append(clean)
        if changed:
            out["trades"] = changed
        state = json.loads(self.journal.get_state(STATE_KEY) or "null")
        if isinstance(state, dict):
            state.pop("at", None)
        if state != self._state:
            out["trading_state"] = state
            self._state = state
        notices = self.notifier.notices[self._notices :]
        self._notices = len(self.notifier.notices)
        if notices:
            out["notices"] = [[n.kind, plain_text(n.payload)] for n in notices]  # as console and Telegram show it
        if extra:
            out.update(extra)
        self.lines.append(json.dumps(out, sort_keys=True, separators=(",", ":"), default=str))

    def text(self) -> str:
        return "".join(line + "\n" for line in self.lines)


def paper_executor(settings: Settings, journal: Journal, notifier: RecordingNotifier, run_id: str,
                   timeline: Timeline, metrics: Metrics | None = None) -> TradingExecutor:  # fmt: skip
    broker: Any = RecordingBroker(paper_broker(settings), timeline.commands)
    return TradingExecutor(
        settings,
        broker=broker,
        journal=journal,
        notifier=notifier,
        run_id=run_id,
        metrics=metrics,
        namespace="golden",
        simulated=True,
    )


def _summary(ex: TradingExecutor) -> dict[str, Any]:
    return {"summary": ex.summary(), "blocking_reason": ex.blocking_reason()}


def trade(symbol: str, ts: int, price: float) -> Trade:
    return Trade(symbol, ts, price, 0.1, False)


def scenario_paper_canary(tmp: Path) -> str:
    """Canary rules on the paper broker: brackets, target, stop, every breaker, kill, resume, restart."""
    s = replay_settings(tmp / "canary.db", "canary")
    journal = Journal(s.journal.url)
    notifier = RecordingNotifier()
    tl = Timeline(journal, notifier)
    metrics = Metrics()
    ex = paper_executor(s, journal, notifier, "run-1", tl, metrics)
    asyncio.run(ex.start())
    tl.step("start", _summary(ex))

    def feed(name: str, *events: MarketEvent) -> None:
        for ev in events:
            ex.on_market_event(ev)
        tl.step(name)

    def signal(name: str, d: Decision) -> None:
        ex.on_signal(d)
        tl.step(name, {"blocking_reason": ex.blocking_reason()})

    # 1. A long entry with brackets; a second signal on the symbol is refused; funding; the target is hit.
    d1 = bar_decision("run-1", 0)
    t1 = d1.candidate.ts
    feed("book", BookTicker("BTCUSDT", t1 - 10, 59_999.0, 2.0, 60_001.0, 3.0))
    signal("long_entry_submitted", d1)
    feed("entry_fills_on_next_trade", trade("BTCUSDT", t1 + 100, 60_005.0))
    signal("same_symbol_refused", bar_decision("run-1", 1))
    feed(
        "funding_announced_then_charged",
        Funding("BTCUSDT", t1 + 200, 60_010.0, 0.0001, t1 + 1_000),
        Funding("BTCUSDT", t1 + 1_000, 60_020.0, 0.0002, t1 + 8 * 3_600_000),
    )
    feed("target_hit", trade("BTCUSDT", t1 + 2_000, 60_320.0))

    # 2. Two losers in a row (a short on ETH, then a long on BTC) trip consecutive_losses: HALTED.
    d2 = bar_decision("run-1", 3, symbol="ETHUSDT", side=Side.SHORT, price=3_000.0, risk=30.0)
    t2 = d2.candidate.ts
    signal("short_entry_submitted", d2)
    feed("short_fills", trade("ETHUSDT", t2 + 50, 2_999.5))
    feed("short_stopped", trade("ETHUSDT", t2 + 5_000, 3_031.0))
    d3 = bar_decision("run-1", 5)
    t3 = d3.candidate.ts
    signal("long_entry_2", d3)
    feed("long_2_fills_stop_hit", trade("BTCUSDT", t3 + 100, 60_000.0), trade("BTCUSDT", t3 + 200, 59_650.0))
    signal("halted_refuses", bar_decision("run-1", 6))

    # 3. The operator resumes from another process; the executor picks it up.
    resume_trading(journal, by="golden")
    ex.refresh_state()
    tl.step("operator_resume", {"blocking_reason": ex.blocking_reason()})

    # 4. Refusals before the broker: prices out of order (sizing), one position at a time, one entry a minute.
    signal("sizing_refused", bar_decision("run-1", 8, targets=(59_000.0,)))
    d4 = bar_decision("run-1", 10)
    t4 = d4.candidate.ts
    signal("long_entry_3", d4)
    feed("long_3_fills", trade("BTCUSDT", t4 + 100, 60_000.0))
    signal("gateway_refused_per_minute", bar_decision("run-1", 10, symbol="ETHUSDT", price=3_000.0, risk=30.0))
    signal("gateway_refused_open_positions", bar_decision("run-1", 11, symbol="ETHUSDT", price=3_000.0, risk=30.0))

    # 5. A bracket the venue rejects while the position is open: missing_bracket, HALTED, the position closed.
    stop_cid = ex.trades[d4.id].stop_cid
    ex.on_order_update(stop_cid, "BTCUSDT", "REJECTED", "would_trigger_immediately", t4 + 150)
    tl.step("bracket_rejected", {"blocking_reason": ex.blocking_reason()})
    feed("flattened_at_market", trade("BTCUSDT", t4 + 300, 60_010.0))
    resume_trading(journal, by="golden")
    ex.refresh_state()
    tl.step("resume_2")

    # 6. Order errors (two within the window) and the health breakers.
    ex.on_broker_error("order", "HTTP 400 -2019 Margin is insufficient.", t4 + 400)
    ex.on_broker_error("order", "HTTP 400 -2019 Margin is insufficient.", t4 + 500)
    tl.step("order_errors_trip", {"blocking_reason": ex.blocking_reason()})
    resume_trading(journal, by="golden")
    ex.on_health(RunnerHealth(t4 + 600, 100.0, 1.0, "redis", "block"))
    tl.step("healthy_report_picks_up_resume", {"blocking_reason": ex.blocking_reason()})
    ex.on_health(RunnerHealth(t4 + 700, 900.0, 45.0, "memory", "block"))
    tl.step("health_trips", {"blocking_reason": ex.blocking_reason()})
    resume_trading(journal, by="golden")
    ex.refresh_state()
    tl.step("resume_3")

    # 7. The kill switch from another process flattens the paper position.
    d6 = bar_decision("run-1", 14)
    t6 = d6.candidate.ts
    signal("long_entry_4", d6)
    feed("long_4_fills", trade("BTCUSDT", t6 + 100, 60_000.0))
    save_state(journal, StateRecord(TradingState.HALTED, "kill_switch", "operator kill switch", None, 1.0, "kill"))
    ex.refresh_state()
    tl.step("kill_seen", {"blocking_reason": ex.blocking_reason()})
    feed("kill_flattens", trade("BTCUSDT", t6 + 200, 59_990.0))
    resume_trading(journal, by="golden")
    ex.refresh_state()
    tl.step("resume_4")

    # 8. A trade still open at the end of the run, then a restart over the same journal.
    d7 = bar_decision("run-1", 18)
    t7 = d7.candidate.ts
    signal("long_entry_5", d7)
    feed("long_5_fills", trade("BTCUSDT", t7 + 100, 60_000.0))
    tl.step("before_close", _summary(ex))
    asyncio.run(ex.aclose())
    tl.step("closed_open_at_end")

    ex2 = paper_executor(s, journal, notifier, "run-2", tl)
    asyncio.run(ex2.start())
    tl.step("restart", {"losses_in_a_row": ex2.breakers.losses_in_a_row, **_summary(ex2)})
    ex = ex2
    d8 = bar_decision("run-2", 22)
    t8 = d8.candidate.ts
    signal("after_restart_entry", d8)
    feed("after_restart_loss", trade("BTCUSDT", t8 + 100, 60_000.0), trade("BTCUSDT", t8 + 200, 59_600.0))
    d9 = bar_decision("run-2", 24)
    t9 = d9.candidate.ts
    signal("after_restart_entry_2", d9)
    feed("second_loss_trips", trade("BTCUSDT", t9 + 100, 60_000.0), trade("BTCUSDT", t9 + 200, 59_600.0))
    tl.step("end", _summary(ex2))
    asyncio.run(ex2.aclose())
    journal.close()
    return tl.text()


def scenario_paper_maker_first(tmp: Path) -> str:
    """Post-only entries at the touch on candles and book tickers: a maker fill, a timeout with market fallback."""
    s = replay_settings(tmp / "maker.db", "production-phase3", **{"execution.maker_first": True})
    journal = Journal(s.journal.url)
    notifier = RecordingNotifier()
    tl = Timeline(journal, notifier)
    ex = paper_executor(s, journal, notifier, "run-m", tl)
    asyncio.run(ex.start())
    tl.step("start", _summary(ex))
    d1 = bar_decision("run-m", 0)
    t1 = d1.candidate.ts
    ex.on_market_event(BookTicker("BTCUSDT", t1 - 5, 59_990.0, 1.0, 60_000.0, 1.0))
    ex.on_signal(d1)
    tl.step("post_only_at_bid")
    ex.on_market_event(trade("BTCUSDT", t1 + 1_000, 59_980.0))
    tl.step("maker_fill")
    ex.on_market_event(Kline("BTCUSDT", "5m", t1, t1 + 5 * MIN - 1, 59_990.0, 60_700.0, 59_900.0, 60_650.0, 10.0))
    tl.step("candle_after_ticks_ignored")
    ex.on_market_event(trade("BTCUSDT", t1 + 6 * MIN, 60_320.0))
    tl.step("take_profit")
    d2 = bar_decision("run-m", 4, side=Side.SHORT, price=60_000.0)
    t2 = d2.candidate.ts
    ex.on_market_event(BookTicker("BTCUSDT", t2 - 5, 59_990.0, 1.0, 60_010.0, 1.0))
    ex.on_signal(d2)
    tl.step("post_only_short_at_ask")
    ex.on_market_event(trade("BTCUSDT", t2 + 10_000, 60_000.0))
    ex.on_market_event(trade("BTCUSDT", t2 + 31_000, 60_000.0))
    tl.step("timeout_then_fallback_queued")
    ex.on_market_event(trade("BTCUSDT", t2 + 31_500, 60_002.0))
    tl.step("fallback_filled")
    ex.on_market_event(trade("BTCUSDT", t2 + 40_000, 60_400.0))
    tl.step("short_stopped", _summary(ex))
    asyncio.run(ex.aclose())
    journal.close()
    return tl.text()


def scenario_paper_shadow(tmp: Path) -> str:
    """Shadow: breakers are what-if (journaled, announced once), trading never stops."""
    s = replay_settings(tmp / "shadow.db", "shadow", **{"execution.breakers.consecutive_losses": 1})
    journal = Journal(s.journal.url)
    notifier = RecordingNotifier()
    tl = Timeline(journal, notifier)
    ex = paper_executor(s, journal, notifier, "run-s", tl)
    asyncio.run(ex.start())
    for n in (0, 3, 6):
        d = bar_decision("run-s", n)
        ts = d.candidate.ts
        ex.on_signal(d)
        ex.on_market_event(trade("BTCUSDT", ts + 100, 60_000.0))
        ex.on_market_event(trade("BTCUSDT", ts + 200, 59_650.0))
        tl.step(f"loss_{n}", {"blocking_reason": ex.blocking_reason()})
    ex.on_health(RunnerHealth(T0 + 3_600_000, 5_000.0, 500.0, "memory", "block"))
    tl.step("health_what_if", _summary(ex))
    asyncio.run(ex.aclose())
    journal.close()
    return tl.text()


# Fields the fake exchange stamps with its wall clock (fills, order updates) or that follow from them.
VENUE_CLOCK_FIELDS = WALL_FIELDS | {"ts", "order_ts", "filled_ts", "closed_ts"}
KEY, SECRET = "fake-api-key-0123", "fake-api-secret-4567"


def scenario_binance_recovery(tmp: Path) -> str:
    """The Binance broker on the local fake: entry and brackets, a restart with the trade open (recovery and
    reconciliation), the stop triggered by the venue's price, a short to its target, a reconnect's reconciliation."""
    from tests.conftest import require_data
    from tests.fakes.binance_futures_server import FakeFuturesExchange, load_recorded_exchange_info_text
    from tests.helpers import until_or_fail
    from ultra_signals.execution.brokers.binance import BinanceBroker

    info = load_recorded_exchange_info_text(str(require_data("ws", "binance-futures-exchangeinfo-20210722.txt")))
    lines: list[str] = []

    async def main() -> None:
        ex = FakeFuturesExchange(info, KEY, SECRET)
        await ex.start()
        await ex.set_price("BTCUSDT", "32000")
        await ex.set_price("ETHUSDT", "2000")
        s = load_settings(
            "canary",
            overrides={
                "runtime.source": "binance",
                "binance.rest_url": ex.rest_url,
                "binance.ws_url": ex.ws_url,
                "journal.url": f"sqlite:///{tmp}/binance.db",
                "execution.request_timeout_s": 2.0,
            },
            environ={"ULTRA_SIGNALS_BINANCE__API_KEY": KEY, "ULTRA_SIGNALS_BINANCE__API_SECRET": SECRET},
        )
        journal = Journal(s.journal.url)
        notifier = RecordingNotifier()
        tl = Timeline(journal, notifier, VENUE_CLOCK_FIELDS)

        def make(run_id: str) -> TradingExecutor:
            broker: Any = RecordingBroker(BinanceBroker.from_settings(s), tl.commands)
            return TradingExecutor(
                s, broker=broker, journal=journal, notifier=notifier, run_id=run_id, namespace="golden",
                simulated=False,
            )  # fmt: skip

        def pushed_updates() -> int:
            return sum(1 for e in ex.pushed if e.get("e") in ("ORDER_TRADE_UPDATE", "ALGO_UPDATE"))

        def journaled_updates() -> int:
            with journal.engine.connect() as c:
                rows = c.execute(select(exec_orders.c.status)).all()
            return sum(1 for (st,) in rows if st not in ("submitted", "refused"))

        async def settle(e: TradingExecutor, cond: Callable[[], bool]) -> None:
            await e.broker.drain()
            await until_or_fail(cond, timeout=10)
            # Then until the journal stops moving: every update the venue pushed has been handled (not every algo
            # status becomes a row of its own, so the counts are not compared one to one).
            seen, stable = -1, 0
            for _ in range(100):
                now = (journaled_updates(), pushed_updates())
                stable = stable + 1 if now == seen else 0
                if stable >= 3:
                    break
                seen = now
                await asyncio.sleep(0.1)

        def open_orders(symbol: str | None = None) -> list[list[str]]:
            """Plain orders and algo (conditional) orders: brackets live in the Algo Service since 2025-12-09."""
            plain = [[o.cid, o.type, str(o.stop_price), str(o.qty)] for o in ex.open_orders(symbol)]
            algo = [[a.cid, a.type, str(a.trigger), str(a.qty)] for a in ex.open_algo_orders(symbol)]
            return sorted(plain + algo)

        def venue() -> dict[str, Any]:
            return {
                "venue_positions": {k: str(v[0]) for k, v in sorted(ex.positions.items())},
                "venue_open_orders": open_orders(),
            }

        e1 = make("run-b1")
        await e1.start()
        tl.step("start", {"reconciliations": [[str(x) for x in r] for r in e1.reconciliations], **venue()})
        d1 = bar_decision("run-b1", 0, price=32_000.0, risk=200.0, targets=(32_400.0,))
        e1.on_signal(d1)
        await settle(e1, lambda: e1.trades[d1.id].status == "open" and len(open_orders()) == 2)
        tl.step("entry_and_brackets", venue())
        await e1.aclose()
        tl.step("stopped_with_trade_open", {"status": e1.trades[d1.id].status})

        e2 = make("run-b2")
        await e2.start()
        tl.step(
            "restart_recovers_open_trade",
            {
                "recovered": sorted(e2.trades),
                "reconciliations": [[str(x) for x in r] for r in e2.reconciliations],
                "blocking_reason": e2.blocking_reason(),
                **venue(),
            },
        )
        await ex.set_price("BTCUSDT", "31790")
        # The recovered trade closes from the stream and its sibling take-profit is cancelled (USDⓈ-M has no OCO).
        await settle(e2, lambda: e2.trades[d1.id].status == "closed")
        tl.step("stop_triggered_by_venue", venue())

        d2 = bar_decision("run-b2", 4, symbol="ETHUSDT", side=Side.SHORT, price=2_000.0, risk=20.0, targets=(1_960.0,))
        e2.on_signal(d2)
        await settle(e2, lambda: e2.trades[d2.id].status == "open" and len(open_orders("ETHUSDT")) == 2)
        tl.step("short_entry_and_brackets", venue())
        await ex.drop_streams()
        await until_or_fail(lambda: len(e2.reconciliations) == 2, timeout=10)
        tl.step("reconnect_reconciles", {"reconciliations": [[str(x) for x in r] for r in e2.reconciliations]})
        await ex.set_price("ETHUSDT", "1955")
        await settle(e2, lambda: e2.trades[d2.id].status == "closed" and not open_orders("ETHUSDT"))
        tl.step("target_triggered_by_venue", {**venue(), **_summary(e2)})
        await e2.aclose()
        journal.close()
        await ex.stop()
        lines.extend(tl.lines)

    asyncio.run(main())
    return "".join(line + "\n" for line in lines)


SCENARIOS: dict[str, Callable[[Path], str]] = {
    "paper_canary": scenario_paper_canary,
    "paper_maker_first": scenario_paper_maker_first,
    "paper_shadow": scenario_paper_shadow,
    "binance_recovery": scenario_binance_recovery,
}


def golden_path(name: str) -> Path:
    return GOLDEN / f"execution_{name}.jsonl"


def _names(argv: list[str]) -> Iterator[str]:
    yield from argv or sorted(SCENARIOS)


def main(argv: list[str]) -> int:
    import tempfile

    for name in _names(argv):
        with tempfile.TemporaryDirectory() as d:
            text = SCENARIOS[name](Path(d))
        golden_path(name).write_text(text, encoding="utf-8")
        print(f"{golden_path(name)}: {text.count(chr(10))} steps")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
