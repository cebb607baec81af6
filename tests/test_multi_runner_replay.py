"""Four ``ultra-signals replay`` processes, disjoint symbols, one Redis namespace: caps hold for the union.

Each process is a real runner (its own journal, its own Redis client) replaying the ten recorded alt/BTC 5m
series split four ways, all at once and at whatever speed each gets from the OS — so their event times
interleave out of order.  The union of their ``--decisions-out`` files must never hold more allowed signals
than the caps in any sliding hour or day (every window starting at an allowed signal is counted).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.conftest import REPO, require_data
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


def window_max(times: Sequence[int], length: int) -> int:
    return max((sum(1 for x in times if a <= x < a + length) for a in times), default=0)


def test_four_replays_sharing_redis_never_exceed_the_caps_together(
    redis_url: str, namespace: str, tmp_path: Path
) -> None:
    klines = require_data("klines")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ULTRA_SIGNALS_")}
    env.update(
        ULTRA_SIGNALS_REDIS__ENABLED="true",
        ULTRA_SIGNALS_REDIS__URL=redis_url,
        ULTRA_SIGNALS_REDIS__NAMESPACE=namespace,
        ULTRA_SIGNALS_EXECUTION__BROKER="none",  # signals only: no paper-trading breaker may halt a runner
        PYTHONPATH=str(REPO),
    )
    procs = []
    for i, symbols in enumerate(GROUPS):
        cmd = [
            sys.executable,
            "-m",
            "ultra_signals",
            "replay",
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
        ]
        out = (tmp_path / f"out{i}.txt").open("w")
        procs.append((subprocess.Popen(cmd, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT), out))
    for p, out in procs:
        try:
            p.wait(timeout=180)
        finally:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
            out.close()
    for i, (p, _) in enumerate(procs):
        log = (tmp_path / f"out{i}.txt").read_text()
        assert p.returncode == 0, f"replay {i} failed:\n{log[-3000:]}"
        assert "counter backend: redis" in log and "redis -> memory" not in log, log[-3000:]

    rows = []
    for i in range(len(GROUPS)):
        rows += [json.loads(line) for line in (tmp_path / f"decisions{i}.jsonl").read_text().splitlines()]
    allowed = [r for r in rows if r["decision"] == "allowed"]
    times = [r["ts"] for r in allowed]
    by_runner = [sum(1 for r in allowed if r["symbol"] in g) for g in GROUPS]

    assert window_max(times, HOUR_MS) <= HOURLY_CAP
    assert window_max(times, DAY_MS) <= DAILY_CAP
    # Not vacuous: several runners got signals through, the shared caps refused others, and were reached.
    assert sum(1 for n in by_runner if n > 0) >= 2, by_runner
    reasons = {r["reason"] for r in rows}
    assert "daily_cap" in reasons
    assert window_max(times, DAY_MS) == DAILY_CAP
