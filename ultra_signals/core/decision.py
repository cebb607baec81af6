"""What the engine decides, as plain typed values shared by the journal, metrics, notifier and executor."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class Side(StrEnum):
    LONG = "LONG"
    SHORT = "SHORT"


@dataclass(slots=True)
class Candidate:
    """A proposed trade on a closed bar: scoring said LONG or SHORT; the filters have not spoken yet."""

    symbol: str
    timeframe: str
    bar_open_time: int
    ts: int  # event time of the decision: the bar's close (epoch ms)
    side: Side
    score: float  # weighted score in [-1, 1]
    confidence: float  # in [0, 1]
    entry: float
    stop: float
    targets: tuple[float, ...]
    components: dict[str, float] = field(default_factory=dict)
    features: dict[str, float] = field(default_factory=dict)

    @property
    def key(self) -> str:
        """(symbol, timeframe, bar time): the same bar never yields two candidates."""
        return f"{self.symbol}:{self.timeframe}:{self.bar_open_time}"


@dataclass(slots=True)
class Decision:
    """A candidate with its verdict.  ``reason`` is the first filter's code that refused it, else None."""

    run_id: str
    candidate: Candidate
    allowed: bool
    reason: str | None
    latency_ms: float = 0.0  # wall time from the bar's arrival to this verdict
    counts: dict[str, int] = field(default_factory=dict)  # cap window counts seen by the sniper
    not_evaluated: tuple[str, ...] = ()  # filters that passed it for want of data (filters.unavailable_data)

    @property
    def id(self) -> str:
        """Unique per (run, symbol, bar time): the reservation id and the order's client id derive from it."""
        return f"{self.run_id}:{self.candidate.key}"

    def as_record(self) -> dict[str, Any]:
        """The ``--decisions-out`` JSONL shape."""
        c = self.candidate
        return {
            "ts": c.ts,
            "symbol": c.symbol,
            "timeframe": c.timeframe,
            "side": c.side.value,
            "score": round(c.score, 6),
            "confidence": round(c.confidence, 6),
            "decision": "allowed" if self.allowed else "blocked",
            "reason": self.reason,
            "entry": c.entry,
            "stop": c.stop,
            "targets": list(c.targets),
        }
