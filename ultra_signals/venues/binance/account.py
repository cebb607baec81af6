"""Account set-up and verification before a canary or production run trades.

Binance keeps position mode, Multi-Assets mode, margin type and leverage on the account, per symbol for the last
two, and a new account starts one-way, single-asset, cross, 20x.  The runner sizes and places reduce-only
brackets for one-way mode (``positionSide`` BOTH), so:

1. ``GET /fapi/v1/positionSide/dual``: hedge mode (``dualSidePosition: true``) is refused with a clear message.
2. ``GET /fapi/v1/multiAssetsMargin``: Multi-Assets mode forbids ISOLATED; refuse, or fall back to CROSSED when
   ``execution.multi_assets_fallback`` says so.
3. ``POST /fapi/v1/marginType`` per symbol (-4046 "No need to change margin type." is success) and ``POST
   /fapi/v1/leverage`` to the profile's cap.
4. Read everything back (``GET /fapi/v2/positionRisk``) and refuse to trade if anything differs.

Pages: the endpoint list of https://skills-rank.com/skill/binance/binance-skills-hub/derivatives-trading-usds-futures
(Binance's own skill hub: positionSide/dual, multiAssetsMargin, marginType, leverage); -4046 from Binance's
USDⓈ-M error codes.  Not verified on a page: the exact code Binance returns for ISOLATED under Multi-Assets.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from ultra_signals.venues.binance.client import BinanceFuturesClient
from ultra_signals.venues.binance.errors import NO_NEED_TO_CHANGE_MARGIN_TYPE, VenueError


class AccountSetupError(RuntimeError):
    """The account cannot be traded as configured; the message says what to change."""


@dataclass(slots=True)
class AccountReport:
    hedge_mode: bool = False
    multi_assets: bool = False
    margin_type: str = "ISOLATED"
    leverage: int = 1
    symbols: dict[str, tuple[str, int]] = field(default_factory=dict)  # read back: symbol -> (margin, leverage)
    notes: list[str] = field(default_factory=list)

    def summary(self) -> str:
        per = ", ".join(f"{s} {m} {lv}x" for s, (m, lv) in sorted(self.symbols.items()))
        mode = "multi-assets" if self.multi_assets else "single-asset"
        return f"one-way, {mode}; {per}" + (f" ({'; '.join(self.notes)})" if self.notes else "")


async def read_position_mode(client: BinanceFuturesClient) -> tuple[bool, bool]:
    """(hedge mode, Multi-Assets mode) as the account has them."""
    dual = await client.signed("GET", "/fapi/v1/positionSide/dual")
    multi = await client.signed("GET", "/fapi/v1/multiAssetsMargin")
    return bool(dual.get("dualSidePosition")), bool(multi.get("multiAssetsMargin"))


async def prepare_account(
    client: BinanceFuturesClient,
    symbols: Sequence[str],
    *,
    margin_type: Literal["ISOLATED", "CROSSED"],
    max_leverage: float,
    multi_assets_fallback: Literal["refuse", "crossed"] = "refuse",
) -> AccountReport:
    """Check modes, set margin type and leverage per symbol, read them back; raise :class:`AccountSetupError`."""
    report = AccountReport(leverage=max(1, math.ceil(max_leverage)))
    try:
        report.hedge_mode, report.multi_assets = await read_position_mode(client)
    except VenueError as e:
        raise AccountSetupError(f"cannot read the position mode: {e}") from None
    if report.hedge_mode:
        raise AccountSetupError(
            "the account is in Hedge Mode (dualSidePosition=true); ultra-signals trades One-way Mode only: switch it"
            " in Binance Futures > Preferences > Position Mode (with no open position) and start again"
        )
    want = margin_type
    if report.multi_assets and want == "ISOLATED":
        if multi_assets_fallback != "crossed":
            raise AccountSetupError(
                "the account is in Multi-Assets mode, which forbids ISOLATED margin: turn Multi-Assets off, or set"
                " execution.margin_type: CROSSED (or execution.multi_assets_fallback: crossed)"
            )
        want = "CROSSED"
        report.notes.append("Multi-Assets mode: CROSSED instead of ISOLATED")
    report.margin_type = want
    for sym in symbols:
        try:
            await client.signed("POST", "/fapi/v1/marginType", {"symbol": sym, "marginType": want})
        except VenueError as e:
            if e.code != NO_NEED_TO_CHANGE_MARGIN_TYPE:  # -4046: already so, which is what we want
                raise AccountSetupError(f"{sym}: cannot set margin type {want}: {e}") from None
        try:
            await client.signed("POST", "/fapi/v1/leverage", {"symbol": sym, "leverage": report.leverage})
        except VenueError as e:
            raise AccountSetupError(f"{sym}: cannot set leverage {report.leverage}x: {e}") from None
    expected_margin = "isolated" if want == "ISOLATED" else "cross"
    for sym in symbols:
        try:
            risk = await client.signed("GET", "/fapi/v2/positionRisk", {"symbol": sym})
        except VenueError as e:
            raise AccountSetupError(f"{sym}: cannot read the settings back: {e}") from None
        row = next((r for r in risk if isinstance(r, dict) and r.get("symbol") == sym), None)
        if row is None:
            raise AccountSetupError(f"{sym}: not in positionRisk; cannot verify margin type and leverage")
        got_margin, got_lev = str(row.get("marginType", "")).lower(), int(float(row.get("leverage", 0)))
        if got_margin != expected_margin or got_lev != report.leverage:
            raise AccountSetupError(
                f"{sym}: read back {got_margin} {got_lev}x, expected {expected_margin} {report.leverage}x"
            )
        report.symbols[sym] = (got_margin, got_lev)
    return report
