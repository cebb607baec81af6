"""What the runner needs of the execution layer, as a small interface (paper or exchange broker behind it)."""

from __future__ import annotations

from typing import Any, Protocol

from ultra_signals.core.decision import Decision
from ultra_signals.core.events import MarketEvent
from ultra_signals.execution.breakers import RunnerHealth


class Executor(Protocol):
    def on_market_event(self, ev: MarketEvent) -> None:
        """Every market event, cheaply: paper fills, brackets and funding run on event time."""
        ...

    def on_signal(self, decision: Decision) -> None:
        """An allowed decision: size it, route it through the gateway, place entry and brackets; never blocks."""
        ...

    def on_health(self, h: RunnerHealth) -> None:
        """The runner's periodic health report, for the latency, staleness and counter breakers."""
        ...

    def blocking_reason(self) -> str | None:
        """``trading_halted`` / ``trading_reducing`` while a breaker holds new entries, else None."""
        ...

    def summary(self) -> dict[str, Any]:
        """What-if (paper) or real results per decision, for the report."""
        ...

    async def start(self) -> None: ...

    async def aclose(self) -> None: ...
