"""Circuit breakers: pure rules that turn facts into trips, and the persisted trading state they move.

The rules (:class:`Breakers`) see only what they are told (closed trades, order errors, runner health) on the
market clock, so a replay trips exactly where live would.  The state (ACTIVE → REDUCING | HALTED) lives in the
journal's ``state`` table under ``trading_state``: a restart must come back halted if it went down halted, and
only an operator (:func:`resume_trading`, behind ``ultra-signals resume`` and Telegram's ``/resume``)
clears it.
"""

from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Protocol

from ultra_signals.core.config import BreakerSettings

STATE_KEY = "trading_state"
DAY_MS = 86_400_000


class TradingState(StrEnum):
    ACTIVE = "ACTIVE"
    REDUCING = "REDUCING"  # only exits: no new entries, brackets stay
    HALTED = "HALTED"  # no new orders at all


#: Value of the ``trading_state`` gauge.
STATE_GAUGE = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1, TradingState.HALTED: 2}
#: The reason code a runner puts on a decision blocked by the trading state.
BLOCK_REASON = {TradingState.REDUCING: "trading_reducing", TradingState.HALTED: "trading_halted"}


@dataclass(frozen=True, slots=True)
class RunnerHealth:
    """What the runner reports periodically for the health breakers."""

    ts_ms: int  # market time of the report
    latency_p95_ms: float  # tick-to-decision p95 over the runner's recent window
    max_feed_age_s: float  # oldest symbol's market-time age of its latest event
    counter_backend: str  # active sniper counter backend: "redis", "memory", "none"
    counter_policy: str  # redis.on_failure: "memory" | "block"


@dataclass(frozen=True, slots=True)
class Trip:
    breaker: str  # daily_loss | consecutive_losses | order_errors | data_staleness | latency_p95 | ...
    detail: str
    ts_ms: int | None


@dataclass(frozen=True, slots=True)
class StateRecord:
    state: TradingState = TradingState.ACTIVE
    breaker: str | None = None
    detail: str | None = None
    since_ms: int | None = None  # market time of the trip
    at: float | None = None  # wall time of the last change
    by: str | None = None  # "breaker", "operator", "kill"

    def to_json(self) -> str:
        d = asdict(self)
        d["state"] = self.state.value
        return json.dumps(d)

    @classmethod
    def from_json(cls, text: str | None) -> StateRecord:
        if not text:
            return cls()
        try:
            d = json.loads(text)
            return cls(
                TradingState(d.get("state", "ACTIVE")),
                d.get("breaker"),
                d.get("detail"),
                d.get("since_ms"),
                d.get("at"),
                d.get("by"),
            )
        except (ValueError, TypeError, AttributeError):
            # A state we cannot read must not silently become ACTIVE.
            return cls(TradingState.HALTED, "state_unreadable", f"unreadable trading_state {text[:80]!r}", None)


class StateJournal(Protocol):
    def get_state(self, key: str, default: str | None = None) -> str | None: ...

    def set_state(self, key: str, value: str) -> None: ...


def load_state(journal: StateJournal) -> StateRecord:
    return StateRecord.from_json(journal.get_state(STATE_KEY))


def save_state(journal: StateJournal, record: StateRecord) -> None:
    journal.set_state(STATE_KEY, record.to_json())


def _when(rec: StateRecord) -> str:
    if rec.at is None:
        return "unknown time"
    return datetime.fromtimestamp(rec.at, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def resume_trading(journal: StateJournal, by: str = "operator") -> str:
    """Operator resume: back to ACTIVE.  Returns the line to show (CLI and Telegram share it).

    A running executor picks the change up from the journal (within a second) and starts its loss streak over.
    """
    rec = load_state(journal)
    if rec.state is TradingState.ACTIVE:
        return "trading is already ACTIVE; nothing to resume"
    save_state(journal, StateRecord(TradingState.ACTIVE, None, f"resumed by {by}", None, time.time(), by))
    why = f"{rec.breaker}: {rec.detail}" if rec.breaker else (rec.detail or "no reason recorded")
    engine = getattr(journal, "engine", None)
    if engine is not None:  # the rollout gate looks for a resume after a trip
        from ultra_signals.journal.trading import ExecStore

        ExecStore(engine).event("resume", by, f"was {rec.state.value} ({why})")
    return f"trading resumed (ACTIVE); it was {rec.state.value} since {_when(rec)} ({why})"


def halt_trading(journal: StateJournal, breaker: str, detail: str, by: str = "operator") -> StateRecord:
    """Operator halt (the kill switch): HALTED until a resume, whatever a running executor thinks."""
    rec = StateRecord(TradingState.HALTED, breaker, detail, None, time.time(), by)
    save_state(journal, rec)
    return rec


def describe_state(journal: StateJournal) -> str:
    rec = load_state(journal)
    if rec.state is TradingState.ACTIVE:
        return "trading ACTIVE"
    return f"trading {rec.state.value} since {_when(rec)}: {rec.breaker}: {rec.detail}"


class Breakers:
    """The rules.  Feed facts in market time; each call returns the trips it caused (usually none)."""

    def __init__(self, cfg: BreakerSettings) -> None:
        self.cfg = cfg
        self.losses_in_a_row = 0
        self.day: int | None = None
        self.day_start_equity = 0.0
        self.day_pnl = 0.0
        self._errors: deque[int] = deque()
        self._unrealized_tripped_day: int | None = None  # the day the open positions' loss last tripped

    def seed(self, *, losses_in_a_row: int, day: int | None, day_start_equity: float, day_pnl: float) -> None:
        """Restore the counters rebuilt from the journal after a restart."""
        self.losses_in_a_row = losses_in_a_row
        self.day, self.day_start_equity, self.day_pnl = day, day_start_equity, day_pnl

    def reset(self) -> None:
        """After an operator resume: the streak that tripped starts over (the day's loss does not)."""
        self.losses_in_a_row = 0
        self._errors.clear()

    def observe_equity(self, equity: float, ts_ms: int) -> None:
        """Start-of-day equity is the first equity seen on each UTC day of market time."""
        day = ts_ms // DAY_MS
        if self.day != day:
            self.day, self.day_start_equity, self.day_pnl = day, equity, 0.0

    def on_trade_closed(self, pnl: float, ts_ms: int, equity_before: float) -> list[Trip]:
        self.observe_equity(equity_before, ts_ms)
        self.day_pnl += pnl
        self.losses_in_a_row = self.losses_in_a_row + 1 if pnl < 0 else 0
        trips = []
        if self.losses_in_a_row >= self.cfg.consecutive_losses:
            trips.append(Trip("consecutive_losses", f"{self.losses_in_a_row} losing trades in a row", ts_ms))
        limit = self.day_start_equity * self.cfg.daily_loss_pct / 100.0
        if self.day_start_equity > 0 and -self.day_pnl >= limit:
            trips.append(
                Trip(
                    "daily_loss",
                    f"day loss {-self.day_pnl:.2f} USDT ≥ {self.cfg.daily_loss_pct}% of {self.day_start_equity:.2f}",
                    ts_ms,
                )
            )
        return trips

    def on_unrealized(self, unrealized: float, wallet: float, ts_ms: int) -> list[Trip]:
        """The open positions' unrealized PnL now: the day's loss counts it, as if everything closed at once.

        A trade's whole PnL belongs to the day it closes (the realized rule above), so the unrealized PnL of
        the positions still open counts whole too: the breaker trips when the realized loss of the day plus
        what the open positions would lose now reaches the limit, before any stop has filled.  ``wallet`` is
        the balance without unrealized PnL (it starts the day when no close did).  It trips once per UTC day:
        an operator who resumes with the loss still open is not halted again by the next mark, only by the next
        losing close (the realized rule) or a new day.
        """
        self.observe_equity(wallet, ts_ms)
        loss = -(self.day_pnl + unrealized)
        limit = self.day_start_equity * self.cfg.daily_loss_pct / 100.0
        if self.day_start_equity <= 0 or loss < limit or self._unrealized_tripped_day == self.day:
            return []
        self._unrealized_tripped_day = self.day
        detail = (
            f"day loss {loss:.2f} USDT (realized {0.0 - self.day_pnl:.2f}, unrealized {0.0 - unrealized:.2f})"
            f" ≥ {self.cfg.daily_loss_pct}% of {self.day_start_equity:.2f}"
        )
        return [Trip("daily_loss", detail, ts_ms)]

    def on_order_error(self, ts_ms: int) -> list[Trip]:
        window = int(self.cfg.order_errors_window_s * 1000)
        self._errors.append(ts_ms)
        while self._errors and self._errors[0] <= ts_ms - window:
            self._errors.popleft()
        if len(self._errors) >= self.cfg.order_errors_n:
            n = len(self._errors)
            return [Trip("order_errors", f"{n} order errors within {self.cfg.order_errors_window_s:g} s", ts_ms)]
        return []

    def on_health(self, h: RunnerHealth) -> list[Trip]:
        c = self.cfg
        trips = []
        if h.max_feed_age_s > c.max_data_staleness_s:
            trips.append(
                Trip(
                    "data_staleness",
                    f"feed {h.max_feed_age_s:.1f} s old (max {c.max_data_staleness_s:g})",
                    h.ts_ms,
                )
            )
        if h.latency_p95_ms > c.max_latency_p95_ms:
            trips.append(
                Trip(
                    "latency_p95",
                    f"tick-to-decision p95 {h.latency_p95_ms:.0f} ms (max {c.max_latency_p95_ms:g})",
                    h.ts_ms,
                )
            )
        if c.counter_lost_under_block and h.counter_policy == "block" and h.counter_backend != "redis":
            trips.append(
                Trip(
                    "counter_backend_lost",
                    f"counter backend is {h.counter_backend!r} under the block policy",
                    h.ts_ms,
                )
            )
        return trips
