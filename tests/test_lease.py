"""The executor lease against a real Redis in its own process: one holder, fencing, handover within the lease time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.conftest import REPO
from tests.redis_proc import RedisProc, private_redis, wait_until
from ultra_signals.execution.lease import ExecutorLease, wait_for_lease

pytestmark = pytest.mark.timeout(60)
TTL_MS = 600


@pytest.fixture
def server() -> Iterator[RedisProc]:
    yield from private_redis()


def lease(
    server: RedisProc, holder: str, log: list[tuple[str, int]] | None = None, *, sync_reconcile: bool = True
) -> ExecutorLease:
    """A lease whose reconcile is a synchronous callback (logged), or left to the caller (the runner's way)."""
    events = log if log is not None else []
    return ExecutorLease(
        server.client(),
        namespace="ns",
        account="acct1",
        holder=holder,
        ttl_ms=TTL_MS,
        on_acquired=(lambda tok: events.append((holder, tok))) if sync_reconcile else None,
    )


def test_only_one_holder_and_the_standby_takes_over_when_the_lease_lapses(server: RedisProc) -> None:
    events: list[tuple[str, int]] = []
    a, b = lease(server, "run-a", events), lease(server, "run-b", events)
    assert a.tick() and a.may_trade()
    assert not b.tick() and not b.may_trade() and b.blocking_reason() == "no_executor_lease"
    assert a.blocking_reason() is None
    # A renews: B keeps standing by for longer than one lease time.
    for _ in range(5):
        time.sleep(TTL_MS / 3000)
        assert a.tick() and not b.tick()
    first = a.token
    # A stops renewing (hung process): B takes over once the lease lapses, with a larger fencing token.
    assert 0 < int(server.client().pttl(a.key)) <= TTL_MS  # lapses within one lease time of A's last renewal
    assert wait_for_lease(b, timeout_s=TTL_MS / 1000 * 5)
    assert b.token > first and b.may_trade()
    # B reconciled (the callback ran) before it could trade; A, waking up, is fenced out.
    assert events == [("run-a", first), ("run-b", b.token)]
    assert not a.valid() and not a.may_trade()
    assert not a.tick()


def test_a_clean_release_hands_over_at_once(server: RedisProc) -> None:
    a, b = lease(server, "run-a"), lease(server, "run-b")
    assert a.tick()
    a.release()
    assert b.tick() and b.token == 2


def test_redis_away_means_no_trading(server: RedisProc) -> None:
    a = lease(server, "run-a")
    assert a.tick() and a.may_trade()
    server.pause()
    try:
        a.client.connection_pool.connection_kwargs["socket_timeout"] = 0.2
        a.client.connection_pool.reset()
        assert not a.may_trade()
    finally:
        server.resume()


HOLDER = """
import sys, time, redis
from ultra_signals.execution.lease import ExecutorLease
lease = ExecutorLease(redis.Redis(port=int(sys.argv[1])), namespace="ns", account="acct1", holder="run-killed",
                      ttl_ms=int(sys.argv[2]))
assert lease.tick()
print("held", lease.token, flush=True)
for _ in range(10_000):
    time.sleep(lease.renew_every_s)
    lease.tick()
"""


def test_sigkill_of_the_holder_hands_over_within_the_lease_time(server: RedisProc) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(server.port), str(TTL_MS)], env=env, stdout=subprocess.PIPE, text=True
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("held ")
        events: list[tuple[str, int]] = []
        standby = lease(server, "run-standby", events)
        assert not standby.tick()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
        # Whatever the dead holder last renewed expires within one lease time: Redis, not a timer here, says so.
        assert int(server.client().pttl(standby.key)) <= TTL_MS
        wait_until(standby.tick, timeout_s=5 * TTL_MS / 1000, what="the standby to take the lease")
        assert standby.token > int(line.split()[1]) and events == [("run-standby", standby.token)]
        assert standby.state().holder == "run-standby"
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)


def test_two_executors_on_one_account_only_the_lease_holder_places_orders(server: RedisProc, tmp_path: object) -> None:
    import asyncio
    from pathlib import Path

    from tests.factories import bar_decision as decision
    from tests.helpers import RecordingNotifier
    from tests.test_risk import canary_settings
    from ultra_signals.execution.executor import TradingExecutor, make_executor
    from ultra_signals.journal.writer import Journal

    assert isinstance(tmp_path, Path)
    orders = {}
    for run in ("run-a", "run-b"):
        settings = canary_settings(tmp_path / run)
        journal = Journal(settings.journal.url)
        ex = make_executor(settings, None, journal, RecordingNotifier(), run)
        assert isinstance(ex, TradingExecutor)
        asyncio.run(ex.start())
        lz = lease(server, run)
        lz.tick()
        ex.lease_gate = lz.blocking_reason
        ex.on_signal(decision(run, 0))
        snap = asyncio.run(ex.broker.snapshot())
        orders[run] = (len(snap.open_orders) + len(snap.positions), dict(ex.router.refused))
        journal.close()
    assert orders["run-a"][0] > 0 and not orders["run-a"][1]
    assert orders["run-b"] == (0, {"no_executor_lease": 1})


def test_the_runner_reconciles_after_taking_the_lease_and_only_then_trades(server: RedisProc, tmp_path: object) -> None:
    """The runner's hook: a standby's refresh loop takes a lapsed lease, awaits the executor's reconcile, and
    only then does the executor's gate open."""
    import asyncio
    from pathlib import Path

    from ultra_signals.bootstrap import build_runner
    from ultra_signals.core.config import load_settings
    from ultra_signals.execution.executor import NullExecutor
    from ultra_signals.journal.writer import Journal
    from ultra_signals.observability.metrics import Metrics
    from ultra_signals.sources.sim import SimSource
    from ultra_signals.transport.notifier import NullNotifier

    assert isinstance(tmp_path, Path)

    class Exe(NullExecutor):
        reconciles = 0

        async def reconcile(self) -> list[object]:
            Exe.reconciles += 1
            assert not standby.may_trade()  # the gate is still shut while reconciling
            return []

    holder = lease(server, "run-old")
    assert holder.tick()
    s = load_settings(overrides={"execution.broker": "none"}, environ={})
    j = Journal(f"sqlite:///{tmp_path}/j.db")
    runner = build_runner(
        s,
        source=SimSource(s.sim, ["BTCUSDT"], s.runtime.timeframes, 5, s.runtime.warmup_bars),
        journal=j, notifier=NullNotifier(), metrics=Metrics(), executor=Exe(j), serve_metrics=False,
    )  # fmt: skip
    standby = lease(server, runner.run_id, sync_reconcile=False)
    runner.lease = standby

    async def go() -> None:
        await runner._tick_lease(standby)
        assert not standby.token and Exe.reconciles == 0  # the old holder still renews: stand by
        holder.release()  # (or let it lapse: test_only_one_holder...)
        await runner._tick_lease(standby)
        assert standby.may_trade() and Exe.reconciles == 1
        await runner._tick_lease(standby)
        assert Exe.reconciles == 1  # once per acquisition

    asyncio.run(go())
    runner.counters.close()
    j.close()
