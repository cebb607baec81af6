"""Text of the announcements, shared by every sink so console and Telegram say the same thing."""

from __future__ import annotations

from ultra_signals.core.decision import Decision

MODE_PREFIX = {"shadow": "SHADOW", "canary": "CANARY", "live": "LIVE"}


def fmt_price(x: float) -> str:
    """Enough significant digits for any symbol's tick size (BTC at 60k and a 0.00005 alt alike)."""
    return f"{x:.8g}" if abs(x) < 1 else f"{x:.{max(2, 8 - len(str(int(abs(x)))))}f}".rstrip("0").rstrip(".")


def signal_card(decision: Decision, mode: str, simulated: bool = False) -> str:
    """``SHADOW | BTCUSDT | LONG | ENTRY:… | SL:… | TP:… | sniper:allowed`` (one line, plain text)."""
    c = decision.candidate
    verdict = "allowed" if decision.allowed else f"blocked:{decision.reason}"
    parts = [
        MODE_PREFIX.get(mode, mode.upper()),
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
