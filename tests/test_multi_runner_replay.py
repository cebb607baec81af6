"""Four ``ultra-signals replay`` processes, disjoint symbols, one Redis namespace: caps hold for the union.

Each process is a real runner (its own journal, its own Redis client) replaying the ten recorded alt/BTC 5m
series split four ways, all at once and at whatever speed each gets from the OS — so their event times
interleave out of order.  The union of their ``--decisions-out`` files must never hold more allowed signals
than the caps in any sliding hour or day (every window starting at an allowed signal is counted).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import require_data
from tests.helpers import cli_env, worst_window
from tests.replay_procs import ReplayRunners
from ultra_signals.core.caps import DAY_MS, HOUR_MS

GROUPS = [
    ["ADABTC", "DASHBTC", "ETCBTC"],
    ["ETHBTC", "LTCBTC", "NXTBTC"],
    ["TRXBTC", "XLMBTC"],
    ["XMRBTC", "ZECBTC"],
]
FROM, TO, SPEED = "2018-01-19T00:00:00Z", "2018-01-22T00:00:00Z", 20_000
HOURLY_CAP, DAILY_CAP = 2, 6  # settings.yaml's sniper caps (the shadow profile keeps them)

pytestmark = [pytest.mark.timeout(240), pytest.mark.slow]


def test_four_replays_sharing_redis_never_exceed_the_caps_together(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    klines = require_data("klines")
    env = cli_env(
        ULTRA_SIGNALS_REDIS__ENABLED="true",
        ULTRA_SIGNALS_REDIS__URL=redis_url,
        ULTRA_SIGNALS_REDIS__NAMESPACE=namespace,
        ULTRA_SIGNALS_EXECUTION__BROKER="none",  # signals only: no paper-trading breaker may halt a runner
        # The subject is the interleaving of four runners on one Redis, not failover (tests/test_failover_counters.py):
        # the 50 ms production reply budget would turn a CPU-starved CI box's scheduling delay into a failover.
        ULTRA_SIGNALS_REDIS__TIMEOUT_MS="2000",
    )
    # The four paced from one wall-clock instant, as the other multi-runner tests are: each runner's own start would
    # otherwise anchor its pacing, and at 20,000× a second of start-up difference is 5.5 market hours (four
    # processes starting at once on a slow 2-core CI machine differ by seconds: one runner then took every slot).
    anchor = time.time() + 6.0
    with ReplayRunners(tmp_path, env) as runners:
        for i, symbols in enumerate(GROUPS):
            runners.start(
                "--data",
                str(klines),
                "--symbols",
                ",".join(symbols),
                "--timeframes",
                "5m,15m,1h",
                # Three days of the recordings, paced at 20,000 × real time (about 13 s): the four runners move
                # through event time together, each a little ahead or behind — the interleaving under test.
                # Unpaced, whichever runner happens to get ahead by more than a day takes every slot: the others'
                # signals are then too late to check against trimmed history and are refused (safe, but then
                # only one runner would be exercised).
                "--from",
                FROM,
                "--to",
                TO,
                "--speed",
                str(SPEED),
                "--pace-from",
                f"{anchor:.3f}",
                "--decisions-out",
                str(tmp_path / f"decisions{i}.jsonl"),
                "--journal",
                f"sqlite:///{tmp_path}/journal{i}.db",
                # Historical runs get a namespace of their own unless told to share one (see Runner).
                "--namespace",
                namespace,
                "--metrics-port",
                "0",
                "--no-report",
            )
        logs = runners.wait(timeout=180)
    for log in logs:
        assert "counter backend: redis" in log and "redis -> memory" not in log, log[-3000:]

    rows = []
    for i in range(len(GROUPS)):
        rows += [json.loads(line) for line in (tmp_path / f"decisions{i}.jsonl").read_text().splitlines()]
    allowed = [r for r in rows if r["decision"] == "allowed"]
    times = [r["ts"] for r in allowed]
    by_runner = [sum(1 for r in allowed if r["symbol"] in g) for g in GROUPS]

    assert worst_window(times, HOUR_MS) <= HOURLY_CAP
    assert worst_window(times, DAY_MS) <= DAILY_CAP
    # Not vacuous: several runners got signals through, the shared caps refused others, and were reached.
    assert sum(1 for n in by_runner if n > 0) >= 2, by_runner
    reasons = {r["reason"] for r in rows}
    assert "daily_cap" in reasons
    assert worst_window(times, DAY_MS) == DAILY_CAP
