"""The typed inputs, results and errors of the operator actions.

Every adapter (CLI, Telegram, a future HTTP API) receives these objects and only decides how to show them, so
the same question gets the same facts whichever way it is asked.  Errors are :class:`ControlError` subclasses
whose ``message`` is written for the operator: an adapter shows it as it is (never a traceback).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

#: Most signals a single ``recent signals`` call returns (a Telegram message must stay readable).
MAX_SIGNALS = 50


class ControlError(Exception):
    """An action refused or impossible; ``message`` says why in the operator's words."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class InvalidInput(ControlError):
    """The operator's input cannot be acted on (e.g. ``/signals x``)."""


class ConfirmationRequired(ControlError):
    """A destructive action (kill) asked for without confirmation: nothing was changed."""


class NotAvailable(ControlError):
    """The question cannot be answered where it was asked (e.g. no run in the journal yet)."""


class Refused(ControlError):
    """The action is not allowed now (the cause of a halt persists, the operator is not on the allow-list);
    nothing was changed and the refusal is journaled."""


@dataclass(frozen=True, slots=True)
class RunInfo:
    """The run an answer is about: the running one (in-process) or the journal's latest."""

    run_id: str
    mode: str
    profile: str
    source: str
    simulated: bool
    namespace: str
    status: str  # running | completed | interrupted | failed
    started: str | None = None  # ISO-8601 UTC
    ended: str | None = None
    uptime_s: float | None = None  # only known in the running process
    market_time: str | None = None  # market clock (event time) of the latest event / decision
    counter_backend: str | None = None  # only known in the running process
    data_age_s: dict[str, float | None] = field(default_factory=dict)  # per symbol; None: no data yet


@dataclass(frozen=True, slots=True)
class TripInfo:
    """A breaker trip journaled for the run (what-if trips in shadow included, marked as such in ``detail``)."""

    breaker: str
    detail: str
    ts_ms: int | None


@dataclass(frozen=True, slots=True)
class TradingInfo:
    """The persisted trading state: ACTIVE, REDUCING (exits only) or HALTED, and why."""

    state: str
    breaker: str | None = None
    detail: str | None = None
    since: str | None = None  # wall time of the last change, ISO-8601 UTC
    by: str | None = None  # breaker | operator | kill | cli | telegram:<user>

    @property
    def line(self) -> str:
        """``ACTIVE``, or ``HALTED since … by breaker (daily_loss: …)``: every adapter shows a halt this way."""
        if self.state == "ACTIVE":
            return "ACTIVE"
        cause = f"{self.breaker}: {self.detail}" if self.breaker else (self.detail or "no reason recorded")
        return f"{self.state} since {self.since or 'unknown time'} by {self.by or '?'} ({cause})"


@dataclass(frozen=True, slots=True)
class CapWindow:
    name: str  # "hour" | "day"
    used: int
    cap: int | None  # None when the run's settings did not say


@dataclass(frozen=True, slots=True)
class Caps:
    windows: tuple[CapWindow, ...]
    at_market_time: str | None = None  # the market time the windows were counted at

    def window(self, name: str) -> CapWindow | None:
        return next((w for w in self.windows if w.name == name), None)


@dataclass(frozen=True, slots=True)
class Status:
    journal: str  # redacted URL
    paused: bool
    trading: TradingInfo
    run: RunInfo | None
    caps: Caps | None
    trips: tuple[TripInfo, ...] = ()  # the run's latest breaker trips, oldest first

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class SignalRow:
    ts: int  # event time (epoch ms)
    symbol: str
    side: str
    entry: float
    stop: float
    targets: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class Position:
    """An open (or pending entry) trade of the run, with its bracket."""

    decision_id: str
    symbol: str
    side: str
    status: str  # pending | open
    qty: float
    entry: float | None  # average fill price; None while pending
    stop: float
    target: float
    opened_ts: int
    broker: str
    mark: float | None = None  # latest price seen by the running process; None elsewhere
    unrealized: float | None = None  # (mark - entry) x qty, signed by side, fees excluded


@dataclass(frozen=True, slots=True)
class PauseResult:
    paused: bool
    changed: bool  # False when it already was in that state
    journal: str


@dataclass(frozen=True, slots=True)
class ResumeResult:
    """Resume clears the pause flag and, like an operator's resume always did, a breaker halt or REDUCING."""

    was_paused: bool
    trading_before: TradingInfo
    trading: str  # the line of :func:`ultra_signals.execution.breakers.resume_trading`
    journal: str
    #: What could not be checked before resuming a breaker halt (e.g. data age, from a shell); None: all checked.
    unchecked: str | None = None


@dataclass(frozen=True, slots=True)
class StopEntryResult:
    """REDUCING: no new entries, open positions keep their stop and target."""

    changed: bool
    trading_before: TradingInfo
    trading: TradingInfo
    journal: str


@dataclass(frozen=True, slots=True)
class KillResult:
    trading: TradingInfo
    exchange: bool  # an exchange was asked to cancel and flatten; False: the paper broker (the runner flattens)
    cancelled_orders: int = 0
    flattened: tuple[str, ...] = ()
    remaining_orders: int = 0
    remaining_positions: int = 0
    errors: tuple[str, ...] = ()

    @property
    def clean(self) -> bool:
        return not self.errors and self.remaining_orders == 0 and self.remaining_positions == 0


# -- PnL, balance, health, version, force-exit (issue 16: Telegram and the web API on par) ------------------------


@dataclass(frozen=True, slots=True)
class PnlDay:
    """Realised PnL of the trades closed on one UTC day (by their close's market time)."""

    day: str  # YYYY-MM-DD (UTC)
    realized: float  # net of fees and funding, USDT
    trades: int
    wins: int  # trades closed with pnl > 0


@dataclass(frozen=True, slots=True)
class PnlReport:
    """Realised PnL today and since the run started, per day, and the unrealised PnL of what is still open.

    "Today" is the UTC day of the run's market clock (the latest event or decision), not of the wall clock, so a
    replay answers about the day it replays.  ``days`` has one row per day of the last ``len(days)`` days ending
    today, oldest first, zero rows included.  ``unrealized`` sums the open positions whose mark is known
    (``marked`` of ``open_positions``); None when no mark is known (a shell reading the journal alone).
    """

    run_id: str | None
    today: str | None  # YYYY-MM-DD (UTC) of the run's market clock; None without a run
    realized_today: float
    trades_today: int
    wins_today: int
    realized_total: float  # since the run started
    trades_total: int
    wins_total: int
    fees_total: float
    days: tuple[PnlDay, ...]
    open_positions: int
    marked: int  # open positions with a known mark
    unrealized: float | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class BalanceInfo:
    """Account equity where it is kept: the paper broker's equity in the runner, or Binance's account."""

    source: str  # "paper" | "binance"
    asset: str  # "USDT"
    equity: float
    start_equity: float | None = None  # paper: the equity the run started with
    detail: str | None = None  # e.g. "Binance TESTNET"


@dataclass(frozen=True, slots=True)
class Health:
    """Everything an operator checks before trusting the run.

    ``state`` folds the pause flag into the trading state: HALTED and REDUCING win over PAUSED, which wins over
    RUNNING.  ``data_age_s`` and ``counter_backend`` are known only in the running process (None or empty from a
    shell); ``stale`` lists the symbols whose data is older than ``max_data_age_s``.
    """

    state: str  # RUNNING | PAUSED | REDUCING | HALTED
    trading: TradingInfo
    paused: bool
    trips: tuple[TripInfo, ...]  # the run's latest breaker trips, oldest first
    run: RunInfo | None
    data_age_s: dict[str, float | None] = field(default_factory=dict)
    max_data_age_s: float | None = None  # breakers.max_data_staleness_s when the settings are known
    stale: tuple[str, ...] = ()
    counter_backend: str | None = None  # redis | memory | blocked | none; None: not known here
    last_event: str | None = None  # market time of the latest event / decision (ISO-8601 UTC)
    latency_p50_ms: float | None = None
    latency_p99_ms: float | None = None
    live: bool = False  # True: answered by the running process; False: from the journal alone

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class VersionInfo:
    version: str
    git_commit: str | None
    python: str


@dataclass(frozen=True, slots=True)
class ForceExitResult:
    """One position closed at market with its brackets cancelled (or why not yet)."""

    symbol: str
    decision_id: str
    status: str  # closed | open (the exit order did not fill in time) | ...
    qty: float
    exit_price: float | None = None
    pnl: float | None = None
    venue: str = ""  # "paper" | "binance"
    by: str = ""
    errors: tuple[str, ...] = ()

    @property
    def closed(self) -> bool:
        return self.status == "closed" and not self.errors
