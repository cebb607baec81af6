"""Account set-up against the strict fake: one-way required, margin type and leverage set and read back."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest

from tests.fakes.binance_futures_server import FakeFuturesExchange
from tests.helpers import run_client_on_fake
from ultra_signals.venues.binance.account import AccountSetupError, prepare_account
from ultra_signals.venues.binance.client import BinanceFuturesClient

pytestmark = pytest.mark.timeout(60)
KEY, SECRET = "acct-key", "acct-secret"


def run(test: Callable[[FakeFuturesExchange, BinanceFuturesClient], Awaitable[None]]) -> None:
    run_client_on_fake(test, KEY, SECRET)


def test_isolated_and_leverage_are_set_then_read_back_and_4046_counts_as_done() -> None:
    async def t(ex: FakeFuturesExchange, c: BinanceFuturesClient) -> None:
        report = await prepare_account(c, ["BTCUSDT", "ETHUSDT"], margin_type="ISOLATED", max_leverage=4.5)
        assert report.symbols == {"BTCUSDT": ("isolated", 5), "ETHUSDT": ("isolated", 5)}
        assert ex.margin_types == {"BTCUSDT": "ISOLATED", "ETHUSDT": "ISOLATED"} and ex.leverages["BTCUSDT"] == 5
        again = await prepare_account(c, ["BTCUSDT"], margin_type="ISOLATED", max_leverage=5)  # -4046 this time
        assert again.symbols == {"BTCUSDT": ("isolated", 5)}
        codes = [p for m, p, _ in ex.requests if p == "/fapi/v1/marginType"]
        assert len(codes) == 3
        assert "one-way, single-asset" in again.summary()

    run(t)


def test_hedge_mode_is_refused_with_what_to_do() -> None:
    async def t(ex: FakeFuturesExchange, c: BinanceFuturesClient) -> None:
        ex.dual_side = True
        with pytest.raises(AccountSetupError, match=r"Hedge Mode .*One-way Mode only.*Position Mode"):
            await prepare_account(c, ["BTCUSDT"], margin_type="ISOLATED", max_leverage=5)
        assert ex.margin_types == {}  # nothing changed on a refused account

    run(t)


def test_multi_assets_mode_refuses_isolated_or_falls_back_as_configured() -> None:
    async def t(ex: FakeFuturesExchange, c: BinanceFuturesClient) -> None:
        ex.multi_assets = True
        with pytest.raises(AccountSetupError, match="Multi-Assets mode, which forbids ISOLATED"):
            await prepare_account(c, ["BTCUSDT"], margin_type="ISOLATED", max_leverage=5)
        r = await prepare_account(
            c, ["BTCUSDT"], margin_type="ISOLATED", max_leverage=3, multi_assets_fallback="crossed"
        )
        assert r.symbols == {"BTCUSDT": ("cross", 3)} and "CROSSED instead of ISOLATED" in r.summary()

    run(t)


def test_an_unknown_symbol_is_refused_by_name() -> None:
    async def t(ex: FakeFuturesExchange, c: BinanceFuturesClient) -> None:
        with pytest.raises(AccountSetupError, match=r"NOPEUSDT: cannot set margin type ISOLATED: .*-1121"):
            await prepare_account(c, ["NOPEUSDT"], margin_type="ISOLATED", max_leverage=5)

    run(t)
