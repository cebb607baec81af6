"""orderbook.py: Binance's local-book procedure on both real recordings, checked against a plain dict replay."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import require_data
from tests.fakes.binance_server import read_recorded_2021, read_recorded_2024, read_rest_depth_2021
from ultra_signals.sources.binance.orderbook import BookState, OrderBook, Outcome
from ultra_signals.sources.binance.parse import DepthDiff, DepthSnapshot, parse_depth_snapshot, parse_message

Book = tuple[dict[float, float], dict[float, float]]


def independent_replay(snapshot: dict[str, Any], diffs: list[dict[str, Any]]) -> Book:
    """The simplest possible rebuild: snapshot levels, then every diff not older than it, in order."""
    bids = {float(p): float(q) for p, q in snapshot["bids"]}
    asks = {float(p): float(q) for p, q in snapshot["asks"]}
    for d in diffs:
        if d["u"] < snapshot["lastUpdateId"]:
            continue
        for side, levels in ((bids, d["b"]), (asks, d["a"])):
            for p, q in levels:
                if float(q) == 0:
                    side.pop(float(p), None)
                else:
                    side[float(p)] = float(q)
    return {p: q for p, q in bids.items() if q > 0}, {p: q for p, q in asks.items() if q > 0}


def assert_tracked(book: OrderBook, bids: dict[float, float], asks: dict[float, float], top: int = 20) -> None:
    """The bounded book against the unbounded replay: every level it keeps is exact, none beyond the tracked
    depth (plus the pruning slack) is kept, and the best ``top`` levels of each side (what depth features
    read) are the replay's."""
    limit = book.max_levels + book.max_levels // 4
    assert len(book.bids) <= limit and len(book.asks) <= limit
    assert all(bids.get(p) == q for p, q in book.bids.items())
    assert all(asks.get(p) == q for p, q in book.asks.items())
    assert sorted(book.bids, reverse=True)[:top] == sorted(bids, reverse=True)[:top]
    assert sorted(book.asks)[:top] == sorted(asks)[:top]


def _depth_2021() -> tuple[dict[str, list[str]], dict[str, str]]:
    msgs = read_recorded_2021(require_data("ws", "binance-futures-ws-20210722.txt"))
    snaps = read_rest_depth_2021(require_data("ws", "binance-futures-rest-depth-20210722.txt"))
    by_sym: dict[str, list[str]] = {}
    for raw in msgs:
        data = json.loads(raw)["data"]
        if data["e"] == "depthUpdate":
            by_sym.setdefault(data["s"], []).append(raw)
    return by_sym, snaps


def _run(book: OrderBook, raws: list[str], snapshot_raw: str, snapshot_after: int) -> None:
    """Feed diffs; the snapshot arrives after ``snapshot_after`` of them (buffered meanwhile, as live)."""
    for i, raw in enumerate(raws):
        if i == snapshot_after:
            book.apply_snapshot(parse_depth_snapshot(json.loads(snapshot_raw)))
        d = parse_message(raw)
        assert isinstance(d, DepthDiff)
        assert book.on_diff(d) is not Outcome.RESYNC


@pytest.mark.parametrize("symbol", ["SUSHIUSDT", "CTKUSDT", "AKROUSDT", "KEEPUSDT"])
@pytest.mark.parametrize("snapshot_after", [0, 5, 40])
def test_2021_book_equals_independent_replay(symbol: str, snapshot_after: int) -> None:
    by_sym, snaps = _depth_2021()
    raws = by_sym[symbol]
    book = OrderBook(symbol)
    _run(book, raws, snaps[symbol], snapshot_after)
    assert book.state is BookState.LIVE
    diffs = [json.loads(r)["data"] for r in raws]
    bids, asks = independent_replay(json.loads(snaps[symbol]), diffs)
    assert_tracked(book, bids, asks)
    assert book.last_update_id == diffs[-1]["u"]
    best = book.best()
    assert best is not None and best[0] < best[1]  # a kept book is never crossed


@pytest.mark.parametrize("name", ["binance-usdm-btcusdt_20240808.gz", "binance-usdm-ethusdt_20240808.gz"])
def test_2024_book_equals_independent_replay(name: str) -> None:
    msgs, snapshot = read_recorded_2024(require_data("ws", name))
    raws = [m for m in msgs if '"depthUpdate"' in m[:80]]
    lid = json.loads(snapshot)["lastUpdateId"]
    # The snapshot arrives where the recording received it: after the diffs that precede its id.
    before = sum(1 for r in raws if json.loads(r)["data"]["u"] < lid)
    book = OrderBook(name[13:20].upper())
    _run(book, raws, snapshot, before + 1)
    assert book.state is BookState.LIVE
    bids, asks = independent_replay(json.loads(snapshot), [json.loads(r)["data"] for r in raws])
    assert len(bids) + len(asks) > 2 * book.max_levels  # the recording grows past the tracked depth...
    assert_tracked(book, bids, asks)  # ...and the book stays bounded and exact where it counts
    s = book.summary(0, within_bps=10.0, levels=10)
    assert s is not None and s.bid_depth_usdt > 0 and s.ask_depth_usdt > 0 and -1 <= s.imbalance <= 1


def test_skipped_diff_forces_resync_and_new_snapshot_relinks() -> None:
    by_sym, snaps = _depth_2021()
    raws = by_sym["SUSHIUSDT"]
    diffs = [json.loads(r)["data"] for r in raws]
    snap = json.loads(snaps["SUSHIUSDT"])
    book = OrderBook("SUSHIUSDT")
    book.apply_snapshot(parse_depth_snapshot(snap))
    first_live = next(i for i, d in enumerate(diffs) if d["u"] >= snap["lastUpdateId"])
    skip = first_live + 10
    outcomes = []
    for i, raw in enumerate(raws[: skip + 20]):
        if i == skip:
            continue  # lost on the way
        d = parse_message(raw)
        assert isinstance(d, DepthDiff)
        outcomes.append(book.on_diff(d))
    assert outcomes.count(Outcome.RESYNC) == 1 and book.need_snapshot()
    # The exchange's book at diff skip+5 (independent replay), served as a fresh snapshot.
    bids, asks = independent_replay(snap, diffs[: skip + 6])
    fresh = DepthSnapshot(diffs[skip + 5]["u"], None, tuple(bids.items()), tuple(asks.items()))
    assert book.apply_snapshot(fresh) is Outcome.APPLIED and book.state is BookState.LIVE
    for raw in raws[skip + 20 :]:
        d = parse_message(raw)
        assert isinstance(d, DepthDiff)
        assert book.on_diff(d) is Outcome.APPLIED
    assert (book.bids, book.asks) == independent_replay(snap, diffs)


def test_repeated_diff_is_stale_not_a_break() -> None:
    by_sym, snaps = _depth_2021()
    raws = by_sym["CTKUSDT"]
    book = OrderBook("CTKUSDT")
    _run(book, raws, snaps["CTKUSDT"], 0)
    d = parse_message(raws[-1])
    assert isinstance(d, DepthDiff)
    assert book.on_diff(d) is Outcome.STALE and book.state is BookState.LIVE


def test_snapshot_older_than_the_stream_is_a_resync() -> None:
    book = OrderBook("X")
    book.on_diff(DepthDiff("X", 1, 200, 210, 199, ((10.0, 1.0),), ()))
    assert book.apply_snapshot(DepthSnapshot(150, None, ((9.0, 1.0),), ((11.0, 1.0),))) is Outcome.RESYNC
    assert book.need_snapshot()


def test_summary_depth_within_bps_and_imbalance() -> None:
    book = OrderBook("X")
    book.apply_snapshot(
        DepthSnapshot(1, None, ((100.0, 2.0), (99.95, 1.0), (99.0, 50.0)), ((100.1, 1.0), (100.2, 3.0), (101.0, 9.0)))
    )
    book.on_diff(DepthDiff("X", 5, 1, 2, 0, (), ()))
    s = book.summary(5, within_bps=10.0, levels=2)  # mid 100.05: within [99.95, 100.15]
    assert s is not None
    assert s.bid_depth_usdt == pytest.approx(100.0 * 2 + 99.95 * 1)
    assert s.ask_depth_usdt == pytest.approx(100.1 * 1)
    assert s.imbalance == pytest.approx((3.0 - 4.0) / 7.0)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 30), st.integers(0, 5), st.booleans()), min_size=1, max_size=60),
    st.integers(0, 70),
    st.booleans(),
)
def test_property_book_equals_replay_for_any_chained_stream(
    updates: list[tuple[int, int, bool]], at: int, bracket: bool
) -> None:
    """Random chained diffs; the snapshot arrives at a random point: the book always equals the replay."""
    diffs: list[dict[str, Any]] = []
    u = 1000
    for i, (price, qty, is_bid) in enumerate(updates):
        nu = u + 1 + i % 3
        lvl = [[f"{price if is_bid else price + 100}", f"{qty}"]]
        diffs.append({"U": u + 1, "u": nu, "pu": u, "b": lvl if is_bid else [], "a": [] if is_bid else lvl})
        u = nu
    at = min(at, len(diffs) - 1)
    # The exchange's snapshot holds every update before diffs[at]; its id either ends the previous diff
    # (links by pu) or falls inside diffs[at]'s range (the documented bracket).
    snap_id = diffs[at]["U"] if bracket else diffs[at]["pu"]
    base = {"lastUpdateId": 0, "bids": [["5", "1"]], "asks": [["200", "1"]]}
    bids, asks = independent_replay(base, diffs[:at])
    snap_obj = DepthSnapshot(snap_id, None, tuple(bids.items()), tuple(asks.items()))
    book = OrderBook("P")
    for i, d in enumerate(diffs):
        if i == at:
            book.apply_snapshot(snap_obj)
        dd = DepthDiff("P", 0, d["U"], d["u"], d["pu"], *(tuple((float(p), float(q)) for p, q in d[s]) for s in "ba"))
        assert book.on_diff(dd) is not Outcome.RESYNC
    assert book.state is BookState.LIVE
    assert (book.bids, book.asks) == independent_replay(base, diffs)


def test_levels_beyond_the_tracked_depth_are_dropped_and_the_top_is_exact() -> None:
    """A long stream of diffs far from the touch must not grow the book past the tracked depth (issue 12)."""
    book = OrderBook("BTCUSDT", max_levels=50)
    snap = DepthSnapshot(
        10, None, tuple((100.0 - i * 0.1, 1.0) for i in range(50)), tuple((100.1 + i * 0.1, 1.0) for i in range(50))
    )
    book.apply_snapshot(snap)
    ref_bids = dict(snap.bids)
    ref_asks = dict(snap.asks)
    last = 10
    for n in range(2_000):  # each diff adds a new level further away on both sides, and touches the top
        far_bid, far_ask = 90.0 - n * 0.01, 110.0 + n * 0.01
        top = (100.0, 1.0 + n)
        d = DepthDiff("BTCUSDT", n, last + 1, last + 1, last, (top, (far_bid, 2.0)), ((far_ask, 2.0),))
        assert book.on_diff(d) is Outcome.APPLIED
        last += 1
        ref_bids.update([top, (far_bid, 2.0)])
        ref_asks[far_ask] = 2.0
    assert len(book.bids) <= 50 + 50 // 4 and len(book.asks) <= 50 + 50 // 4
    # What is kept is exactly the best levels of the unbounded reference book.
    assert sorted(book.bids, reverse=True)[:50] == sorted(ref_bids, reverse=True)[:50]
    assert sorted(book.asks)[:50] == sorted(ref_asks)[:50]
    assert book.bids[100.0] == 2_000.0


# -- coalescing under backlog (issue 13) ------------------------------------------------------------------------
def _chain(draw_levels: list[list[tuple[int, int, int]]], start: int = 100) -> list[DepthDiff]:
    """Diffs that continue one another: U = previous u + 1, pu = previous u (ids step by 3)."""
    out, last = [], start
    for i, lv in enumerate(draw_levels):
        bids = tuple((float(100 - p), float(q)) for side, p, q in lv if side == 0)
        asks = tuple((float(101 + p), float(q)) for side, p, q in lv if side == 1)
        out.append(DepthDiff("X", 1_000 + i, last + 1, last + 3, last, bids, asks))
        last += 3
    return out


_levels = st.lists(st.tuples(st.integers(0, 1), st.integers(0, 30), st.integers(0, 5)), max_size=8)


def _live_book(max_levels: int) -> OrderBook:
    book = OrderBook("X", max_levels=max_levels)
    snap = DepthSnapshot(
        100, None, tuple((float(100 - i), 1.0) for i in range(25)), tuple((float(101 + i), 1.0) for i in range(25))
    )
    book.apply_snapshot(snap)
    book.state = BookState.LIVE  # a live book continues from the snapshot's id (pu == 100)
    return book


@settings(max_examples=60, deadline=None)
@given(st.lists(_levels, min_size=1, max_size=12), st.integers(-1, 11))
def test_a_coalesced_chain_leaves_the_book_where_one_by_one_does(levels: list[Any], gap_at: int) -> None:
    """Merged or one by one: the same book (levels and last id); a break in the chain still resyncs.

    The books here are not pruned (pruning the farthest levels happens at different moments one by one and
    merged, and keeps only the tracked depth either way: tested above)."""
    from ultra_signals.sources.binance.orderbook import coalesce

    diffs = _chain(levels)
    if 0 < gap_at < len(diffs):
        diffs = diffs[:gap_at] + diffs[gap_at + 1 :]  # one diff never arrived
    one, merged = _live_book(1000), _live_book(1000)
    r1 = [one.on_diff(d) for d in diffs]
    runs = coalesce(diffs)
    r2 = [merged.on_diff(d) for d in runs]
    assert (Outcome.RESYNC in r1) == (Outcome.RESYNC in r2)
    assert one.state is merged.state
    if Outcome.RESYNC not in r1:
        assert (one.bids, one.asks) == (merged.bids, merged.asks)
        assert one.last_update_id == merged.last_update_id == diffs[-1].final_id
        assert one.summary(1, 10.0, 10) == merged.summary(1, 10.0, 10)
        assert len(runs) == 1 and runs[0].first_id == diffs[0].first_id and runs[0].final_id == diffs[-1].final_id
        assert runs[0].prev_final_id == diffs[0].prev_final_id and runs[0].event_time == diffs[-1].event_time
    else:
        assert len(runs) == 2  # the break splits the chain: the second run does not link and resyncs


def test_summary_reads_the_sorted_levels_exactly() -> None:
    """Best bid/ask, depth within the band and the top-N imbalance, against a plain scan of the dicts."""
    import math

    by_sym, snaps = _depth_2021()
    book = OrderBook("SUSHIUSDT")
    _run(book, by_sym["SUSHIUSDT"], snaps["SUSHIUSDT"], 5)
    s = book.summary(1, 10.0, 10)
    assert s is not None
    bb, ba = max(book.bids), min(book.asks)
    assert book.best() == (bb, ba)
    mid = (bb + ba) / 2
    lo, hi = mid * (1 - 10 / 10_000), mid * (1 + 10 / 10_000)
    assert s.bid_depth_usdt == math.fsum(p * q for p, q in book.bids.items() if p >= lo)
    assert s.ask_depth_usdt == math.fsum(p * q for p, q in book.asks.items() if p <= hi)
    qb = math.fsum(q for _, q in sorted(book.bids.items(), reverse=True)[:10])
    qa = math.fsum(q for _, q in sorted(book.asks.items())[:10])
    assert s.imbalance == (qb - qa) / (qb + qa)
