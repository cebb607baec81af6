"""Four OS processes, each its own Redis client, hammer the same caps with out-of-order event times.

What must hold afterwards, over the union of every process's allowed reservations (checked by brute force):

* never over: no sliding hour or day window (global, and each symbol's own) holds more than its cap — every
  window starting at any reservation time is counted;
* saturated: the allocation is greedy and windows only ever fill, so every refused attempt lies in a window
  that is exactly at its cap in the final set (adding it would break a cap).  With event times in order this
  is the familiar "the trailing window was full"; out of order, the full window may lie after the attempt.
  The one other refusal is a reservation more than one horizon behind the latest allowed one (its windows
  reach into trimmed history); the sliding phase states that exception precisely.
* idempotent: a retried id is answered "duplicate" and counted once;
* Redis holds exactly the allowed reservations (those not yet trimmed).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import random
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from tests.helpers import full_window_containing, worst_window
from ultra_signals.core.caps import DAY_MS, HOUR_MS, CapPolicy, CapRule, Reservation
from ultra_signals.counters.redis_backend import KEY_ROOT, RedisCounters

WORKERS = 4
ATTEMPTS = 1500  # per worker
SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT"]
T0 = 1_700_000_000_000
MIN = 60_000
POLICY = CapPolicy.from_limits(3, 20, symbol_per_hour=2, symbol_per_day=8)

pytestmark = pytest.mark.timeout(120)


# -- the worker (runs in a spawned process) ----------------------------------------------------------------
def worker(url: str, namespace: str, plan: list[tuple[str, str, int]], barrier: Any, out: str) -> None:
    client = redis.Redis.from_url(url, socket_timeout=5)
    rc = RedisCounters(client, POLICY, namespace, "shadow")
    barrier.wait(timeout=30)  # everyone starts hammering at once
    results = []
    for rid, symbol, ts in plan:
        r = rc.check_and_reserve(Reservation(rid, symbol, ts))
        results.append([rid, symbol, ts, r.allowed, r.reason, r.duplicate])
    Path(out).write_text(json.dumps(results))
    client.close()


def hammer(url: str, namespace: str, plans: Sequence[list[tuple[str, str, int]]], tmp: Path) -> list[list[Any]]:
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(len(plans))
    outs = [tmp / f"worker{i}.json" for i in range(len(plans))]
    procs = [
        ctx.Process(target=worker, args=(url, namespace, plan, barrier, str(out)))
        for plan, out in zip(plans, outs, strict=True)
    ]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=90)
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(timeout=5)
    assert all(p.exitcode == 0 for p in procs), [p.exitcode for p in procs]
    rows: list[list[Any]] = []
    for out in outs:
        rows += json.loads(out.read_text())
    return rows


def with_retries(rng: random.Random, plan: list[tuple[str, str, int]]) -> list[tuple[str, str, int]]:
    """Resend about 5% of a worker's recent ids, as a runner does after a timeout."""
    out: list[tuple[str, str, int]] = []
    for item in plan:
        out.append(item)
        if rng.random() < 0.05:
            out.append(rng.choice(out[-5:]))
    return out


# -- brute-force checks ------------------------------------------------------------------------------------
def assert_never_over(allowed: Sequence[Reservation]) -> None:
    scopes: list[tuple[str, list[int], tuple[CapRule, ...]]] = [("all", [r.ts_ms for r in allowed], POLICY.rules)]
    for s in SYMBOLS:
        scopes.append((s, [r.ts_ms for r in allowed if r.symbol == s], POLICY.symbol_rules))
    for name, times, rules in scopes:
        for rule in rules:
            worst = worst_window(times, rule.length_ms)
            assert worst <= rule.cap, f"{name}: a {rule.window} window holds {worst} > cap {rule.cap}"


def saturated(allowed: Sequence[Reservation], res: Reservation) -> bool:
    def full(times: list[int], rules: tuple[CapRule, ...]) -> bool:
        return any(full_window_containing(times, res.ts_ms, rule) for rule in rules)

    return full([r.ts_ms for r in allowed], POLICY.rules) or full(
        [r.ts_ms for r in allowed if r.symbol == res.symbol], POLICY.symbol_rules
    )


def split(rows: list[list[Any]]) -> tuple[list[Reservation], list[Reservation]]:
    """Allowed (first time) and refused attempts; checks retries were answered consistently.

    A retry of an allowed id is "allowed, duplicate" — unless by then the id lies more than one horizon
    behind the latest allowed reservation (trimmed: it is refused as too late, and still counted once).
    """
    first: dict[str, bool] = {}
    allowed: list[Reservation] = []
    refused: list[Reservation] = []
    late_retries: list[Reservation] = []
    for rid, symbol, ts, ok, _reason, dup in rows:
        res = Reservation(rid, symbol, ts)
        if rid in first:  # a retry of this worker's own id
            if first[rid] and not ok:
                late_retries.append(res)
                continue
            assert ok == first[rid], f"retry of refused {rid} was allowed"
            assert dup == ok, f"retry of allowed {rid} must be flagged duplicate"
            continue
        assert not dup, f"{rid} reported duplicate on its first attempt"
        first[rid] = ok
        (allowed if ok else refused).append(res)
    latest = max((r.ts_ms for r in allowed), default=0)
    for r in late_retries:
        assert r.ts_ms < latest - POLICY.horizon_ms, f"retry of allowed {r.id} refused while still checkable"
    return allowed, refused


def redis_members(url: str, namespace: str) -> dict[str, int]:
    c = redis.Redis.from_url(url)
    try:
        key = f"{KEY_ROOT}:{{{namespace}:shadow}}:sniper:all"
        held = cast(list[tuple[bytes, float]], c.zrange(key, 0, -1, withscores=True))
        return {m.decode().split("|", 1)[1]: int(s) for m, s in held}
    finally:
        c.close()


@pytest.fixture
def ns(redis_url: str) -> Iterator[str]:
    name = f"test-{uuid.uuid4().hex[:12]}"
    yield name
    c = redis.Redis.from_url(redis_url)
    for key in c.scan_iter(match=f"{KEY_ROOT}:{{{name}:*"):
        c.delete(key)
    c.close()


# -- the two workloads ------------------------------------------------------------------------------------
def test_fully_shuffled_times_never_exceed_and_saturate_the_caps(redis_url: str, ns: str, tmp_path: Path) -> None:
    """Event times anywhere in 47 hours, each worker in random order: nothing is ever trimmed, so every
    refusal must meet a full window."""
    rng = random.Random(20260105)
    plans = []
    for w in range(WORKERS):
        plan = [(f"w{w}:{i}", rng.choice(SYMBOLS), T0 + rng.randrange(0, 47 * 60) * MIN) for i in range(ATTEMPTS)]
        plans.append(with_retries(rng, plan))
    rows = hammer(redis_url, ns, plans, tmp_path)
    assert len(rows) == sum(len(p) for p in plans)
    allowed, refused = split(rows)
    assert len(refused) > 10 * len(allowed) > 0  # demand far above the caps
    assert_never_over(allowed)
    unsaturated = [r for r in refused if not saturated(allowed, r)]
    assert not unsaturated, f"{len(unsaturated)} refusals with room left, e.g. {unsaturated[:3]}"
    # Two days hold at most about 2 day-caps; greedy filling gets close to that.
    assert POLICY.rules[1].cap < len(allowed) <= 2 * POLICY.rules[1].cap + 1
    assert redis_members(redis_url, ns) == {r.id: r.ts_ms for r in allowed}


def test_sliding_over_six_days_with_trimming(redis_url: str, ns: str, tmp_path: Path) -> None:
    """Each worker walks forward through six days with ±3 h jitter (a lagging or skewed host), the four
    interleaved: windows slide and trim.  A refusal is a full window, or — the only exception — a reservation
    more than one horizon behind the latest allowed one."""
    rng = random.Random(7)
    span = 6 * DAY_MS
    plans = []
    for w in range(WORKERS):
        base = sorted(rng.randrange(0, span) for _ in range(ATTEMPTS))
        times = [T0 + max(0, b + rng.randrange(-3 * HOUR_MS, 3 * HOUR_MS)) // MIN * MIN for b in base]
        plans.append(with_retries(rng, [(f"w{w}:{i}", rng.choice(SYMBOLS), t) for i, t in enumerate(times)]))
    rows = hammer(redis_url, ns, plans, tmp_path)
    allowed, refused = split(rows)
    assert_never_over(allowed)
    latest = max(r.ts_ms for r in allowed)
    for r in refused:
        assert saturated(allowed, r) or r.ts_ms < latest - POLICY.horizon_ms, r
    assert len(allowed) >= 5 * POLICY.rules[1].cap  # six days, the day cap filled most days
    held = redis_members(redis_url, ns)
    by_id = {r.id: r.ts_ms for r in allowed}
    assert set(held) <= set(by_id)
    keep = 2 * POLICY.horizon_ms
    assert {i for i, t in by_id.items() if t >= latest - keep} <= set(held)
