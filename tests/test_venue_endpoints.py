"""One setting, ``binance.testnet``, moves market data, the broker and preflight together; routes as documented."""

from __future__ import annotations

from ultra_signals.core.config import load_settings
from ultra_signals.execution.brokers.binance import BinanceBroker
from ultra_signals.venues.binance.client import client_from_settings
from ultra_signals.venues.binance.endpoints import Endpoints, endpoints_from_settings


def test_mainnet_routes_and_the_user_stream_on_private() -> None:
    e = endpoints_from_settings(load_settings(environ={}).binance)
    assert (e.rest, e.ws, e.testnet) == ("https://fapi.binance.com", "wss://fstream.binance.com", False)
    assert e.route("market") == "wss://fstream.binance.com/market"
    assert e.route("public") == "wss://fstream.binance.com/public"
    assert e.user_stream_url("KEY") == "wss://fstream.binance.com/private/ws/KEY"


def test_testnet_switches_every_user_of_the_client() -> None:
    env = {"ULTRA_SIGNALS_BINANCE__API_KEY": "k", "ULTRA_SIGNALS_BINANCE__API_SECRET": "s"}
    s = load_settings("canary", overrides={"binance.testnet": True}, environ=env)
    e = endpoints_from_settings(s.binance)
    assert (e.rest, e.ws) == (s.binance.testnet_rest_url, s.binance.testnet_ws_url) and e.testnet
    assert client_from_settings(s, name="md", trading=False).endpoints == e
    broker = BinanceBroker.from_settings(s)
    assert broker.client.endpoints == e and broker.client.endpoints.user_stream_url("x").endswith("/private/ws/x")
    assert broker.setup_symbols == ("BTCUSDT",) and broker.margin_type == "ISOLATED"
    assert "testnet" in e.label()


def test_trailing_slashes_do_not_double() -> None:
    e = Endpoints.choose(testnet=False, rest_url="http://h/", ws_url="ws://h/", testnet_rest_url="", testnet_ws_url="")
    assert e.user_stream_url("k") == "ws://h/private/ws/k" and e.rest == "http://h"
