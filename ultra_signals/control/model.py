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
