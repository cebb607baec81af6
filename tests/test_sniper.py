"""Sniper mode: MTF confirmation on the latest closed higher bar, cooldown in bars, then caps (only for passers)."""

from __future__ import annotations

from typing import Any

from tests.factories import T0, candidate, features
from ultra_signals.core.caps import CapPolicy
from ultra_signals.core.config import FeatureSettings, SniperSettings
from ultra_signals.core.decision import Side
from ultra_signals.core.events import Kline
from ultra_signals.counters.windows import MemoryCounters
from ultra_signals.engine.risk_filters import FilterContext, MarketState
from ultra_signals.engine.sniper import CooldownFilter, MtfConfirmFilter, Sniper
from ultra_signals.features.store import FeatureStore

M15 = 900_000


def store_with_15m(trend: int, bars: int = 260, last_close: int = T0 + 300_000) -> FeatureStore:
    """A real feature store fed a steady 15m trend whose last bar closes at ``last_close``."""
    store = FeatureStore(FeatureSettings(), ["5m", "15m"])
    first_open = last_close - bars * M15
    for i in range(bars):
        p = 100.0 + trend * 0.1 * i + (0.05 if i % 2 else -0.05)
        ot = first_open + i * M15
        store.update(Kline("BTCUSDT", "15m", ot, ot + M15 - 1, p, p + 0.2, p - 0.2, p + 0.02 * trend, 10.0 + i % 3))
    return store


def ctx_for(store: FeatureStore, side: Side = Side.LONG, open_time: int = T0) -> FilterContext:
    c = candidate(side=side, open_time=open_time)
    return FilterContext(c, features(), store, MarketState(), c.ts)


MTF = MtfConfirmFilter({"5m": "15m", "15m": "1h"})


def test_mtf_agrees() -> None:
    assert MTF.check(ctx_for(store_with_15m(+1), Side.LONG)) is None
    assert MTF.check(ctx_for(store_with_15m(-1), Side.SHORT)) is None


def test_mtf_disagreement_blocks() -> None:
    assert MTF.check(ctx_for(store_with_15m(-1), Side.LONG)) == "mtf_required"
    assert MTF.check(ctx_for(store_with_15m(+1), Side.SHORT)) == "mtf_required"


def test_mtf_missing_cold_or_stale_blocks() -> None:
    empty = FeatureStore(FeatureSettings(), ["5m", "15m"])
    assert MTF.check(ctx_for(empty)) == "mtf_required"
    assert MTF.check(ctx_for(store_with_15m(+1, bars=30))) == "mtf_required"  # not warm
    old = store_with_15m(+1, last_close=T0 + 300_000 - M15 - 1)
    assert MTF.check(ctx_for(old)) == "mtf_required"  # latest 15m bar closed more than one 15m bar ago
    ok = store_with_15m(+1, last_close=T0 + 300_000 - M15)
    assert MTF.check(ctx_for(ok)) is None  # exactly one bar old is still the latest closed one


def test_mtf_unmapped_timeframe_blocks() -> None:
    assert MtfConfirmFilter({}).check(ctx_for(store_with_15m(+1))) == "mtf_required"


def test_cooldown_in_bars_of_the_signal_timeframe() -> None:
    cd = CooldownFilter(bars=10)
    store = store_with_15m(+1)
    first = ctx_for(store, open_time=T0)
    assert cd.check(first) is None
    cd.record(first.candidate)
    assert cd.check(ctx_for(store, open_time=T0 + 9 * 300_000)) == "cooldown"
    assert cd.check(ctx_for(store, open_time=T0 + 10 * 300_000)) is None
    other = FilterContext(candidate(symbol="ETHUSDT"), features(), store, MarketState(), T0)
    assert cd.check(other) is None  # per symbol


def test_caps_only_spent_by_candidates_that_pass_mtf_and_cooldown() -> None:
    counters = MemoryCounters(CapPolicy.from_limits(2, 6))
    sniper = Sniper(SniperSettings(cooldown_bars=0), counters, "run1")
    up, down = store_with_15m(+1), store_with_15m(-1)
    assert sniper.check(ctx_for(down, Side.LONG, T0)) == "mtf_required"
    assert counters.window_counts(T0 + 300_000) == {"hour": 0, "day": 0}
    assert sniper.check(ctx_for(up, Side.LONG, T0)) is None
    assert sniper.check(ctx_for(up, Side.LONG, T0 + 300_000)) is None
    assert sniper.check(ctx_for(up, Side.LONG, T0 + 600_000)) == "hourly_cap"
    assert counters.window_counts(T0 + 900_000) == {"hour": 2, "day": 2}


def test_cooldown_blocks_before_a_cap_slot_is_taken() -> None:
    counters = MemoryCounters(CapPolicy.from_limits(5, 6))
    sniper = Sniper(SniperSettings(max_signals_per_hour=5, cooldown_bars=10), counters, "run1")
    up = store_with_15m(+1)
    assert sniper.check(ctx_for(up, Side.LONG, T0)) is None
    assert sniper.check(ctx_for(up, Side.LONG, T0 + 300_000)) == "cooldown"
    assert counters.window_counts(T0 + 600_000)["hour"] == 1


def test_disabled_sniper_passes_everything() -> None:
    counters = MemoryCounters(CapPolicy.from_limits(1, 1))
    sniper = Sniper(SniperSettings(enabled=False, max_signals_per_hour=1, daily_signal_cap=1), counters, "r")
    down = store_with_15m(-1)
    assert sniper.check(ctx_for(down, Side.LONG, T0)) is None
    assert sniper.check(ctx_for(down, Side.LONG, T0 + 300_000)) is None


# -- ranked selection on real candles: the live sniper equals the offline replay, and survives a restart --------

RANKED = {
    "runtime.timeframes": "5m,15m,1h",
    "execution.broker": "none",
    "sniper.selection": "ranked",
    "sniper.budget_min_history": 20,
    "sniper.max_same_direction": 3,
    # A hand-set ranking (not a fitted model): the test is about the mechanism, not the model's skill.
    "sniper.quality": {"intercept": 0.0, "weights": {"momentum_s": 1.0, "volatility_s": -1.0, "adx": 2.0}},
}
ALTS = ["ADABTC", "DASHBTC", "ETCBTC", "ETHBTC", "LTCBTC", "NXTBTC", "TRXBTC", "XLMBTC", "XMRBTC", "ZECBTC"]


def _events(symbols: list[str]) -> tuple[list[object], int]:
    from tests.conftest import require_data
    from ultra_signals.core.config import load_settings
    from ultra_signals.sources.replay import ReplaySource

    s = load_settings(overrides=RANKED, environ={})
    src = ReplaySource(require_data("klines"), symbols, s.runtime.timeframes, None, None, s.runtime.warmup_bars)
    return list(src.iter_events()), src.run_start_ms


def _engine(run_id: str, decide_from: int):  # type: ignore[no-untyped-def]
    from ultra_signals.core.caps import policy_from
    from ultra_signals.core.config import load_settings
    from ultra_signals.engine.pipeline import SignalEngine

    s = load_settings(overrides=RANKED, environ={})
    eng = SignalEngine(s, MemoryCounters(policy_from(s.sniper)), run_id)
    eng.decide_from_ms = decide_from
    return eng


def _journal_until(eng: Any, events: list[object], cut: int, journal: Any) -> None:
    """The first run: ``eng`` decides the events up to ``cut`` (event time) and journals each decision."""
    for ev in events:
        if ev.close_time + 1 > cut:  # type: ignore[attr-defined]
            break
        d = eng.on_event(ev)
        if d is not None:
            journal.record(d, "desk", simulated=False)
    journal.flush()


def _restore_from(journal: Any, eng: Any, *, budget: bool) -> None:
    """A restart's state from the journal: the caps' reservations, the cooldowns, and (``budget``) the ranked
    threshold's history."""
    seed = list(journal.allowed_reservations("desk"))
    eng.sniper.counters.seed(seed)
    for r in seed:
        sym, _tf, open_time = r.id.split(":")[-3:]
        eng.sniper.cooldown.record_key(sym, int(open_time))
    if budget:
        eng.sniper.restore_budget(journal.budget_history("desk"))


def test_ranked_sniper_equals_the_offline_replay_and_keeps_the_caps() -> None:
    from ultra_signals.apps.report import max_in_sliding_window
    from ultra_signals.core.caps import DAY_MS, HOUR_MS, policy_from
    from ultra_signals.core.config import load_settings
    from ultra_signals.engine.budget import feature_row, quality
    from ultra_signals.research.selection import Policy, Row, select

    events, start = _events(ALTS)
    eng = _engine("r", start)
    ds = [d for d in map(eng.on_event, events) if d is not None]  # type: ignore[arg-type]
    reasons = [d.reason for d in ds]
    assert reasons.count("below_budget_threshold") > 100 and reasons.count("same_direction_cap") > 0
    allowed = [d.candidate.ts for d in ds if d.allowed]
    assert max_in_sliding_window(allowed, HOUR_MS) <= 2 and max_in_sliding_window(allowed, DAY_MS) <= 6
    for d in ds:  # the threshold used is journaled with the candidate
        if d.reason == "below_budget_threshold":
            assert d.candidate.features["quality"] < d.candidate.features["budget_threshold"]
    s = load_settings(overrides=RANKED, environ={})
    budget_step = {None, "cooldown", "below_budget_threshold", "same_direction_cap", "hourly_cap", "daily_cap"}
    rows = []
    for d in ds:
        c = d.candidate
        long = c.side is Side.LONG
        q = quality(s.sniper.quality, feature_row(long, c.score, c.confidence, c.components, c.features))
        pre = None if d.reason in budget_step else d.reason
        rows.append(Row(c.key, c.ts, c.symbol, c.timeframe, c.bar_open_time, long, pre, q))
    pol = Policy(
        policy_from(s.sniper),
        s.sniper.cooldown_bars,
        "ranked",
        s.sniper.budget_reserve,
        int(s.sniper.budget_window_hours * HOUR_MS),
        s.sniper.budget_min_history,
        (3, 6 * HOUR_MS),
    )
    assert [v.reason for v in select(rows, pol, s.sniper.daily_signal_cap)] == reasons


def test_ranked_restart_rebuilds_the_budget_from_the_journal(tmp_path: object) -> None:
    """Stop half-way, restart from the journal (re-warming on the same history): the same verdicts as one run."""
    from pathlib import Path

    from ultra_signals.journal.writer import Journal

    events, start = _events(ALTS)
    one = _engine("one", start)
    whole = [d for d in map(one.on_event, events) if d is not None]  # type: ignore[arg-type]
    cut = whole[len(whole) // 2].candidate.ts
    journal = Journal(f"sqlite:///{Path(str(tmp_path)) / 'j.db'}")
    _journal_until(_engine("first", start), events, cut, journal)

    def restarted(restore_budget: bool) -> list[tuple[str, str | None]]:
        eng = _engine("second", cut + 1)
        _restore_from(journal, eng, budget=restore_budget)
        out = [d for d in map(eng.on_event, events) if d is not None]  # type: ignore[arg-type]
        return [(d.candidate.key, d.reason) for d in out]

    expected = [(d.candidate.key, d.reason) for d in whole if d.candidate.ts > cut]
    assert len(expected) > 1000
    assert restarted(True) == expected
    assert restarted(False) != expected  # without the journal's history the threshold would differ
    journal.close()


def test_two_shards_sharing_redis_decide_like_one_runner_over_the_union(redis_url: str, namespace: str) -> None:
    """Ranked on real candles, symbols split over two runners on one Redis namespace (caps and threshold
    history shared), fed in the union replay's order: every verdict and every threshold equals one runner's
    over all ten symbols.  ``max_same_direction`` is left out: that bound is per runner (not shared)."""
    import redis

    from ultra_signals.core.caps import policy_from
    from ultra_signals.core.config import load_settings
    from ultra_signals.counters.redis_backend import RedisCounters
    from ultra_signals.engine.pipeline import SignalEngine

    overrides = {**RANKED, "sniper.max_same_direction": None}
    s = load_settings(overrides=overrides, environ={})
    events, start = _events(ALTS)
    client = redis.Redis.from_url(redis_url)
    try:
        union = SignalEngine(s, MemoryCounters(policy_from(s.sniper)), "union")
        shards = {
            i: SignalEngine(s, RedisCounters(client, policy_from(s.sniper), namespace, s.profile), f"shard{i}")
            for i in (0, 1)
        }
        for eng in (union, *shards.values()):
            eng.decide_from_ms = start
        assert shards[0].sniper.budget.backend == "redis"
        one, two = [], []
        for ev in events:
            d = union.on_event(ev)  # type: ignore[arg-type]
            if d is not None:
                one.append((d.candidate.key, d.reason, d.candidate.features.get("budget_threshold")))
            e = shards[ALTS.index(ev.symbol) % 2].on_event(ev)  # type: ignore[attr-defined, arg-type]
            if e is not None:
                two.append((e.candidate.key, e.reason, e.candidate.features.get("budget_threshold")))
    finally:
        client.close()
    assert len(one) > 1000 and sum(r == "below_budget_threshold" for _, r, _ in one) > 100
    assert two == one


def test_ranked_restart_on_redis_rebuilds_the_shared_history_from_the_journal(
    tmp_path: object, redis_url: str, namespace: str
) -> None:
    """Stop half-way on Redis; restart with Redis intact, then with Redis emptied: the journal seed (idempotent
    by decision key) gives the same verdicts as one uninterrupted run both times."""
    from pathlib import Path

    import redis

    from ultra_signals.core.caps import policy_from
    from ultra_signals.core.config import load_settings
    from ultra_signals.counters.redis_backend import RedisCounters
    from ultra_signals.engine.pipeline import SignalEngine
    from ultra_signals.journal.writer import Journal

    s = load_settings(overrides=RANKED, environ={})
    events, start = _events(ALTS)
    whole = [d for d in map(_engine("one", start).on_event, events) if d is not None]  # type: ignore[arg-type]
    cut = whole[len(whole) // 2].candidate.ts
    client = redis.Redis.from_url(redis_url)
    journal = Journal(f"sqlite:///{Path(str(tmp_path)) / 'j.db'}")

    def engine(run_id: str, decide_from: int) -> SignalEngine:
        eng = SignalEngine(s, RedisCounters(client, policy_from(s.sniper), namespace, s.profile), run_id)
        eng.decide_from_ms = decide_from
        return eng

    try:
        _journal_until(engine("first", start), events, cut, journal)

        def restarted(run_id: str) -> list[tuple[str, str | None]]:
            eng = engine(run_id, cut + 1)
            _restore_from(journal, eng, budget=True)
            return [(d.candidate.key, d.reason) for d in map(eng.on_event, events) if d is not None]  # type: ignore[arg-type]

        expected = [(d.candidate.key, d.reason) for d in whole if d.candidate.ts > cut]
        assert restarted("intact") == expected
        for key in client.scan_iter(match=f"ultra_signals:{{{namespace}*"):
            client.delete(key)
        assert restarted("emptied") == expected
    finally:
        journal.close()
        client.close()
