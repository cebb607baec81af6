"""Where Binance USDⓈ-M lives: one setting (``binance.testnet``) picks mainnet or testnet, routes are built here.

Binance split fstream into three routed endpoints (announcement of 2026, legacy URLs retired 2026-04-23):
``/public`` (high-frequency book data), ``/market`` (klines, trades, mark price) and ``/private`` (user data).
"Connections that do not include a routed path (/public, /market, or /private) will only receive data from the
Public endpoint" — so a user stream on ``/ws/<listenKey>`` connects and then never delivers a fill
(https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Route = Literal["public", "market", "private"]


@dataclass(frozen=True, slots=True)
class Endpoints:
    rest: str
    ws: str
    testnet: bool = False

    @classmethod
    def choose(
        cls, *, testnet: bool, rest_url: str, ws_url: str, testnet_rest_url: str, testnet_ws_url: str
    ) -> Endpoints:
        if testnet:
            return cls(testnet_rest_url.rstrip("/"), testnet_ws_url.rstrip("/"), True)
        return cls(rest_url.rstrip("/"), ws_url.rstrip("/"), False)

    def route(self, route: Route) -> str:
        """Base of one routed websocket endpoint, e.g. ``wss://fstream.binance.com/market``."""
        return f"{self.ws}/{route}"

    def user_stream_url(self, listen_key: str) -> str:
        """The user data stream: always on ``/private``."""
        return f"{self.route('private')}/ws/{listen_key}"

    def label(self) -> str:
        return f"binance {'testnet' if self.testnet else 'mainnet'} (REST {self.rest}, ws {self.ws})"


def endpoints_from_settings(binance: Any) -> Endpoints:
    """The one place ``binance.testnet`` is read: mainnet or testnet URLs for every Binance user."""
    return Endpoints.choose(
        testnet=bool(binance.testnet),
        rest_url=binance.rest_url,
        ws_url=binance.ws_url,
        testnet_rest_url=binance.testnet_rest_url,
        testnet_ws_url=binance.testnet_ws_url,
    )
