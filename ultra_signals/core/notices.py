"""Notices: the typed facts the runner and the executor announce, and the interface of the sinks that do.

Producers (``live``, ``execution``) publish these and depend on nothing else of the notification side; each sink
in :mod:`ultra_signals.transport` renders them itself (plain text in :mod:`ultra_signals.transport.messages`).
Kept in ``core`` so that the sinks may sit on top of the operator layer (Telegram answers commands through
:mod:`ultra_signals.control`) without an import cycle.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from ultra_signals.core.decision import Decision


@dataclass(frozen=True, slots=True)
class SignalCard:
    """One decision: kind ``signal`` when allowed, ``blocked`` otherwise (Telegram digests those)."""

    decision: Decision
    mode: str
    simulated: bool = False

    @property
    def kind(self) -> str:
        return "signal" if self.decision.allowed else "blocked"


@dataclass(frozen=True, slots=True)
class RunStarted:
    mode: str
    run_id: str
    source: str
    simulated: bool
    symbols: tuple[str, ...]
    counter_backend: str
    on_failure: str
    kind = "start"


@dataclass(frozen=True, slots=True)
class RunStopped:
    mode: str
    run_id: str
    status: str  # completed | interrupted | failed
    allowed: int
    blocked: int
    kind = "stop"


@dataclass(frozen=True, slots=True)
class BreakerTrip:
    """A circuit breaker tripped; ``state`` is the trading state it moved to, None for a shadow what-if trip."""

    mode: str
    breaker: str
    detail: str
    state: str | None
    kind = "breaker"


@dataclass(frozen=True, slots=True)
class CounterEvent:
    """The sniper counters' backend changed (``event``: start, fallback, recovered, ...); ``text`` says how."""

    mode: str
    event: str
    text: str

    @property
    def kind(self) -> str:
        return "start" if self.event == "start" else "fallback"


@dataclass(frozen=True, slots=True)
class DailySummary:
    """One market day's tally (``final``: the run ended before the day did)."""

    mode: str
    date: str  # YYYY-MM-DD, UTC market time
    final: bool
    allowed_by_symbol: Mapping[str, int]
    blocked_by_reason: Mapping[str, int]  # insertion order breaks ties between equal counts
    simulated: bool = False
    kind = "daily_summary"


@dataclass(frozen=True, slots=True)
class PlainText:
    """Free text under a kind, for notices that carry nothing more structured."""

    kind: str
    text: str


Payload = SignalCard | RunStarted | RunStopped | BreakerTrip | CounterEvent | DailySummary | PlainText


@dataclass(frozen=True, slots=True)
class Notice:
    """A typed fact to announce; each sink renders ``payload`` itself."""

    payload: Payload
    chat_key: str | None = None  # idempotency key (e.g. the decision id): the same key is never sent twice

    @property
    def kind(self) -> str:
        """``signal``, ``blocked``, ``breaker``, ``fallback``, ``start``, ``stop``, ``daily_summary``, ..."""
        return self.payload.kind

    @classmethod
    def plain(cls, kind: str, text: str, chat_key: str | None = None) -> Notice:
        return cls(PlainText(kind, text), chat_key)

    @classmethod
    def signal(cls, decision: Decision, mode: str, simulated: bool = False) -> Notice:
        """A decision's card, keyed by the decision id."""
        return cls(SignalCard(decision, mode, simulated), decision.id)


class Notifier(Protocol):
    def publish(self, notice: Notice) -> None:
        """Enqueue; never blocks, never raises on delivery problems."""
        ...

    async def start(self) -> None: ...

    async def aclose(self) -> None:
        """Deliver what can be delivered, then stop."""
        ...
