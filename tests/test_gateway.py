"""Risk gateway throttles: each refusal names its limit."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ultra_signals.core.config import PortfolioLimitSettings, ThrottleSettings
from ultra_signals.execution.gateway import Exposure, RiskGateway

T0 = 1_700_000_000_000


def gw(**kw: float) -> RiskGateway:
    base = {"max_orders_per_minute": 2, "max_notional_per_order": 1000.0, "max_notional_per_symbol": 1500.0}
    base.update(kw)
    return RiskGateway(ThrottleSettings(max_open_positions=2, **base))  # type: ignore[arg-type]


def test_orders_per_minute_is_a_sliding_market_time_window() -> None:
    g = gw()
    for ts in (T0, T0 + 10_000):
        assert g.check(symbol="BTCUSDT", notional=100, ts_ms=ts, open_notional={}).ok
        g.record(ts)
    v = g.check(symbol="BTCUSDT", notional=100, ts_ms=T0 + 59_999, open_notional={})
    assert not v.ok and v.reason == "throttle_orders_per_minute"
    assert g.check(symbol="BTCUSDT", notional=100, ts_ms=T0 + 60_000, open_notional={}).ok


def test_notional_per_order_and_per_symbol() -> None:
    g = gw()
    v = g.check(symbol="BTCUSDT", notional=1000.01, ts_ms=T0, open_notional={})
    assert not v.ok and v.reason == "throttle_order_notional"
    v = g.check(symbol="BTCUSDT", notional=600, ts_ms=T0, open_notional={"BTCUSDT": 1000})
    assert not v.ok and v.reason == "throttle_symbol_notional" and "BTCUSDT" in v.detail
    assert g.check(symbol="ETHUSDT", notional=600, ts_ms=T0, open_notional={"BTCUSDT": 1000}).ok


def test_max_open_positions_counts_other_symbols() -> None:
    g = gw()
    held = {"BTCUSDT": 100.0, "ETHUSDT": 100.0}
    v = g.check(symbol="SOLUSDT", notional=100, ts_ms=T0, open_notional=held)
    assert not v.ok and v.reason == "throttle_open_positions"
    assert g.check(symbol="SOLUSDT", notional=100, ts_ms=T0, open_notional={"BTCUSDT": 100.0, "ETHUSDT": 0.0}).ok


# -- portfolio limits (execution.portfolio): across every symbol at once --------------------------------------------


def book(held: dict[str, tuple[bool, float]], *, equity: float = 10_000.0, unrealized: float = 0.0) -> Exposure:
    """Open positions as symbol -> (long, notional), at 5x."""
    notional = {s: n for s, (_, n) in held.items()}
    return Exposure(
        notional=notional,
        long={s: lg for s, (lg, _) in held.items()},
        equity=equity,
        unrealized=unrealized,
        margin_used=sum(notional.values()) / 5.0,
        leverage=5.0,
    )


def pgw(**kw: float) -> RiskGateway:
    base: dict[str, float] = {
        "max_total_notional_usdt": 3000.0,
        "max_margin_usage": 0.5,
        "max_same_direction_positions": 2,
        "max_same_direction_notional_usdt": 2500.0,
    }
    base.update(kw)
    throttles = ThrottleSettings(
        max_orders_per_minute=100, max_notional_per_order=10_000, max_notional_per_symbol=10_000, max_open_positions=10
    )
    return RiskGateway(throttles, PortfolioLimitSettings(**base))  # type: ignore[arg-type]


def pcheck(g: RiskGateway, symbol: str, notional: float, long: bool, b: Exposure) -> tuple[bool, str | None]:
    v = g.check(symbol=symbol, notional=notional, ts_ms=T0, open_notional=b.notional, long=long, exposure=b)
    return v.ok, v.reason


def test_total_notional_counts_every_symbol_and_the_entry() -> None:
    g = pgw(max_same_direction_notional_usdt=10_000, max_same_direction_positions=5)
    b = book({"BTCUSDT": (True, 1500.0), "ETHUSDT": (False, 1000.0)})
    assert pcheck(g, "SOLUSDT", 500.0, True, b) == (True, None)  # 3000: at the limit, not over
    ok, why = pcheck(g, "SOLUSDT", 500.01, True, b)
    assert (ok, why) == (False, "portfolio_total_notional")
    v = g.check(symbol="SOLUSDT", notional=600, ts_ms=T0, open_notional=b.notional, long=True, exposure=b)
    assert "2500.00 USDT open + 600.00 over 3000.00" in v.detail


def test_margin_usage_is_a_share_of_the_equity_including_unrealized_pnl() -> None:
    g = pgw(max_total_notional_usdt=100_000, max_same_direction_notional_usdt=100_000)
    held = {"BTCUSDT": (True, 5000.0)}  # 1000 USDT margin at 5x
    # Whole equity 4000: 1000 + 500 (new) = 1500 ≤ 2000, fine.
    assert pcheck(g, "ETHUSDT", 2500.0, False, book(held, equity=4000.0)) == (True, None)
    # The same wallet, but the open position is 1200 USDT down: equity 2800, half of it is 1400 < 1500.
    losing = book(held, equity=2800.0, unrealized=-1200.0)
    assert pcheck(g, "ETHUSDT", 2500.0, False, losing) == (False, "portfolio_margin_usage")
    v = g.check(symbol="ETHUSDT", notional=2500, ts_ms=T0, open_notional=losing.notional, long=False, exposure=losing)
    assert "unrealized -1200.00" in v.detail and "max 50%" in v.detail
    assert pcheck(g, "ETHUSDT", 1.0, False, book({}, equity=0.0)) == (False, "portfolio_margin_usage")  # wiped out


def test_same_direction_count_and_notional_leave_the_other_side_alone() -> None:
    g = pgw(max_total_notional_usdt=100_000)
    two_longs = book({"BTCUSDT": (True, 1000.0), "ETHUSDT": (True, 1000.0)})
    assert pcheck(g, "SOLUSDT", 100.0, True, two_longs) == (False, "portfolio_same_direction")
    assert pcheck(g, "SOLUSDT", 100.0, False, two_longs) == (True, None)  # a short hedges, it is not a third long
    one_long = book({"BTCUSDT": (True, 2000.0), "ETHUSDT": (False, 2000.0)})
    assert pcheck(g, "SOLUSDT", 501.0, True, one_long) == (False, "portfolio_same_direction_notional")
    assert pcheck(g, "SOLUSDT", 500.0, True, one_long) == (True, None)


def test_without_the_book_only_the_throttles_apply() -> None:
    """Callers that pass no exposure (old call sites, tests of the throttles) are not refused by portfolio limits."""
    g = pgw(max_total_notional_usdt=1.0)
    assert g.check(symbol="BTCUSDT", notional=500, ts_ms=T0, open_notional={}).ok


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["A", "B", "C", "D", "E"]), st.booleans(), st.floats(1.0, 5000.0)),
        max_size=5,
        unique_by=lambda x: x[0],
    ),
    st.booleans(),
    st.floats(1.0, 5000.0),
    st.floats(100.0, 50_000.0),
)
def test_an_entry_let_through_never_leaves_the_book_over_any_limit(
    held: list[tuple[str, bool, float]], long: bool, notional: float, equity: float
) -> None:
    g = pgw()
    b = book({s: (lg, n) for s, lg, n in held}, equity=equity)
    ok, _ = pcheck(g, "Z", notional, long, b)
    if ok:
        lim = g.portfolio
        assert lim is not None
        after = sum(b.notional.values()) + notional
        same = [n for s, lg, n in held if lg is long]
        assert after <= lim.max_total_notional_usdt
        assert after / 5.0 <= lim.max_margin_usage * equity + 1e-9
        assert len(same) + 1 <= lim.max_same_direction_positions
        assert sum(same) + notional <= lim.max_same_direction_notional_usdt
