"""The ranked threshold's history in Redis answers exactly what the in-process one answers, shared by runners.

Real Redis (the machine's, a fresh namespace per test).  "Exactly": the same float, bit for bit, for every
candidate of a random stream (in order, late, with duplicate keys and equal timestamps).
"""

from __future__ import annotations

import random
from collections.abc import Iterator

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.factories import candidate, features
from ultra_signals.apps.report import max_in_sliding_window
from ultra_signals.core.caps import (
    DAY_MS,
    HOUR_MS,
    BudgetRule,
    CapPolicy,
    CounterBackendError,
    QualityPoint,
    policy_from,
)
from ultra_signals.core.config import FeatureSettings, QualityWeights, SniperSettings
from ultra_signals.counters.redis_backend import RedisCounters
from ultra_signals.counters.threshold_redis import RedisThreshold
from ultra_signals.counters.windows import MemoryCounters
from ultra_signals.engine.budget import OnlineThreshold
from ultra_signals.engine.risk_filters import FilterContext, MarketState
from ultra_signals.engine.sniper import Sniper
from ultra_signals.features.store import FeatureStore

M = 60_000
T0 = 1_700_000_000_000
RULE = BudgetRule(window_ms=6 * HOUR_MS, target_per_day=8.0, min_history=4)
POLICY = CapPolicy.from_limits(2, 6)


@pytest.fixture
def client(redis_url: str) -> Iterator[redis.Redis]:
    c = redis.Redis.from_url(redis_url)
    yield c
    c.close()


def shared(client: redis.Redis, namespace: str, rule: BudgetRule = RULE) -> RedisThreshold:
    return RedisCounters(client, POLICY, namespace, "shadow").quality_threshold(rule)


def memory(rule: BudgetRule = RULE) -> OnlineThreshold:
    return OnlineThreshold(rule.window_ms, rule.target_per_day, rule.min_history)


def test_same_thresholds_as_memory_on_an_ordered_stream(client: redis.Redis, namespace: str) -> None:
    r, mem = shared(client, namespace), memory()
    answered = []
    for i in range(120):
        p = QualityPoint(f"S{i % 3}:5m:{i}", "5m", T0 + i * 5 * M, ((i * 37) % 101) / 101)
        got = r.threshold_and_observe(p)
        assert got == mem.threshold_and_observe(p)
        answered.append(got)
    assert sum(a is not None for a in answered) > 50  # the budget was binding: thresholds were compared
    assert r.threshold_and_observe(QualityPoint("x:1h:0", "1h", T0 + 600 * M, 0.5)) is None  # its own history


def test_a_key_seen_again_gets_the_threshold_it_got_first(client: redis.Redis, namespace: str) -> None:
    """Two runners deciding the same bar (a hot standby) measure it against the same number."""
    a, b = shared(client, namespace), shared(client, namespace)
    for i in range(30):
        a.threshold_and_observe(QualityPoint(f"A:5m:{i}", "5m", T0 + i * M, i / 30))
    p = QualityPoint("A:5m:99", "5m", T0 + 31 * M, 0.1)
    first = a.threshold_and_observe(p)
    assert first is not None
    for i in range(30, 60):  # the window moves on
        a.threshold_and_observe(QualityPoint(f"B:5m:{i}", "5m", T0 + (i + 2) * M, 1.0))
    assert b.threshold_and_observe(p) == first
    assert client.zcard(b.keys("5m")[0]) == 61  # counted once


def test_seed_is_idempotent_and_sets_the_same_state(client: redis.Redis, namespace: str) -> None:
    pts = [QualityPoint(f"S:5m:{i}", "5m", T0 + i * 5 * M, ((i * 13) % 17) / 17) for i in range(400)]
    r, mem = shared(client, namespace), memory()
    assert r.record(pts) > 0
    assert r.record(pts) == 0  # a second runner seeding from the same journal adds nothing
    mem.seed_points(pts)
    later = QualityPoint("S:5m:x", "5m", T0 + 401 * 5 * M, 0.5)
    assert r.threshold_and_observe(later) == mem.threshold_and_observe(later) is not None


def test_foreign_value_under_the_keys_is_a_clear_error(client: redis.Redis, namespace: str) -> None:
    r = shared(client, namespace)
    client.set(r.keys("5m")[0], "hello")
    with pytest.raises(CounterBackendError, match="foreign value"):
        r.threshold_and_observe(QualityPoint("S:5m:1", "5m", T0, 0.5))


# -- the property: Redis and memory agree on any stream ----------------------------------------------------

steps = st.lists(
    st.tuples(
        st.integers(min_value=-90, max_value=240),  # minutes after the previous candidate (negative: late)
        st.integers(min_value=0, max_value=40),  # key id (repeats: the same bar seen again)
        st.sampled_from([0.1, 0.25, 0.5, 0.5, 0.75, 0.9, 1 / 3, 2 / 3]),
        st.sampled_from(["5m", "15m"]),
        st.booleans(),  # seed (journal) rather than observe
    ),
    min_size=1,
    max_size=80,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=steps, min_history=st.integers(0, 6), target=st.sampled_from([1.0, 4.0, 8.0, 30.0]))
def test_redis_answers_exactly_like_memory(
    client: redis.Redis, namespace: str, steps: list[tuple[int, int, float, str, bool]], min_history: int, target: float
) -> None:
    rule = BudgetRule(window_ms=8 * HOUR_MS, target_per_day=target, min_history=min_history)
    r = shared(client, f"{namespace}-{abs(hash((tuple(steps), min_history, target))) % 10**9}", rule)
    mem = memory(rule)
    ts = T0
    for dm, k, q, tf, seed in steps:
        ts += dm * M
        p = QualityPoint(f"S:{tf}:{k}", tf, ts, q)
        if seed:
            r.seed_points([p])
            mem.seed_points([p])
        else:
            assert r.threshold_and_observe(p) == mem.threshold_and_observe(p)
    end = QualityPoint("S:5m:end", "5m", ts + 1, 0.5)
    assert r.threshold_and_observe(end) == mem.threshold_and_observe(end)


@given(n=st.integers(1, 400), target=st.floats(0.01, 500.0), span_h=st.integers(0, 200))
def test_rank_is_numpys_inverted_cdf(n: int, target: float, span_h: int) -> None:
    """The rank rule both backends share is numpy's quantile (inverted_cdf), which the threshold used before."""
    import numpy as np

    from ultra_signals.engine.budget import budget_rank

    rule = BudgetRule(3 * DAY_MS, target, 0)
    values = np.arange(n, dtype=np.float64)
    k = budget_rank(n, span_h * HOUR_MS, rule)
    span = max(min(rule.window_ms, span_h * HOUR_MS), HOUR_MS)
    rate = n / (span / DAY_MS)
    if rate <= target:
        assert k is None
    else:
        assert k == np.quantile(values, 1.0 - target / rate, method="inverted_cdf")


# -- the sniper with the shared history: two runners (shards) vs one runner seeing the union ------------------


def sniper_settings(**kw: object) -> SniperSettings:
    base: dict[str, object] = {
        "mtf_confirm": False,
        "cooldown_bars": 0,
        "selection": "ranked",
        "budget_min_history": 5,
        "budget_window_hours": 12.0,
        "max_signals_per_hour": 2,
        "daily_signal_cap": 6,
        # Quality rises with |score|: the test drives the ranking through the candidates' scores.
        "quality": QualityWeights(weights={"abs_score": 4.0}, mean={"abs_score": 0.6}, scale={"abs_score": 0.2}),
    }
    base.update(kw)
    return SniperSettings.model_validate(base)


def decide(sn: Sniper, symbol: str, ts: int, score: float) -> tuple[str | None, float | None]:
    c = candidate(symbol=symbol, open_time=ts - 5 * M, score=score)
    reason = sn.check(FilterContext(c, features(), FeatureStore(FeatureSettings(), ["5m"]), MarketState(), c.ts))
    return reason, c.features.get("budget_threshold")


def allowed_ts(verdicts: list[tuple[int, str | None]]) -> list[int]:
    return sorted(ts for ts, reason in verdicts if reason is None)


stream = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=40),  # minutes after the previous candidate (0: the same bar close)
        st.sampled_from(["AAA", "BBB", "CCC", "DDD"]),
        st.floats(min_value=0.3, max_value=1.0),
    ),
    min_size=1,
    max_size=120,
)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cands=stream)
def test_two_runners_take_the_thresholds_of_one_runner_over_the_union_and_never_exceed_the_caps(
    client: redis.Redis, namespace: str, cands: list[tuple[int, str, float]]
) -> None:
    """Shard A holds AAA/BBB, shard B CCC/DDD, one Redis namespace; one memory runner sees every candidate.

    Identical when the candidates reach Redis in the union's order (here: one after the other, as a replay
    of the union decides them): the same threshold for every candidate, bit for bit, and the same verdicts.
    """
    run_union(client, f"{namespace}-{abs(hash(tuple(cands))) % 10**9}", cands)


def test_two_runners_equal_the_union_on_a_long_stream_where_the_threshold_binds(
    client: redis.Redis, namespace: str
) -> None:
    rng = random.Random(7)
    cands = [(rng.randint(0, 40), rng.choice(["AAA", "BBB", "CCC", "DDD"]), rng.uniform(0.3, 1.0)) for _ in range(400)]
    got = run_union(client, namespace, cands)
    reasons = [r for _, r in got]
    assert reasons.count("below_budget_threshold") > 100 and reasons.count(None) > 10


def run_union(client: redis.Redis, ns: str, cands: list[tuple[int, str, float]]) -> list[tuple[int, str | None]]:
    s = sniper_settings()
    policy = policy_from(s)
    shard = {
        "A": Sniper(s, RedisCounters(client, policy, ns, "shadow"), "run-a"),
        "B": Sniper(s, RedisCounters(client, policy, ns, "shadow"), "run-b"),
    }
    assert all(x.budget.backend == "redis" for x in shard.values())
    union = Sniper(s, MemoryCounters(policy), "run-u")
    ts = T0
    got: list[tuple[int, str | None]] = []
    for i, (dm, sym, score) in enumerate(cands):
        ts += dm * M
        sym_ts = ts + i  # distinct bars per symbol even at the same minute (a key is one bar)
        runner = shard["A" if sym in ("AAA", "BBB") else "B"]
        a = decide(runner, sym, sym_ts, score)
        assert a == decide(union, sym, sym_ts, score)
        got.append((sym_ts, a[0]))
    times = allowed_ts(got)
    assert max_in_sliding_window(times, HOUR_MS) <= 2 and max_in_sliding_window(times, DAY_MS) <= 6
    return got


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cands=stream, lag=st.integers(min_value=1, max_value=30))
def test_a_late_runner_keeps_the_caps_and_ends_on_the_same_history(
    client: redis.Redis, namespace: str, cands: list[tuple[int, str, float]], lag: int
) -> None:
    """Order-dependent part: shard B decides ``lag`` candidates behind A.  Thresholds may then differ from the
    union's (a candidate is measured only on what reached Redis before it), but the caps hold whatever the
    order, and once both are done Redis holds exactly the union's history: what comes next is the same."""
    ns = f"{namespace}-{abs(hash((tuple(cands), lag))) % 10**9}"
    s = sniper_settings()
    policy = policy_from(s)
    a = Sniper(s, RedisCounters(client, policy, ns, "shadow"), "run-a")
    b = Sniper(s, RedisCounters(client, policy, ns, "shadow"), "run-b")
    union = Sniper(s, MemoryCounters(policy), "run-u")
    ts = T0
    items = []
    for i, (dm, sym, score) in enumerate(cands):
        ts += dm * M
        items.append((sym, ts + i, score))
    order = [(j, x) for j, x in enumerate(items) if x[0] in ("AAA", "BBB")]
    late = [(j + lag, x) for j, x in enumerate(items) if x[0] not in ("AAA", "BBB")]
    got = []
    for _, (sym, t, score) in sorted(order + late, key=lambda p: p[0]):
        got.append((t, decide(a if sym in ("AAA", "BBB") else b, sym, t, score)[0]))
    for sym, t, score in items:
        decide(union, sym, t, score)
    times = allowed_ts(got)
    assert max_in_sliding_window(times, HOUR_MS) <= 2 and max_in_sliding_window(times, DAY_MS) <= 6
    nxt = ts + len(items) + 5 * M
    assert decide(a, "AAA", nxt, 0.9)[1] == decide(union, "AAA", nxt, 0.9)[1]


def test_first_come_never_touches_the_threshold_keys(client: redis.Redis, namespace: str) -> None:
    s = sniper_settings(selection="first_come")
    sn = Sniper(s, RedisCounters(client, policy_from(s), namespace, "shadow"), "run-a")
    assert sn.budget.backend == "memory"
    for i in range(20):
        decide(sn, "AAA", T0 + i * 5 * M, 0.9)
    assert not list(client.scan_iter(match=f"ultra_signals:{{{namespace}:shadow}}:sniper:budget:*"))


def test_a_very_late_call_is_measured_on_the_latest_window_in_bounded_time(client: redis.Redis, namespace: str) -> None:
    """Past ``late_limit`` points of lag the script does not correct for the lag (that would scan the window):
    the candidate is measured on the namespace's latest window.  Within it, the late answer is exact."""
    r, mem = shared(client, namespace), memory()
    for i in range(200):
        p = QualityPoint(f"S:5m:{i}", "5m", T0 + i * 5 * M, ((i * 37) % 101) / 101)
        assert r.threshold_and_observe(p) == mem.threshold_and_observe(p)
    late = QualityPoint("L:5m:1", "5m", T0 + 150 * 5 * M + 1, 0.5)  # 50 candidates behind
    assert r.threshold_and_observe(late) == mem.threshold_and_observe(late) is not None  # exact: 50 < 2000
    r.late_limit = 10
    latest = mem.threshold("5m", T0 + 199 * 5 * M)
    later = QualityPoint("L:5m:2", "5m", T0 + 150 * 5 * M + 2, 0.5)
    assert mem.threshold("5m", later.ts_ms) != latest  # the exact answer would differ ...
    assert r.threshold_and_observe(later) == latest  # ... the bounded one is the latest window's
