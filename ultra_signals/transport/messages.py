"""What the announcements say: the plain text every sink starts from, rendered from the typed notices.

The runner and the executor publish facts (:mod:`ultra_signals.core.notices`: a decision, a breaker trip, a
run's start or end, a day's tally), never pre-rendered text; each sink renders them its own way (the console
prints :func:`plain_text` in colour, Telegram escapes it into HTML and folds blocked candidates into a digest
from the typed decisions).  The plain texts below are the ones operators already read; keep them byte-stable
(tests pin them).
"""

from __future__ import annotations

from collections import Counter

from ultra_signals.core.decision import Decision
from ultra_signals.core.notices import (
    BreakerTrip,
    CounterEvent,
    DailySummary,
    Payload,
    PlainText,
    RunStarted,
    RunStopped,
    SignalCard,
)

MODE_PREFIX = {"shadow": "SHADOW", "canary": "CANARY", "live": "LIVE"}


def fmt_price(x: float) -> str:
    """Enough significant digits for any symbol's tick size (BTC at 60k and a 0.00005 alt alike)."""
    return f"{x:.8g}" if abs(x) < 1 else f"{x:.{max(2, 8 - len(str(int(abs(x)))))}f}".rstrip("0").rstrip(".")


def prefix(mode: str) -> str:
    return MODE_PREFIX.get(mode, mode.upper())


def signal_card(decision: Decision, mode: str, simulated: bool = False) -> str:
    """``SHADOW | BTCUSDT | LONG | ENTRY:… | SL:… | TP:… | sniper:allowed`` (one line, plain text)."""
    c = decision.candidate
    verdict = "allowed" if decision.allowed else f"blocked:{decision.reason}"
    parts = [
        prefix(mode),
        c.symbol,
        c.side.value,
        f"ENTRY:{fmt_price(c.entry)}",
        f"SL:{fmt_price(c.stop)}",
        "TP:" + "/".join(fmt_price(t) for t in c.targets),
        f"sniper:{verdict}",
    ]
    if simulated:
        parts.append("SIMULATED")
    return " | ".join(parts)


def plain_text(p: Payload) -> str:
    """The one-line (or few-line) plain text of a payload, as console and Telegram show it."""
    match p:
        case SignalCard():
            return signal_card(p.decision, p.mode, p.simulated)
        case RunStarted():
            label = " SIMULATED" if p.simulated else ""
            return (
                f"{MODE_PREFIX.get(p.mode, p.mode)} | run {p.run_id} started | source {p.source}{label} | "
                f"symbols {','.join(p.symbols)} | counters {p.counter_backend} (on_failure={p.on_failure})"
            )
        case RunStopped():
            return (
                f"{MODE_PREFIX.get(p.mode, p.mode)} | run {p.run_id} {p.status} | allowed {p.allowed} | "
                f"blocked {p.blocked}"
            )
        case BreakerTrip() if p.state is None:
            return f"{prefix(p.mode)} | what-if BREAKER {p.breaker} would trip | {p.detail}"
        case BreakerTrip():
            return (
                f"{prefix(p.mode)} | BREAKER {p.breaker} | trading {p.state} | {p.detail}"
                " | resume: ultra-signals resume (or /resume)"
            )
        case CounterEvent():
            return f"{MODE_PREFIX.get(p.mode, '')} | {p.text}"
        case DailySummary():
            allowed = ", ".join(f"{k} {v}" for k, v in sorted(p.allowed_by_symbol.items())) or "none"
            blocked = ", ".join(f"{k} {v}" for k, v in Counter(p.blocked_by_reason).most_common()) or "none"
            label = " | SIMULATED" if p.simulated else ""
            return (
                f"{MODE_PREFIX.get(p.mode, '')} | daily summary {p.date}{' (so far)' if p.final else ''}"
                f" | allowed {sum(p.allowed_by_symbol.values())} ({allowed})"
                f" | blocked {sum(p.blocked_by_reason.values())} ({blocked}){label}"
            )
        case PlainText():
            return p.text
