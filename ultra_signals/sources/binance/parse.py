"""Raw Binance USDⓈ-M payloads to typed values, strictly.

Strict because a trader's decision hangs on these numbers: a field that is missing, of the wrong type, not a
finite non-negative decimal, or a kline whose times disagree with its interval is rejected with a
:class:`ParseError` whose ``kind`` feeds ``ws_message_errors_total{kind}``.  Nothing here does I/O, so the
same functions decode live frames, recorded files and REST answers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import orjson

from ultra_signals.core.events import BookTicker, Funding, Kline, Trade
from ultra_signals.core.timeframes import tf_ms


class ParseError(ValueError):
    """A message that cannot be used; ``kind`` is the metric label (json, schema, unknown_event, control)."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(slots=True, frozen=True)
class DepthDiff:
    """One ``depthUpdate``: absolute quantities per price level between update ids ``U`` and ``u``."""

    symbol: str
    event_time: int
    first_id: int  # U
    final_id: int  # u
    prev_final_id: int  # pu
    bids: tuple[tuple[float, float], ...]
    asks: tuple[tuple[float, float], ...]


@dataclass(slots=True, frozen=True)
class DepthSnapshot:
    """REST ``/fapi/v1/depth`` answer."""

    last_update_id: int
    event_time: int | None
    bids: tuple[tuple[float, float], ...]
    asks: tuple[tuple[float, float], ...]


@dataclass(slots=True, frozen=True)
class TradeMsg:
    """A trade with the id Binance numbers it by (aggregate id ``a`` or trade id ``t``) for de-duplication."""

    trade: Trade
    trade_id: int


@dataclass(slots=True, frozen=True)
class BookTickerMsg:
    ticker: BookTicker
    update_id: int


Parsed = Kline | TradeMsg | BookTickerMsg | Funding | DepthDiff


def _schema(msg: str) -> ParseError:
    return ParseError("schema", msg)


def _obj(v: Any, what: str) -> dict[str, Any]:
    if not isinstance(v, dict):
        raise _schema(f"{what}: expected an object, got {type(v).__name__}")
    return v


def _int(d: dict[str, Any], key: str) -> int:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise _schema(f"field {key!r}: expected an integer, got {v!r}")
    if v < 0:
        raise _schema(f"field {key!r}: negative ({v})")
    return v


_INF = math.inf


def _num(v: Any, key: str, *, allow_negative: bool = False) -> float:
    """Binance sends decimals as strings; anything else (or NaN/inf) is a broken message."""
    if type(v) is str and not allow_negative:  # the hot path: one conversion, one chained comparison
        try:
            x = float(v)
        except ValueError:
            raise _schema(f"field {key!r}: not a decimal: {v!r}") from None
        if 0.0 <= x < _INF:  # False for NaN, inf and negatives
            return x
        raise _schema(f"field {key!r}: out of range: {v!r}")
    if not isinstance(v, str):
        raise _schema(f"field {key!r}: expected a decimal string, got {v!r}")
    try:
        x = float(v)
    except ValueError:
        raise _schema(f"field {key!r}: not a decimal: {v!r}") from None
    if not math.isfinite(x) or (x < 0 and not allow_negative):
        raise _schema(f"field {key!r}: out of range: {v!r}")
    return x


def _str(d: dict[str, Any], key: str) -> str:
    v = d.get(key)
    if not isinstance(v, str) or not v:
        raise _schema(f"field {key!r}: expected a non-empty string, got {v!r}")
    return v


def _bool(d: dict[str, Any], key: str) -> bool:
    v = d.get(key)
    if not isinstance(v, bool):
        raise _schema(f"field {key!r}: expected true/false, got {v!r}")
    return v


def _levels(v: Any, key: str) -> tuple[tuple[float, float], ...]:
    if not isinstance(v, list):
        raise _schema(f"field {key!r}: expected a list of [price, qty]")
    out = []
    for lvl in v:
        if type(lvl) is not list or len(lvl) < 2:
            raise _schema(f"field {key!r}: bad level {lvl!r}")
        p, q = lvl[0], lvl[1]
        if type(p) is str and type(q) is str:  # the hot path of every depth message, inlined
            try:
                fp, fq = float(p), float(q)
            except ValueError:
                fp = fq = math.nan
            if 0.0 <= fp < _INF and 0.0 <= fq < _INF:
                out.append((fp, fq))
                continue
        out.append((_num(p, key), _num(q, key)))  # raises the precise error
    return tuple(out)


def loads(raw: str | bytes) -> Any:
    """orjson (a fast C parser, strict RFC 8259: no NaN/Infinity literals, integers within 64 bits)."""
    try:
        return orjson.loads(raw)
    except (orjson.JSONDecodeError, TypeError) as e:
        raise ParseError("json", f"not JSON: {e}") from None


def parse_message(raw: str | bytes) -> Parsed:
    """Decode one websocket frame, combined (``{"stream", "data"}``) or raw."""
    obj = loads(raw)
    if isinstance(obj, dict) and "stream" in obj and "data" in obj:
        obj = obj["data"]
    if isinstance(obj, dict) and "result" in obj and "id" in obj:
        raise ParseError("control", f"unexpected control reply {obj!r}"[:200])
    return parse_event(_obj(obj, "message"))


def parse_event(d: dict[str, Any]) -> Parsed:
    e = d.get("e")
    if e == "kline":
        return parse_ws_kline(d)
    if e == "aggTrade":
        t = Trade(_str(d, "s"), _int(d, "T"), _num(d.get("p"), "p"), _num(d.get("q"), "q"), _bool(d, "m"))
        return TradeMsg(t, _int(d, "a"))
    if e == "trade":
        t = Trade(_str(d, "s"), _int(d, "T"), _num(d.get("p"), "p"), _num(d.get("q"), "q"), _bool(d, "m"))
        return TradeMsg(t, _int(d, "t"))
    if e == "bookTicker":
        ts = _int(d, "T") if "T" in d else _int(d, "E")
        bt = BookTicker(
            _str(d, "s"),
            ts,
            _num(d.get("b"), "b"),
            _num(d.get("B"), "B"),
            _num(d.get("a"), "a"),
            _num(d.get("A"), "A"),
        )
        return BookTickerMsg(bt, _int(d, "u"))
    if e == "markPriceUpdate":
        return Funding(
            _str(d, "s"),
            _int(d, "E"),
            _num(d.get("p"), "p"),
            _num(d.get("r"), "r", allow_negative=True) if d.get("r") != "" else 0.0,
            _int(d, "T"),
        )
    if e == "depthUpdate":
        return DepthDiff(
            _str(d, "s"),
            _int(d, "E"),
            _int(d, "U"),
            _int(d, "u"),
            _int(d, "pu"),
            _levels(d.get("b"), "b"),
            _levels(d.get("a"), "a"),
        )
    raise ParseError("unknown_event", f"unexpected event type {e!r}")


def parse_ws_kline(d: dict[str, Any]) -> Kline:
    k = _obj(d.get("k"), "field 'k'")
    tf = _str(k, "i")
    try:
        length = tf_ms(tf)
    except ValueError as e:
        raise _schema(str(e)) from None
    t, close_t = _int(k, "t"), _int(k, "T")
    if close_t != t + length - 1:
        raise _schema(f"kline {tf} open {t} close {close_t}: close is not open + {length} - 1")
    o, h, lo, c = (_num(k.get(f), f) for f in ("o", "h", "l", "c"))
    if not (lo <= min(o, c) and h >= max(o, c)):
        raise _schema(f"kline {tf} open {t}: high/low do not bracket open/close")
    return Kline(
        symbol=_str(k, "s"),
        timeframe=tf,
        open_time=t,
        close_time=close_t,
        open=o,
        high=h,
        low=lo,
        close=c,
        volume=_num(k.get("v"), "v"),
        closed=_bool(k, "x"),
        taker_buy_volume=_num(k.get("V"), "V"),
        trades=_int(k, "n"),
    )


def parse_rest_kline(row: Any, symbol: str, tf: str) -> Kline:
    """One row of ``/fapi/v1/klines``: ``[t, o, h, l, c, v, T, q, n, V, Q, ignore]``.

    The caller decides whether the bar is closed (REST also returns the bar still forming).
    """
    if not isinstance(row, list) or len(row) < 10:
        raise _schema(f"kline row: expected a list of 12 fields, got {row!r}"[:200])
    length = tf_ms(tf)
    t, close_t, n = row[0], row[6], row[8]
    for name, v in (("open_time", t), ("close_time", close_t), ("trades", n)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 0:
            raise _schema(f"kline row field {name}: expected a non-negative integer, got {v!r}")
    if close_t != t + length - 1:
        raise _schema(f"kline row {tf} open {t} close {close_t}: close is not open + {length} - 1")
    o, h, lo, c, v, vb = (_num(row[i], f) for i, f in ((1, "o"), (2, "h"), (3, "l"), (4, "c"), (5, "v"), (9, "V")))
    if not (lo <= min(o, c) and h >= max(o, c)):
        raise _schema(f"kline row {tf} open {t}: high/low do not bracket open/close")
    return Kline(symbol, tf, t, close_t, o, h, lo, c, v, True, vb, n)


def parse_depth_snapshot(obj: Any) -> DepthSnapshot:
    d = _obj(obj, "depth snapshot")
    ev = d.get("E")
    return DepthSnapshot(
        _int(d, "lastUpdateId"),
        ev if isinstance(ev, int) and not isinstance(ev, bool) else None,
        _levels(d.get("bids"), "bids"),
        _levels(d.get("asks"), "asks"),
    )
