"""Every runner's heartbeat in Redis, so one command shows the whole fleet: ``ultra-signals status --fleet``.

Each runner of a namespace writes one field of one hash (``…:{<namespace>:<profile>}:fleet``, beside the caps'
keys) every few seconds: its shard, symbols, the age of its freshest and stalest data, its counter backend, its
trading state and what it allowed in the current windows. Readers judge staleness from the beat's own wall time,
so a runner that died shows as ``silent`` rather than disappearing; the hash expires a day after the last beat.

The beat is written off the event loop (the runner awaits it in a thread from its refresh task), and a failed
write is counted, never raised: the fleet view is for operators, the caps do not depend on it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # redis-py is imported where a beat is written: a runner without Redis never loads it
    import redis

#: The root of every key this project writes (the caps' keys are under it too: counters/redis_backend.py).
KEY_ROOT = "ultra_signals"

BEAT_INTERVAL_S = 5.0
#: A runner whose last beat is older than this is shown as silent.
SILENT_AFTER_S = 3 * BEAT_INTERVAL_S
KEY_TTL_S = 86_400


@dataclass(frozen=True, slots=True)
class RunnerBeat:
    run_id: str
    shard: str  # "i/n", or "-" for an unsharded runner
    symbols: list[str]
    backend: str  # counter backend: memory | redis | blocked
    trading_state: str  # ACTIVE | REDUCING | HALTED | - (no executor)
    window_hour: int  # the deployment's allowed signals in the trailing hour (all runners of the namespace)
    window_day: int  # … and in the trailing day
    allowed_run: int  # what this runner allowed since it started
    max_data_age_s: float | None  # the stalest symbol's data age (None before the first event)
    status: str = "running"  # running | completed | interrupted | failed
    host: str = ""
    pid: int = 0
    wall_ts: float = field(default_factory=time.time)

    def age_s(self, now: float) -> float:
        return max(0.0, now - self.wall_ts)


def fleet_key(namespace: str, profile: str) -> str:
    return f"{KEY_ROOT}:{{{namespace}:{profile}}}:fleet"


class FleetBeacon:
    """Writes this runner's beat; owned by the runner, built by the composition root when Redis is on."""

    def __init__(self, client: redis.Redis, namespace: str, profile: str) -> None:
        self.client = client
        self.key = fleet_key(namespace, profile)
        self.failures = 0

    def beat(self, b: RunnerBeat) -> bool:
        import redis

        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(self.key, b.run_id, json.dumps(asdict(b), separators=(",", ":")))
            pipe.expire(self.key, KEY_TTL_S)
            pipe.execute()
            return True
        except redis.RedisError:
            self.failures += 1
            return False

    def close(self) -> None:
        self.client.close()


def read_fleet(client: redis.Redis, namespace: str, profile: str) -> list[RunnerBeat]:
    """Every runner's last beat, sorted by shard then run id. A malformed field is skipped, not fatal."""
    raw = client.hgetall(fleet_key(namespace, profile))
    out: list[RunnerBeat] = []
    for value in raw.values():
        try:
            d = json.loads(value)
            out.append(RunnerBeat(**d))
        except (TypeError, ValueError):
            continue
    return sorted(out, key=lambda b: (b.shard, b.run_id))


def state_of(b: RunnerBeat, now: float) -> str:
    """What an operator should read: the run's own status, or ``silent`` when a running runner stopped beating."""
    if b.status != "running":
        return b.status
    return "silent" if b.age_s(now) > SILENT_AFTER_S else "running"
