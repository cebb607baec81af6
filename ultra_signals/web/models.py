"""The REST API's response and request bodies (pydantic): what ``/openapi.json`` documents and the tests hold it to.

They mirror the control layer's typed results (:mod:`ultra_signals.control.model`) field for field, so the page,
Telegram and the CLI show the same facts; only the shape is HTTP's (JSON, ISO times, explicit nulls).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

#: Most decisions one ``/api/v1/decisions`` call returns.
MAX_DECISIONS = 200


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorOut(_Out):
    """Every refusal: a stable ``error`` code and a sentence for the operator (never a traceback)."""

    error: str = Field(description="unauthorized | forbidden | csrf | rate_limited | confirmation_required | ...")
    detail: str


class TradingOut(_Out):
    state: str = Field(description="ACTIVE | REDUCING | HALTED")
    breaker: str | None = None
    detail: str | None = None
    since: str | None = None
    by: str | None = None
    line: str = Field(description="one line every adapter shows, e.g. 'HALTED since … by breaker (daily_loss: …)'")


class TripOut(_Out):
    breaker: str
    detail: str
    ts_ms: int | None = None


class RunOut(_Out):
    run_id: str
    mode: str
    profile: str
    source: str
    simulated: bool
    namespace: str
    status: str
    started: str | None = None
    ended: str | None = None
    uptime_s: float | None = None


class CapWindowOut(_Out):
    name: str
    used: int
    cap: int | None = None


class CapsOut(_Out):
    windows: list[CapWindowOut]
    at_market_time: str | None = None
    per_symbol: dict[str, list[CapWindowOut]] = Field(
        default_factory=dict, description="per-symbol windows, only when per-symbol caps are set"
    )


class StatusOut(_Out):
    version: str
    git_commit: str | None = None
    journal: str = Field(description="the journal URL, password redacted")
    paused: bool
    trading: TradingOut
    trips: list[TripOut] = Field(description="the run's latest breaker trips, oldest first")
    run: RunOut | None = None
    market_time: str | None = None
    counter_backend: str | None = None
    data_age_s: dict[str, float | None] = Field(default_factory=dict)
    caps: CapsOut | None = Field(
        default=None, description="the cap windows (as /api/v1/caps), null before the run's first decision"
    )


class DecisionOut(_Out):
    ts: int = Field(description="event time of the decision (bar close), epoch ms")
    time: str
    symbol: str
    timeframe: str
    side: str
    allowed: bool
    reason: str | None = Field(description="why it was blocked (null when allowed)")
    score: float
    entry: float
    stop: float


class DecisionsOut(_Out):
    run_id: str | None
    decisions: list[DecisionOut] = Field(description="newest first")


class SignalOut(_Out):
    ts: int = Field(description="event time (bar close), epoch ms")
    time: str
    symbol: str
    side: str
    entry: float
    stop: float
    targets: list[float]


class SignalsOut(_Out):
    signals: list[SignalOut] = Field(description="the latest allowed signals of the run's namespace, newest first")


class BlockedOut(_Out):
    run_id: str | None
    total: int
    by_reason: dict[str, int]


class PositionOut(_Out):
    decision_id: str
    symbol: str
    side: str
    status: str
    qty: float
    entry: float | None
    stop: float
    target: float
    opened_ts: int
    broker: str
    mark: float | None = None
    unrealized: float | None = None


class PositionsOut(_Out):
    positions: list[PositionOut]
    unrealized_total: float | None = Field(description="sum over positions with a mark; null when none has one")


class SymbolMarketOut(_Out):
    symbol: str
    data_age_s: float | None


class MarketOut(_Out):
    market_time: str | None
    counter_backend: str | None
    symbols: list[SymbolMarketOut]


class LatencyOut(_Out):
    p50_ms: float | None
    p99_ms: float | None
    samples: int


class PricePoint(_Out):
    ts: int
    close: float


class SignalMark(_Out):
    ts: int
    symbol: str
    side: str
    entry: float


class PricesOut(_Out):
    """Recent primary-timeframe closes per symbol (the runner keeps a bounded, thinned series) and the allowed
    signals to mark on them."""

    prices: dict[str, list[PricePoint]]
    signals: list[SignalMark]


class PnlDayOut(BaseModel):
    model_config = ConfigDict(extra="ignore")
    day: str = Field(description="YYYY-MM-DD (UTC, market clock)")
    realized: float
    trades: int
    wins: int


class PnlOut(BaseModel):
    """The control layer's PnL report: realised today (the market clock's UTC day) and since the run started,
    per day, and the unrealised PnL of open positions with a known mark (USDT, net of fees and funding)."""

    model_config = ConfigDict(extra="ignore")
    run_id: str | None
    today: str | None
    realized_today: float
    trades_today: int
    wins_today: int
    realized_total: float
    trades_total: int
    wins_total: int
    fees_total: float
    days: list[PnlDayOut]
    open_positions: int
    marked: int
    unrealized: float | None


class HealthOut(BaseModel):
    """What an operator checks before trusting the run (the control layer's health): the state with the pause
    folded in (RUNNING, PAUSED, REDUCING, HALTED), breaker trips, data age and the symbols past the staleness
    limit, counter backend, latest market time and tick-to-decision latency."""

    model_config = ConfigDict(extra="ignore")
    state: str
    trading: TradingOut
    paused: bool
    trips: list[TripOut]
    data_age_s: dict[str, float | None]
    max_data_age_s: float | None
    stale: list[str]
    counter_backend: str | None
    last_event: str | None
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    live: bool = Field(description="answered by the running process (false: from the journal alone)")


class BalanceOut(BaseModel):
    model_config = ConfigDict(extra="ignore")
    source: str = Field(description="paper | binance")
    asset: str
    equity: float
    start_equity: float | None = None
    detail: str | None = None


class VersionOut(BaseModel):
    model_config = ConfigDict(extra="ignore")
    version: str
    git_commit: str | None
    python: str


class ConfigOut(_Out):
    settings: dict[str, object] = Field(description="the effective settings, every secret shown as ***")


# -- control ---------------------------------------------------------------------------------------------------
class ConfirmIn(BaseModel):
    """The body of a control action.  ``confirm`` must be true for kill, force-exit and a resume that clears a
    breaker halt or a stop-entry: the confirmation is part of the request, not a second round trip."""

    model_config = ConfigDict(extra="forbid")
    confirm: bool = False


class ForceExitIn(ConfirmIn):
    symbol: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9]+$")


class ActionOut(_Out):
    """What a control action did: ``changed`` is false when it was already in that state."""

    action: str
    by: str
    changed: bool
    trading: TradingOut
    paused: bool
    detail: str = ""
    result: dict[str, object] = Field(default_factory=dict)
