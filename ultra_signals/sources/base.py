"""The interface every market source implements: simulator, candle replay, live Binance.

A source yields one ordered stream.  Bars that close before ``run_start_ms`` are warm-up history (features
only, no decisions); from ``run_start_ms`` on the runner decides.  Sources emit *closed* klines for every
configured timeframe (aggregating themselves where the market only gives 1m), plus whatever trades, book
tickers and funding they have, all in event-time order; when several timeframes close at the same instant,
the coarsest comes first so a signal sees the higher-timeframe bar that closed with it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from ultra_signals.core.events import MarketEvent


@dataclass(slots=True)
class SourceInfo:
    name: str  # "sim", "replay", "binance"
    simulated: bool  # True: everything it produces is labelled SIMULATED
    symbols: list[str]
    timeframes: list[str]
    historical: bool  # True: the stream is recorded/generated data and may run faster than real time
    notices: list[str] = field(default_factory=list)  # e.g. "1m dropped: finest file timeframe is 5m"


class MarketSource(Protocol):
    @property
    def info(self) -> SourceInfo: ...

    async def open(self) -> None:
        """Learn what the run window depends on before the runner reads it (live: the exchange's clock).

        The runner awaits it once before reading ``run_start_ms`` / ``run_end_ms``; ``events()`` opens the source
        itself if no one did.  A failure here is a :class:`SourceError`, as from ``events()``.
        """
        ...

    @property
    def run_start_ms(self) -> int:
        """Market time at which the run window starts (decisions are made from here on); final once opened."""
        ...

    @property
    def run_end_ms(self) -> int | None:
        """Market time at which the run window ends; None for an open-ended live feed."""
        ...

    def events(self) -> AsyncIterator[MarketEvent]:
        """Warm-up history, then run-window events, in event-time order."""
        ...

    async def aclose(self) -> None: ...


@runtime_checkable
class EventLists(Protocol):
    """A stream (what a source's ``events()`` returned) that can also hand its events over in lists.

    :meth:`lists` gives the same events in the same order, with the same yields to the event loop between them, in
    place of iterating the stream one by one (one or the other).  A list holds events the source has just produced
    and its consumer takes each at once, so there is no per-event ``received_at``: the consumer's clock is the
    event's receipt.  The runner takes lists when the stream offers them: one asynchronous step per list instead of
    per event (issue 13: a replay of three symbols over 30 days hands over 166,320 events).
    """

    def lists(self) -> AsyncIterator[Sequence[MarketEvent]]: ...


class SourceError(RuntimeError):
    """A source cannot start (bad folder, unknown symbol...): the message says what and where."""
