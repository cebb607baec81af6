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
    taken_by: str | None = None  # reason "taken": the run id of the runner that won this bar

    @property
    def id(self) -> str:
        """The journal row's id, unique per (run, symbol, bar time): ``<run id>:<key>``."""
        return f"{self.run_id}:{self.candidate.key}"

    @property
    def key(self) -> str:
        """Run-independent per (symbol, timeframe, bar): the cap reservation id inside a namespace.

        Every runner of a namespace derives the same key for the same bar, so exactly one wins the slot; the
        order's client id is meant to derive from ``<namespace>:<key>`` (see :func:`order_key`).
        """
        return self.candidate.key

    @property
    def journal_reason(self) -> str | None:
        """The reason as journaled: ``taken:<winner run id>`` names who took the bar (32 characters at most)."""
        if self.reason == "taken" and self.taken_by:
            return f"taken:{self.taken_by}"[:32]
        return self.reason

    def order_key(self, namespace: str) -> str:
        """Run-independent decision id for orders: the same for every runner and every restart of a namespace."""
        return f"{namespace}:{self.candidate.key}"

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
