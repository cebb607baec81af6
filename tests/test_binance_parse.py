"""parse.py: real recorded Binance messages decode exactly; anything malformed is a ParseError with a kind."""

from __future__ import annotations

import json
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import require_data
from tests.fakes.binance_server import read_recorded_2021, read_recorded_2024
from ultra_signals.core.events import Funding, Kline
from ultra_signals.core.instruments import parse_exchange_info
from ultra_signals.execution.symbol_filters import load_exchange_info_file
from ultra_signals.sources.binance.parse import (
    BookTickerMsg,
    DepthDiff,
    ParseError,
    TradeMsg,
    parse_depth_snapshot,
    parse_message,
    parse_rest_kline,
)


def _recorded_2021() -> list[str]:
    return read_recorded_2021(require_data("ws", "binance-futures-ws-20210722.txt"))


def test_every_2021_message_decodes_to_its_type() -> None:
    kinds: dict[str, int] = {}
    for raw in _recorded_2021():
        ev = parse_message(raw)
        kinds[type(ev).__name__] = kinds.get(type(ev).__name__, 0) + 1
    # Counted independently from the recording's stream names (see data README: 67 kline messages).
    assert kinds == {"Kline": 67, "TradeMsg": 91, "DepthDiff": 764, "BookTickerMsg": 613}


def test_klines_decoded_exactly_against_the_raw_json() -> None:
    closed = 0
    for raw in _recorded_2021():
        data = json.loads(raw)["data"]
        if data["e"] != "kline":
            continue
        k = data["k"]
        ev = parse_message(raw)
        assert isinstance(ev, Kline)
        assert (ev.symbol, ev.timeframe, ev.open_time, ev.close_time) == (k["s"], k["i"], k["t"], k["T"])
        assert (ev.open, ev.high, ev.low, ev.close) == (float(k["o"]), float(k["h"]), float(k["l"]), float(k["c"]))
        assert ev.volume == float(k["v"]) and ev.taker_buy_volume == float(k["V"]) and ev.trades == k["n"]
        assert ev.closed is k["x"]
        assert ev.close_time == ev.open_time + 60_000 - 1
        closed += ev.closed
    assert closed == 4  # the README: 67 kline messages, 4 closed


def test_trades_tickers_and_depth_fields() -> None:
    for raw in _recorded_2021():
        data = json.loads(raw)["data"]
        ev = parse_message(raw)
        if isinstance(ev, TradeMsg):
            assert ev.trade_id == data["a"] and ev.trade.ts == data["T"]
            assert ev.trade.price == float(data["p"]) and ev.trade.qty == float(data["q"])
            assert ev.trade.buyer_is_maker is data["m"]
        elif isinstance(ev, BookTickerMsg):
            assert (ev.ticker.bid, ev.ticker.ask) == (float(data["b"]), float(data["a"]))
            assert ev.update_id == data["u"] and ev.ticker.ts == data["T"]
        elif isinstance(ev, DepthDiff):
            assert (ev.first_id, ev.final_id, ev.prev_final_id) == (data["U"], data["u"], data["pu"])
            assert ev.bids == tuple((float(p), float(q)) for p, q in data["b"])


def test_2024_trade_and_depth_at_0ms_decode() -> None:
    msgs, snapshot = read_recorded_2024(require_data("ws", "binance-usdm-btcusdt_20240808.gz"))
    n = {"trade": 0, "depth": 0, "ticker": 0}
    for raw in msgs[:20_000]:
        ev = parse_message(raw)
        if isinstance(ev, TradeMsg):
            n["trade"] += 1
            assert ev.trade.symbol == "BTCUSDT"
        elif isinstance(ev, DepthDiff):
            n["depth"] += 1
        else:
            assert isinstance(ev, BookTickerMsg)
            n["ticker"] += 1
    assert all(v > 0 for v in n.values())
    snap = parse_depth_snapshot(json.loads(snapshot))
    assert snap.last_update_id == 5123107852948 and snap.bids[0] == (61800.2, 2.909)


def test_mark_price_message() -> None:
    raw = (
        '{"stream":"btcusdt@markPrice@1s","data":{"e":"markPriceUpdate","E":1562305380000,"s":"BTCUSDT",'
        '"p":"11794.15000000","i":"11784.62659091","P":"11784.25641265","r":"-0.00038167","T":1562306400000}}'
    )
    ev = parse_message(raw)
    assert ev == Funding("BTCUSDT", 1562305380000, 11794.15, -0.00038167, 1562306400000)


def _kline_msg(**over: object) -> str:
    k: dict[str, object] = {
        "t": 1626992700000, "T": 1626992759999, "s": "CTKUSDT", "i": "1m", "o": "1.01000", "c": "1.01100",
        "h": "1.01100", "l": "1.01000", "v": "3917", "n": 48, "x": True, "V": "1729",
    }  # fmt: skip
    k.update(over)
    return json.dumps({"stream": "ctkusdt@kline_1m", "data": {"e": "kline", "E": 1, "s": "CTKUSDT", "k": k}})


@pytest.mark.parametrize(
    ("raw", "kind"),
    [
        ("{not json", "json"),
        ("", "json"),
        ('{"result":null,"id":1}', "control"),
        ('{"stream":"x","data":{"e":"forceOrder"}}', "unknown_event"),
        ("[1,2,3]", "schema"),
        (_kline_msg(o=1.01), "schema"),  # a number where Binance sends a decimal string
        (_kline_msg(o="nan"), "schema"),
        (_kline_msg(v="-1"), "schema"),
        (_kline_msg(T=1626992760000), "schema"),  # close is not open + 1m - 1
        (_kline_msg(i="7x"), "schema"),
        (_kline_msg(x="true"), "schema"),
        (_kline_msg(h="1.00"), "schema"),  # high below close
        ('{"e":"aggTrade","s":"X","T":1,"p":"1","q":"1","m":true}', "schema"),  # no aggregate id
        ('{"e":"depthUpdate","s":"X","E":1,"U":1,"u":2,"pu":0,"b":[["1"]],"a":[]}', "schema"),
    ],
)
def test_malformed_messages_are_parse_errors_with_a_kind(raw: str, kind: str) -> None:
    with pytest.raises(ParseError) as ei:
        parse_message(raw)
    assert ei.value.kind == kind


@settings(max_examples=300, deadline=None)
@given(
    st.one_of(
        st.text(max_size=200),
        st.recursive(
            st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
            lambda c: (
                st.lists(c, max_size=4) | st.dictionaries(st.sampled_from(list("eskKTtabBuUpPqmxi")), c, max_size=8)
            ),
            max_leaves=20,
        ).map(json.dumps),
    )
)
def test_anything_either_parses_or_is_a_parse_error(raw: str) -> None:
    try:
        parse_message(raw)
    except ParseError as e:
        assert e.kind in {"json", "schema", "unknown_event", "control"}


def test_rest_kline_row() -> None:
    row = [1637533500000, "1.0742", "1.0745", "1.0721", "1.0734", "876413.1", 1637533799999, "0", 7, "10.5", "0", "0"]
    k = parse_rest_kline(row, "XRPUSDT", "5m")
    assert k == Kline("XRPUSDT", "5m", 1637533500000, 1637533799999, 1.0742, 1.0745, 1.0721, 1.0734, 876413.1,
                      True, 10.5, 7)  # fmt: skip
    with pytest.raises(ParseError):
        parse_rest_kline(row, "XRPUSDT", "1m")  # close time does not fit 1m


def test_exchange_info_filters_are_exact_decimals() -> None:
    info = load_exchange_info_file(require_data("ws", "binance-futures-exchangeinfo-20210722.txt"))
    f = parse_exchange_info(info)
    assert len(f) == 122
    sushi = f["SUSHIUSDT"]
    assert sushi.tick_size == Decimal("0.0010") and sushi.step_size == Decimal("1")
    assert sushi.min_notional == Decimal("5") and sushi.min_qty == Decimal("1")
    assert sushi.market_max_qty == Decimal("100000") and sushi.trading and sushi.contract_type == "PERPETUAL"
    assert not f["BTCSTUSDT"].trading and f["BTCSTUSDT"].status == "PENDING_TRADING"
    with pytest.raises(ValueError, match="PRICE_FILTER"):
        parse_exchange_info({"symbols": [{"symbol": "X", "filters": []}]})
