"""The fleet view on a real Redis: every runner of a namespace beats into one hash, ``status --fleet`` shows them,
a runner that stopped beating shows as silent, and a replay run with Redis on leaves its final beat."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import redis
from typer.testing import CliRunner

from tests.conftest import require_data
from ultra_signals.apps.cli import app
from ultra_signals.bootstrap import build_runner
from ultra_signals.core.config import load_settings
from ultra_signals.counters.fleet import SILENT_AFTER_S, FleetBeacon, RunnerBeat, fleet_key, read_fleet, state_of
from ultra_signals.observability.metrics import Metrics
from ultra_signals.sources.replay import ReplaySource
from ultra_signals.transport.notifier import NullNotifier


def beat(run_id: str, shard: str, **kw: object) -> RunnerBeat:
    base: dict[str, object] = {
        "run_id": run_id, "shard": shard, "symbols": ["BTCUSDT"], "backend": "redis", "trading_state": "ACTIVE",
        "window_hour": 1, "window_day": 3, "allowed_run": 2, "max_data_age_s": 1.5,
    }  # fmt: skip
    base.update(kw)
    return RunnerBeat(**base)  # type: ignore[arg-type]


def test_beats_of_every_runner_are_read_back_and_silence_is_seen(redis_url: str, namespace: str) -> None:
    client = redis.Redis.from_url(redis_url)
    beacon = FleetBeacon(redis.Redis.from_url(redis_url), namespace, "shadow")
    assert beacon.beat(beat("run-b", "1/2")) and beacon.beat(beat("run-a", "0/2"))
    old = beat("run-c", "1/2", wall_ts=time.time() - SILENT_AFTER_S - 1)
    assert beacon.beat(old)
    client.hset(fleet_key(namespace, "shadow"), "junk", "{not json")  # a foreign field is skipped, not fatal
    beats = read_fleet(client, namespace, "shadow")
    assert [(b.shard, b.run_id) for b in beats] == [("0/2", "run-a"), ("1/2", "run-b"), ("1/2", "run-c")]
    now = time.time()
    assert [state_of(b, now) for b in beats] == ["running", "running", "silent"]
    assert state_of(beat("run-d", "-", status="completed", wall_ts=0.0), now) == "completed"
    assert 0 < client.ttl(fleet_key(namespace, "shadow")) <= 86_400
    beacon.close()
    client.close()


def test_a_beat_that_cannot_be_written_is_counted_not_raised() -> None:
    dead = redis.Redis(host="127.0.0.1", port=9, socket_timeout=0.2, socket_connect_timeout=0.2)
    beacon = FleetBeacon(dead, "ns", "shadow")
    assert beacon.beat(beat("run-a", "0/1")) is False and beacon.failures == 1


def _env(redis_url: str, namespace: str) -> dict[str, str]:
    return {"ULTRA_SIGNALS_REDIS__ENABLED": "true", "ULTRA_SIGNALS_REDIS__URL": redis_url,
            "ULTRA_SIGNALS_REDIS__NAMESPACE": namespace}  # fmt: skip


def test_status_fleet_lists_the_runners(redis_url: str, namespace: str) -> None:
    beacon = FleetBeacon(redis.Redis.from_url(redis_url), namespace, "shadow")
    beacon.beat(beat("run-a", "0/2"))
    beacon.beat(beat("run-b", "1/2", trading_state="HALTED", wall_ts=time.time() - 60))
    beacon.close()
    res = CliRunner().invoke(app, ["status", "--fleet"], env=_env(redis_url, namespace))
    assert res.exit_code == 0, res.output
    assert f"fleet of namespace '{namespace}'" in res.output and "2 runner(s)" in res.output
    lines = [ln for ln in res.output.splitlines() if ln.startswith("shard")]
    assert "0/2" in lines[0] and "running" in lines[0] and "window hour 1 day 3" in lines[0]
    assert "1/2" in lines[1] and "silent" in lines[1] and "trading HALTED" in lines[1]
    as_json = CliRunner().invoke(app, ["status", "--fleet", "--json"], env=_env(redis_url, namespace))
    assert [r["state"] for r in json.loads(as_json.output)] == ["running", "silent"]


def test_status_fleet_without_redis_is_a_clear_error() -> None:
    res = CliRunner().invoke(app, ["status", "--fleet"], env={"ULTRA_SIGNALS_REDIS__ENABLED": "false"})
    assert res.exit_code == 2 and "redis.enabled is false" in res.output


def test_a_replay_with_redis_on_leaves_its_final_beat(redis_url: str, namespace: str, tmp_path: Path) -> None:
    from ultra_signals.journal.writer import Journal

    s = load_settings(
        overrides={"runtime.timeframes": "5m,15m,1h", "execution.broker": "none", "runtime.shard": "0/1",
                   "redis.enabled": True, "redis.url": redis_url, "redis.namespace": namespace},
        env={},
    )  # fmt: skip
    src = ReplaySource(require_data("klines"), ["ETHBTC"], s.runtime.timeframes, None, None, s.runtime.warmup_bars)
    journal = Journal(f"sqlite:///{tmp_path}/j.db")
    runner = build_runner(
        s, source=src, journal=journal, notifier=NullNotifier(), metrics=Metrics(), serve_metrics=False,
        namespace=namespace,
    )  # fmt: skip
    stats = asyncio.run(runner.run())
    journal.close()
    client = redis.Redis.from_url(redis_url)
    beats = read_fleet(client, namespace, "shadow")
    client.close()
    assert len(beats) == 1
    b = beats[0]
    assert (b.run_id, b.shard, b.status, b.symbols) == (stats.run_id, "0/1", "completed", ["ETHBTC"])
    assert b.allowed_run == sum(stats.allowed.values()) > 0 and b.backend == "redis"
