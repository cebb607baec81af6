"""Sniper caps as the domain sees them: windows, policy, a reservation and the counters' interface.

The engine's sniper asks "may this signal take a slot?" through :class:`SniperCounters`; which backend answers
(memory, Redis, failover) is the ``counters`` room's business, so the pure engine depends only on this module.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from ultra_signals.core.config import SniperSettings

HOUR_MS = 3_600_000
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class CapRule:
    window: str  # "hour" | "day": the label of sniper_window_count{window}
    length_ms: int
    cap: int
    reason: str  # reason code when this window refuses


@dataclass(frozen=True, slots=True)
class CapPolicy:
    """Caps for the whole deployment, and optionally for each symbol on its own."""

    rules: tuple[CapRule, ...]  # checked in order: hourly before daily
    symbol_rules: tuple[CapRule, ...] = ()

    @classmethod
    def from_limits(
        cls,
        per_hour: int,
        per_day: int,
        symbol_per_hour: int | None = None,
        symbol_per_day: int | None = None,
    ) -> CapPolicy:
        rules = (CapRule("hour", HOUR_MS, per_hour, "hourly_cap"), CapRule("day", DAY_MS, per_day, "daily_cap"))
        sym: list[CapRule] = []
        if symbol_per_hour is not None:
            sym.append(CapRule("hour", HOUR_MS, symbol_per_hour, "hourly_cap"))
        if symbol_per_day is not None:
            sym.append(CapRule("day", DAY_MS, symbol_per_day, "daily_cap"))
        return cls(rules, tuple(sym))

    @property
    def horizon_ms(self) -> int:
        """How far around a reservation the rule looks: the longest window."""
        return max(r.length_ms for r in (*self.rules, *self.symbol_rules))


@dataclass(frozen=True, slots=True)
class Reservation:
    """One slot of the caps.

    ``id`` is the run-independent decision key (``<symbol>:<timeframe>:<bar open ms>``, see
    :func:`reservation_id`): every runner of a namespace asks for the same id for the same bar, so exactly one
    of them wins it and the others learn who did (``owner``).  Older journals held ``<run id>:<key>``; they
    are read back through :func:`reservation_id_of`.
    """

    id: str
    symbol: str
    ts_ms: int  # event time of the signal
    owner: str = ""  # run id of the runner that won the slot ("" when unknown)


@dataclass(frozen=True, slots=True)
class CapResult:
    allowed: bool
    reason: str | None  # "hourly_cap" | "daily_cap" | None
    counts: dict[str, int] = field(default_factory=dict)  # global trailing window counts at ts, after the call
    duplicate: bool = False  # the id had been reserved already (a retry, or another runner took it)
    owner: str = ""  # with ``duplicate``: the run id that holds the slot ("" when unknown)


def reservation_id(symbol: str, timeframe: str, bar_open_ms: int) -> str:
    """The run-independent decision key of a bar; the counters' namespace scopes it to one deployment."""
    return f"{symbol}:{timeframe}:{bar_open_ms}"


def reservation_id_of(decision_id: str) -> str:
    """The reservation id inside a journaled decision id (``[<run id>:]<symbol>:<timeframe>:<bar open ms>``).

    Run ids and symbols hold no ':', so the key is the last three fields whatever the prefix.
    """
    parts = decision_id.split(":")
    if len(parts) < 3:
        raise ValueError(f"decision id {decision_id!r} is not [<run>:]<symbol>:<timeframe>:<bar open ms>")
    return ":".join(parts[-3:])


class CounterBackendError(RuntimeError):
    """The backend could not answer (timeout, connection, foreign data under our keys).

    ``timeout`` marks a call that got no answer in time: under CPU load that is often a slow answer rather
    than a dead Redis, so the failover waits for more evidence before leaving Redis.
    """

    def __init__(self, message: str, *, timeout: bool = False) -> None:
        super().__init__(message)
        self.timeout = timeout


class SniperCounters(Protocol):
    """Check-and-reserve for cap windows.  Implementations must make the check and the reserve one atomic step."""

    @property
    def backend(self) -> str:
        """Who decides: "memory", "redis" or "blocked" (Redis away with on_failure=block).

        It is the label of sniper_counter_backend{backend} that is 1.
        """
        ...

    def check_and_reserve(self, res: Reservation) -> CapResult: ...

    def window_counts(self, ts_ms: int, symbol: str | None = None) -> dict[str, int]:
        """Trailing counts per window at ``ts_ms`` (global, or the symbol's own); reserves nothing."""
        ...

    def seed(self, reservations: Iterable[Reservation]) -> None:
        """Load reservations already made (from the journal at start); ids already known are ignored."""
        ...

    def close(self) -> None: ...


def policy_from(sniper: SniperSettings) -> CapPolicy:
    """The cap policy the settings ask for (global windows, and per-symbol ones when set)."""
    return CapPolicy.from_limits(
        sniper.max_signals_per_hour,
        sniper.daily_signal_cap,
        sniper.per_symbol_max_per_hour,
        sniper.per_symbol_daily_cap,
    )


# -- the ranked budget's threshold state (``sniper.selection: ranked``) ----------------------------------------


@dataclass(frozen=True, slots=True)
class BudgetRule:
    """How the ranked threshold is sized: see :class:`ultra_signals.engine.budget.OnlineThreshold`."""

    window_ms: int  # trailing window of candidate qualities (event time), per timeframe
    target_per_day: float  # expected count per day above the threshold
    min_history: int  # fewer candidates in the window: no threshold


@dataclass(frozen=True, slots=True)
class QualityPoint:
    """One candidate's quality as the threshold's history holds it.

    ``key`` is the run-independent decision key (:func:`reservation_id`): two runners that see the same bar of
    the same symbol (a hot standby) add one point, not two, and a restart that re-seeds from the journal adds
    nothing twice.
    """

    key: str
    timeframe: str
    ts_ms: int  # event time of the candidate
    quality: float


class QualityThreshold(Protocol):
    """The ranked budget's threshold state: a trailing window of candidate qualities per timeframe.

    In-process (:class:`ultra_signals.engine.budget.OnlineThreshold`) for one runner, or in Redis next to the
    caps (``counters``) so every runner of a namespace measures its candidates against the same history.
    """

    @property
    def backend(self) -> str:
        """Who holds the history: "memory" or "redis" (the counters' backend while Redis is away)."""
        ...

    def threshold_and_observe(self, point: QualityPoint) -> float | None:
        """The threshold at ``point.ts_ms`` from the points seen before (None: no threshold), then add ``point``.

        One atomic step: two runners calling at once are served one after the other.
        """
        ...

    def seed_points(self, points: Iterable[QualityPoint]) -> None:
        """Add points decided earlier (the journal at start) without computing anything; known keys are ignored."""
        ...


class SharedThresholdSource(Protocol):
    """Counters that can also hold the ranked threshold's history (Redis with failover)."""

    def quality_threshold(self, rule: BudgetRule) -> QualityThreshold: ...
