"""A network partition between ONE runner and Redis while the others keep reaching it (issue 14, scaling.md).

Why a file of its own: a partition is not a fault of one module but of the path between one runner and Redis,
and what the deployment promises then comes from three modules together: the failover counters
(``counters/failover.py``: that runner fails over alone, the others stay on Redis), the executor lease
(``execution/lease.py``: the cut holder can no longer prove its lease, another runner takes it) and the decision
inbox (``execution/inbox.py``: the cut shard's deliveries wait in its backlog).  The tests
for a Redis that every runner loses at once stay in ``test_failover_counters.py`` and ``test_lease.py``.

Real parts: a private ``redis-server`` (``tests/redis_proc.py``) and a TCP forwarder on 127.0.0.1
(``tests/tcp_proxy.py``) between runner A and that server; runner B connects directly.  Cutting the proxy is the
partition: "refuse" (connections reset, calls fail at once) or "drop" (bytes lost, calls time out).  The two
runners are in-process :class:`FailoverCounters` fed one interleaved sequence of candidates, so the windows the
test checks are exact, not a matter of scheduling.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import pytest
import redis

from tests.redis_proc import RedisProc, private_redis, wait_until
from tests.tcp_proxy import CutMode, TcpProxy
from ultra_signals.apps.report import max_in_sliding_window
from ultra_signals.core.caps import HOUR_MS, CapPolicy, CapResult, Reservation
from ultra_signals.core.config import RedisSettings
from ultra_signals.counters.failover import FailoverCounters
from ultra_signals.counters.redis_backend import RedisCounters, connect
from ultra_signals.execution.lease import ExecutorLease, wait_for_lease
from ultra_signals.observability.metrics import Metrics

pytestmark = pytest.mark.timeout(60)

MIN = 60_000
DAY = 24 * HOUR_MS
T0 = 1_700_006_400_000  # a midnight UTC: hour and day windows start clean
POLICY = CapPolicy.from_limits(2, 6)
TIMEOUT_MS = 250.0
INTERVAL_S = 0.05


@pytest.fixture
def server() -> Iterator[RedisProc]:
    yield from private_redis()


@pytest.fixture
def proxy(server: RedisProc) -> Iterator[TcpProxy]:
    with TcpProxy(server.port) as p:
        yield p


class Runner:
    """One runner's counters (shared namespace and profile: one deployment's caps), with what it was allowed."""

    def __init__(self, name: str, port: int, on_failure: str) -> None:
        self.name = name
        self.events: list[tuple[str, str]] = []
        url = f"redis://127.0.0.1:{port}/0"
        primary = RedisCounters(connect(RedisSettings(url=url, timeout_ms=TIMEOUT_MS)), POLICY, "part", where=url)
        self.counters = FailoverCounters(
            primary,
            POLICY,
            on_failure,  # type: ignore[arg-type]
            Metrics(),
            health_check_interval_s=INTERVAL_S,
            on_event=lambda kind, msg: self.events.append((kind, msg)),
        )
        self.allowed: list[Reservation] = []
        self.refused: list[tuple[Reservation, str | None]] = []

    def attempt(self, ts_ms: int) -> CapResult:
        # Each runner watches its own symbols (a shard): the decision keys never collide.
        res = Reservation(f"{self.name}USDT:5m:{ts_ms}", f"{self.name}USDT", ts_ms)
        got = self.counters.check_and_reserve(res)
        if got.allowed and not got.duplicate:
            self.allowed.append(res)
        elif not got.allowed:
            self.refused.append((res, got.reason))
        return got

    def times(self, lo: int = 0, hi: int = 2**62) -> list[int]:
        return [r.ts_ms for r in self.allowed if lo <= r.ts_ms < hi]

    def close(self) -> None:
        self.counters.close()


def redis_ids(server: RedisProc, key: str) -> set[str]:
    c = server.client()
    try:
        return {bytes(m).decode().split("|", 1)[1] for m in cast(list[bytes], c.zrange(key, 0, -1))}
    finally:
        c.close()


def interleave(a: Runner, b: Runner, start_ms: int, n: int, every_ms: int = 10 * MIN) -> None:
    """A then B, each every ``every_ms`` of event time (B 1 minute behind A): both compete for every window."""
    for i in range(n):
        t = start_ms + i * every_ms
        a.attempt(t)
        b.attempt(t + MIN)


def union_max(a: Runner, b: Runner, lo: int = 0, hi: int = 2**62) -> tuple[int, int]:
    times = a.times(lo, hi) + b.times(lo, hi)
    return max_in_sliding_window(times, HOUR_MS), max_in_sliding_window(times, DAY)


@pytest.mark.parametrize("mode", ["refuse", "drop"])
def test_block_the_cut_runner_refuses_and_the_union_never_exceeds_the_caps(
    server: RedisProc, proxy: TcpProxy, mode: CutMode
) -> None:
    a, b = Runner("A", proxy.port, "block"), Runner("B", server.port, "block")
    try:
        interleave(a, b, T0, 6)  # the first hour and a half: both on Redis, the hourly cap shared
        assert a.counters.backend == b.counters.backend == "redis"
        before = len(a.allowed)
        assert before >= 1 and union_max(a, b) == (2, 2)

        proxy.cut(mode)
        cut_from = T0 + 6 * 10 * MIN
        wait_until(lambda: a.counters.backend == "blocked", timeout_s=10, what="runner A to fail over alone")
        interleave(a, b, cut_from, 24)  # four hours of event time while A is cut off
        assert len(a.allowed) == before, "a runner cut off under block allowed a signal"
        during_a = [reason for res, reason in a.refused if res.ts_ms >= cut_from]
        assert len(during_a) == 24 and set(during_a) == {"hourly_cap"}  # refused as at a cap
        assert b.counters.backend == "redis", "the runner that still reaches Redis must not fail over"
        assert b.times(cut_from), "B kept deciding on the shared caps while A was cut"
        assert any(reason == "daily_cap" for res, reason in b.refused if res.ts_ms >= cut_from)
        assert union_max(a, b) == (2, 6)  # the caps hold for the union in every window

        proxy.heal()
        # The health thread switches the backend back, then announces "recovered" outside its lock: wait for both.
        wait_until(
            lambda: a.counters.backend == "redis" and any(k == "recovered" for k, _ in a.events),
            timeout_s=10,
            what="runner A to reconcile after heal and announce it",
        )
        assert [k for k, _ in a.events].count("recovered") == 1
        recovered = next(m for k, m in a.events if k == "recovered")
        assert "0 reservations made during the outage" in recovered  # nothing to write back under block
        next_day = T0 + DAY + 6 * HOUR_MS  # every earlier reservation has left the day window
        interleave(a, b, next_day, 6)
        assert a.times(next_day), "A decides on the shared caps again after the heal"
        assert union_max(a, b) == (2, 6)
        assert redis_ids(server, a.counters.primary.key_global) == {r.id for r in a.allowed + b.allowed}
    finally:
        a.close()
        b.close()


def test_memory_the_cut_runner_overshoots_by_at_most_its_own_caps_and_writes_back_after_heal(
    server: RedisProc, proxy: TcpProxy
) -> None:
    a, b = Runner("A", proxy.port, "memory"), Runner("B", server.port, "memory")
    try:
        interleave(a, b, T0, 3)  # the first half hour: both on Redis (two allowed, the hour full)
        wait_until(lambda: len(a.counters.reservations()) == 2, what="A's mirror to learn B's reservation")
        proxy.cut("refuse")
        wait_until(lambda: a.counters.backend == "memory", timeout_s=10, what="runner A to fail over alone")
        cut_from = T0 + HOUR_MS + 5 * MIN  # a fresh hour: each side sees room that the other is taking
        interleave(a, b, cut_from, 18)  # three hours of event time, both competing for every hour
        assert b.counters.backend == "redis"
        made = len(a.times(cut_from))
        hour, day = union_max(a, b)
        own_hour = max_in_sliding_window(a.times(cut_from), HOUR_MS)
        own_day = max_in_sliding_window(a.times(), DAY)
        print(
            f"\npartition/memory: busiest hour {hour} (cap 2), busiest day {day} (cap 6); "
            f"the cut runner allowed {made} during the cut (its own busiest hour {own_hour})"
        )
        # Bounded by the cut runner's own caps: it alone keeps them, so the union is at most cap + cap.
        assert own_hour <= 2 and own_day <= 6
        for r in (a, b):
            assert max_in_sliding_window(r.times(), HOUR_MS) <= 2 and max_in_sliding_window(r.times(), DAY) <= 6
        assert hour - 2 <= own_hour and day - 6 <= own_day
        assert hour > 2, "the sequence was built so that both sides fill the same hour: the overshoot is real"

        proxy.heal()
        # The health thread switches the backend back, then announces "recovered" outside its lock: wait for both.
        wait_until(
            lambda: a.counters.backend == "redis" and any(k == "recovered" for k, _ in a.events),
            timeout_s=10,
            what="runner A to reconcile after heal and announce it",
        )
        recovered = next(m for k, m in a.events if k == "recovered")
        assert f"{made} reservations made during the outage" in recovered
        # Its reservations are written back: Redis holds both runners' slots, and B now sees A's outage ones.
        assert redis_ids(server, a.counters.primary.key_global) == {r.id for r in a.allowed + b.allowed}
        end = cut_from + 3 * HOUR_MS
        assert b.counters.window_counts(end)["day"] == len(a.allowed) + len(b.allowed) == day
    finally:
        a.close()
        b.close()


def test_the_cut_lease_holder_places_no_order_and_another_runner_takes_the_lease(
    server: RedisProc, proxy: TcpProxy
) -> None:
    """The holder reaches Redis through the proxy; the standby directly.  Cut (bytes dropped: the holder's calls
    time out): the holder cannot prove its lease, so its executor's gate refuses every order; the standby takes
    the lease once it lapses (``ttl_ms``), with a larger fencing token; after the heal the old holder stays out."""
    ttl_ms = 600
    reconciled: list[tuple[str, int]] = []

    def lease(name: str, port: int) -> ExecutorLease:
        c = RedisProc(port).client()  # a client only (2 s timeouts); shortened below like the runner's
        c.connection_pool.connection_kwargs["socket_timeout"] = 0.2
        c.connection_pool.connection_kwargs["socket_connect_timeout"] = 0.2
        return ExecutorLease(
            c,
            namespace="part",
            account="acct1",
            holder=name,
            ttl_ms=ttl_ms,
            on_acquired=lambda tok: reconciled.append((name, tok)),
        )

    a, b = lease("run-a", proxy.port), lease("run-b", server.port)
    assert a.tick() and a.may_trade() and not b.tick()
    first = a.token
    proxy.cut("drop")
    assert not a.valid() and not a.may_trade() and a.blocking_reason() == "no_executor_lease"
    assert not a.tick() and a.token == 0  # dropped locally: never trade on a lease it cannot prove
    # The standby waits out the lease time (A no longer renews it), then takes it.
    assert wait_for_lease(b, timeout_s=ttl_ms / 1000 * 10)
    assert b.token > first and b.may_trade()
    for _ in range(5):  # while cut, A keeps trying: still no order; B renews as a holder does
        assert b.tick()
        assert not a.tick() and a.blocking_reason() == "no_executor_lease"
    proxy.heal()

    def reaches() -> bool:
        assert b.tick()  # B keeps renewing (each tick well within the lease time)
        try:
            return a.state().holder == "run-b"
        except redis.RedisError:  # the connection the heal closed
            return False

    wait_until(reaches, timeout_s=10, what="A to reach Redis again", every_s=0.1)
    assert not a.tick() and not a.may_trade(), "the healed runner must stay fenced out"
    assert b.valid() and b.tick()
    assert reconciled == [("run-a", first), ("run-b", b.token)]
    a.client.close()
    b.client.close()


def test_the_cut_shard_keeps_its_deliveries_and_they_run_once_after_heal(
    server: RedisProc, proxy: TcpProxy, tmp_path: Path
) -> None:
    """``execution.delivery: stream``: the cut shard's decisions wait in its backlog while the lease holder, on
    the other side of the partition, keeps running everyone else's; after the heal they are delivered and run
    exactly once."""
    from tests.test_inbox import decision, drain, shard, take_lease

    over: dict[str, Any] = {"execution.throttles.max_open_positions": 50}
    cut_url = f"redis://127.0.0.1:{proxy.port}/0"  # the runner's own connection (no retries), through the proxy
    cut = shard(0, tmp_path / "cut", "run-cut", lambda: connect(RedisSettings(url=cut_url, timeout_ms=1000)), **over)
    other = shard(server.port, tmp_path / "other", "run-other", **over)
    leader = shard(server.port, tmp_path / "leader", "run-leader", ttl_ms=30_000, **over)  # no renewals here
    assert take_lease(leader)
    for n in range(2):
        cut.exe.on_signal(decision("run-cut", f"C{n}USDT", n))
    drain([leader])
    proxy.cut("refuse")
    for n in range(2, 5):
        cut.exe.on_signal(decision("run-cut", f"C{n}USDT", n))
        other.exe.on_signal(decision("run-other", f"O{n}USDT", n))
    assert len(cut.exe.backlog) == 3 and cut.exe.delivered == 2  # kept, in order, nothing dropped
    assert other.exe.delivered == 3 and not other.exe.backlog
    drain([leader])  # the holder is not cut: the other shard's decisions run meanwhile
    assert sorted(t.symbol for t in leader.inner.portfolio.trades.values()) == ["C0USDT", "C1USDT", *OTHERS]

    proxy.heal()

    def flushed() -> bool:
        cut.exe.flush_backlog()  # the first call may meet the connection the cut closed
        return not cut.exe.backlog

    wait_until(flushed, timeout_s=10, what="the cut shard's backlog to be delivered", every_s=0.05)
    drain([leader])
    inbox = leader.exe.inbox
    mine = [decision("run-cut", f"C{n}USDT", n) for n in range(5)]
    assert [inbox.state(inbox.key_of(d)) for d in mine] == ["done|submitted"] * 5
    traded = sorted(t.symbol for t in leader.inner.portfolio.trades.values())
    assert traded == sorted([f"C{n}USDT" for n in range(5)] + OTHERS)  # each once
    assert cut.exe.delivered == 5 and cut.exe.dropped == 0 and not leader.exe.in_doubt


OTHERS = ["O2USDT", "O3USDT", "O4USDT"]


# -- the same partition with real runners (``ultra-signals replay`` processes) --------------------------------
GROUPS = [["ADABTC", "DASHBTC", "ETCBTC", "ETHBTC", "LTCBTC"], ["NXTBTC", "TRXBTC", "XLMBTC", "XMRBTC", "ZECBTC"]]
FROM, TO, SPEED = "2018-01-19T00:00:00Z", "2018-01-22T00:00:00Z", 10_000  # three market days in about 26 s


@pytest.mark.slow
@pytest.mark.timeout(180)
@pytest.mark.parametrize("policy", ["block", "memory"])
def test_two_replay_runners_one_cut_off_mid_run(
    server: RedisProc, proxy: TcpProxy, tmp_path: Path, policy: str
) -> None:
    """Runner 0 reaches Redis through the proxy, runner 1 directly; the proxy is cut about 5 s into the run (the
    first market day) and healed 8 s later.  The whole runner is under test: settings, bootstrap, the failover
    wrapper's health check (``health_check_interval_s``), the decisions files."""
    import json
    import time

    from tests.conftest import require_data
    from tests.helpers import cli_env
    from tests.replay_procs import ReplayRunners

    klines = require_data("klines")
    runners: list[ReplayRunners] = []
    # Both runners paced from one wall-clock instant: at 10,000× a second of start-up difference is 2.8 market
    # hours, enough for the earlier runner to take every cap slot and leave the test with one runner's signals.
    anchor = time.time() + 3.0
    try:
        for i, port in enumerate((proxy.port, server.port)):
            out = tmp_path / f"runner{i}"
            out.mkdir()
            env = cli_env(
                ULTRA_SIGNALS_REDIS__ENABLED="true",
                ULTRA_SIGNALS_REDIS__URL=f"redis://127.0.0.1:{port}/0",
                ULTRA_SIGNALS_REDIS__ON_FAILURE=policy,
                ULTRA_SIGNALS_REDIS__TIMEOUT_MS="2000",  # a loaded machine must not fail over by accident
                ULTRA_SIGNALS_REDIS__HEALTH_CHECK_INTERVAL_S="0.2",
                ULTRA_SIGNALS_EXECUTION__BROKER="none",
            )
            r = ReplayRunners(out, env)
            r.start("--data", str(klines), "--symbols", ",".join(GROUPS[i]), "--timeframes", "5m,15m,1h",
                    "--from", FROM, "--to", TO, "--speed", str(SPEED), "--pace-from", f"{anchor:.3f}",
                    "--decisions-out", str(out / "d.jsonl"), "--journal", f"sqlite:///{out}/j.db",
                    "--namespace", f"partition-{policy}", "--metrics-port", "0", "--no-report")  # fmt: skip
            runners.append(r)
        time.sleep(max(0.0, anchor + 5.0 - time.time()))  # both deciding by now
        proxy.cut("refuse")
        time.sleep(8)
        proxy.heal()
        logs = [r.wait(timeout=120)[0] for r in runners]
    finally:
        for r in runners:
            r.__exit__(None, None, None)
    cut_log, other_log = logs
    away = "blocked" if policy == "block" else "memory"
    assert f"redis -> {away}" in cut_log and f"{away} -> redis (reconciled:" in cut_log, cut_log[-3000:]
    assert "redis -> " not in other_log, other_log[-3000:]  # the other runner never left Redis
    rows = [[json.loads(x) for x in (tmp_path / f"runner{i}" / "d.jsonl").read_text().splitlines()] for i in (0, 1)]
    own = [[int(r["ts"]) for r in rs if r["decision"] == "allowed"] for rs in rows]
    union = own[0] + own[1]
    hour, day = max_in_sliding_window(union, HOUR_MS), max_in_sliding_window(union, DAY)
    print(f"\npartition/{policy} (replays): busiest hour {hour} (cap 2), busiest day {day} (cap 6), per runner "
          f"{[len(t) for t in own]} allowed")  # fmt: skip
    for times in own:  # each runner alone keeps the caps whatever happens
        assert max_in_sliding_window(times, HOUR_MS) <= 2 and max_in_sliding_window(times, DAY) <= 6
    if policy == "block":
        assert hour <= 2 and day <= 6
    else:  # the overshoot is bounded by the cut runner's own caps
        assert hour <= 2 + 2 and day <= 6 + 6
    assert all(own), "both runners got signals through"
    assert any(r["reason"] in ("hourly_cap", "daily_cap") for rs in rows for r in rs), "the caps were reached"
