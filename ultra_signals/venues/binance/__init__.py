"""One Binance USDⓈ-M client for market data, the broker and preflight: URLs and routes, signing with a server-time
offset, rate-limit accounting, and the handling of 429 / 418 / 5xx / timeouts that must be the same everywhere.

Pages this package is written from (read 2026-11-30 through the project's search tool):

* General info, HTTP return codes (4XX sender, 429 rate limit, 418 IP ban, 5XX "execution status UNKNOWN"):
  https://developers.binance.com/docs/derivatives/coin-margined-futures/general-info (same text for USDⓈ-M) and
  https://developers.binance.com/legacy-docs/binance-spot-api-docs/rest-api/http-return-codes
* Limits, ``X-MBX-USED-WEIGHT-*``, ``X-MBX-ORDER-COUNT-*``, ``Retry-After``:
  https://developers.binance.com/docs/binance-spot-api-docs/rest-api/limits (futures: 2400 weight / minute,
  300 orders / 10 s, 1200 orders / minute as its WebSocket API page's ``rateLimits`` example shows:
  https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-api-general-info)
* WebSocket routes ``/public``, ``/market``, ``/private`` (unrouted connections get public data only):
  https://developers.binance.com/docs/derivatives/usds-margined-futures/websocket-market-streams
* User data on ``wss://fstream.binance.com/private/ws/<listenKey>``, listenKey 60 min, PUT keeps alive, -1125:
  https://developers.binance.com/docs/derivatives/coin-futures/user-data-streams (the page serves fapi/fstream)
* Algo orders: .../usds-margined-futures/trade/websocket-api/New-Algo-Order, .../trade/rest-api/Cancel-Algo-Order,
  .../trade/rest-api/Query-Algo-Order, .../user-data-streams/Event-Algo-Order-Update
"""
