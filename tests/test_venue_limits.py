"""Weight and order-count headers, the pause before a soft limit, the per-process IP ban (pure: no I/O)."""

from __future__ import annotations

from ultra_signals.venues.binance.clock import ServerClock
from ultra_signals.venues.binance.limits import RateState, ban_state_for, reset_bans


def test_headers_are_read_case_insensitively_by_window() -> None:
    r = RateState()
    r.update({"X-MBX-USED-WEIGHT-1M": "42", "x-mbx-order-count-10s": "3", "X-MBX-ORDER-COUNT-1M": "7", "Other": "1"})
    assert r.weight == {"1m": 42} and r.orders == {"10s": 3, "1m": 7}
    r.update({"X-MBX-ORDER-COUNT-10S": "not-a-number"})
    assert r.orders["10s"] == 3


def test_orders_pause_until_the_window_ends_near_the_soft_limit() -> None:
    r = RateState(order_soft_limits={"10s": 5, "1m": 100})
    r.update({"X-MBX-ORDER-COUNT-10S": "5"})
    assert r.pause_ms(1_000_003_000, order=True) == 7_000 + 50  # to the next 10 s boundary
    assert r.pause_ms(1_000_003_000, order=False) == 0  # reads are not held by the order count


def test_weight_pauses_everything_until_the_next_minute() -> None:
    r = RateState(weight_soft_limit=100)
    r.update({"X-MBX-USED-WEIGHT-1M": "100"})
    assert r.pause_ms(60_000 * 10 + 15_000, order=False) == 45_000 + 50


def test_server_clock_offset_uses_the_round_trip_midpoint_and_goes_stale() -> None:
    now = [10_000]
    c = ServerClock(refresh_s=60, now_local_ms=lambda: now[0])
    assert c.stale()
    assert c.record(server_ms=15_100, sent_local_ms=10_000, received_local_ms=10_200) == 5_000
    assert c.now_ms() == 15_000 and not c.stale()
    now[0] += 60_200  # refresh_s after the answer came back
    assert c.stale()


def test_one_ban_per_host_shared_by_every_client_and_told_to_listeners() -> None:
    reset_bans()
    a = ban_state_for("https://fapi.binance.com")
    assert ban_state_for("https://FAPI.binance.com/fapi/v1/time") is a  # the host, whatever the path or case
    assert ban_state_for("https://demo-fapi.binance.com") is not a  # testnet is another service
    heard: list[tuple[int, str]] = []
    unsubscribe = a.subscribe(lambda until, detail: heard.append((until, detail)))
    a.ban(10_000, "418 on klines", "md/market_data")
    a.ban(9_000, "a shorter one", "trading/trading")  # never shortens a known ban, nobody told again
    assert heard == [(10_000, "418 on klines")] and a.seen_by == "md/market_data"
    assert a.remaining_ms(4_000) == 6_000 and a.remaining_ms(10_000) == 0 and a.until_ms is None  # over: forgotten
    late: list[int] = []
    a.ban(20_000, "again", "md/market_data")
    a.subscribe(lambda until, _detail: late.append(until))  # subscribing during a ban hears of it at once
    assert late == [20_000] and heard[-1] == (20_000, "again")
    unsubscribe()
    a.ban(30_000, "third", "md/market_data")
    assert heard[-1] == (20_000, "again") and late[-1] == 30_000
    reset_bans()
    assert ban_state_for("https://fapi.binance.com").until_ms is None
