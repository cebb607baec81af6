"""Is the stop comfortably inside the liquidation price?  (pure: the leverage brackets come from the venue)

Binance's maintenance margin depends on the position's notional: ``GET /fapi/v1/leverageBracket`` lists, per
symbol, brackets of ``notionalFloor``..``notionalCap`` with a maintenance margin ratio ``maintMarginRatio``, a
maintenance amount ``cum`` and the highest leverage allowed (``initialLeverage``).  For one isolated position in
one-way mode (the nearest liquidation: cross margin only adds the rest of the wallet) Binance's formula is

    LP = (WB + cum - side·qty·EP) / (qty·MMR - side·qty),   WB = qty·EP / leverage,   side = +1 long, -1 short

An entry is refused when the stop is not at least ``min_buffer`` (a fraction of the entry price) on the safe side
of LP — the stop must fire well before the exchange liquidates — or when its notional is above what the
chosen leverage allows (the bracket whose ``initialLeverage`` is at least the leverage and covers the notional).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class Bracket:
    floor: float
    cap: float
    mmr: float
    cum: float
    max_leverage: float


def parse_brackets(data: Any) -> dict[str, list[Bracket]]:
    """``leverageBracket`` answer (a list of ``{"symbol", "brackets": [...]}``) -> symbol -> brackets by floor."""
    out: dict[str, list[Bracket]] = {}
    for row in data if isinstance(data, list) else [data]:
        if not isinstance(row, dict) or "symbol" not in row:
            continue
        out[str(row["symbol"])] = sorted(
            (
                Bracket(
                    float(b["notionalFloor"]),
                    float(b["notionalCap"]),
                    float(b["maintMarginRatio"]),
                    float(b.get("cum", 0.0)),
                    float(b["initialLeverage"]),
                )
                for b in row.get("brackets", [])
            ),
            key=lambda b: b.floor,
        )
    return out


def liquidation_price(long: bool, entry: float, qty: float, leverage: float, b: Bracket) -> float:
    side = 1.0 if long else -1.0
    wb = qty * entry / leverage
    return (wb + b.cum - side * qty * entry) / (qty * b.mmr - side * qty)


def check_liquidation(
    *, long: bool, entry: float, stop: float, qty: float, leverage: float, brackets: list[Bracket], min_buffer: float
) -> tuple[bool, str, str]:
    """(ok, reason code, detail)."""
    notional = qty * entry
    b = next((x for x in brackets if x.floor <= notional < x.cap), None)
    if b is None:
        return False, "leverage_bracket_cap", f"notional {notional:.2f} USDT is beyond every leverage bracket"
    allowed = max((x.cap for x in brackets if x.max_leverage >= leverage), default=0.0)
    if notional > allowed:
        return (
            False,
            "leverage_bracket_cap",
            f"notional {notional:.2f} USDT above {allowed:.0f} allowed at {leverage:g}x",
        )
    lp = liquidation_price(long, entry, qty, leverage, b)
    room = (stop - lp) / entry if long else (lp - stop) / entry
    if room < min_buffer:
        return (
            False,
            "liquidation_buffer",
            (
                f"stop {stop:g} is {room * 100:.2f}% of the entry from the liquidation price {lp:.2f} at {leverage:g}x"
                f" (needs {min_buffer * 100:.2f}%)"
            ),
        )
    return True, "", f"liquidation {lp:.2f}, stop {room * 100:.2f}% of the entry inside it"
