"""Executor benchmark: the paper what-if executor alone, on the exact calls a replay makes to it.

``bench_pipeline.py --executor`` measures the whole run loop, where the executor is about a sixth of the CPU and
the machine's load moves the total by more than that.  This records, once, every call the runner makes to the
executor in that run (3 symbols × 30 days of 1m bars, timeframes 1m,5m,15m,1h: 166,320 market events, the allowed
decisions, the health reports) to a pickle, then replays them into a fresh executor (paper broker, SQLite journal,
metrics) and prints its CPU time, so two checkouts can be compared on the same calls:

    python bench/bench_executor.py --record var/bench-executor.pickle           # once (runs the pipeline)
    python bench/bench_executor.py --replay var/bench-executor.pickle --root .  # any checkout, --repeat N

``--root`` is the checkout whose ``ultra_signals`` is imported (the default: this one).  The digest line is a hash
of the executor's summary and journal rows (wall-clock columns left out): equal digests, equal results.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
ap.add_argument("--record", default=None, help="run the pipeline and write its executor calls to this file")
ap.add_argument("--replay", default=None, help="replay the executor calls of this file")
ap.add_argument("--root", default=str(Path(__file__).resolve().parents[1]), help="checkout to import from")
ap.add_argument("--repeat", type=int, default=1)
ap.add_argument("--days", type=int, default=30)
ap.add_argument("--data", default="var/bench-candles", help="folder of simulated candles (as bench_pipeline)")
args = ap.parse_args()
sys.path.insert(0, str(Path(args.root).resolve()))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))

from bench.machine import describe  # noqa: E402
from ultra_signals.core.config import load_settings  # noqa: E402
from ultra_signals.execution.executor import make_executor  # noqa: E402
from ultra_signals.journal.writer import Journal  # noqa: E402
from ultra_signals.observability.metrics import Metrics  # noqa: E402
from ultra_signals.transport.notifier import NullNotifier  # noqa: E402

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
TIMEFRAMES = "1m,5m,15m,1h"
NAMESPACE = "bench-executor"
EVENT, SIGNAL, HEALTH = 0, 1, 2


def settings() -> Any:
    return load_settings(
        overrides={
            "runtime.symbols": SYMBOLS,
            "runtime.timeframes": TIMEFRAMES,
            "runtime.primary_timeframe": "5m",
            "execution.broker": "paper",
        },
        environ={},
    )


class _Recording:
    """An executor that forwards every call to the real one and keeps the calls, in order."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.calls: list[tuple[int, Any]] = []

    def on_market_event(self, ev: Any) -> None:
        self.calls.append((EVENT, ev))
        self.inner.on_market_event(ev)

    def on_signal(self, decision: Any) -> None:
        self.calls.append((SIGNAL, decision))
        self.inner.on_signal(decision)

    def on_health(self, h: Any) -> None:
        self.calls.append((HEALTH, h))
        self.inner.on_health(h)

    def blocking_reason(self) -> str | None:
        return self.inner.blocking_reason()  # type: ignore[no-any-return]

    def summary(self) -> dict[str, Any]:
        return self.inner.summary()  # type: ignore[no-any-return]

    async def start(self) -> None:
        await self.inner.start()

    async def aclose(self) -> None:
        await self.inner.aclose()


def record(out: Path) -> None:
    import asyncio

    from ultra_signals.bootstrap import build_runner
    from ultra_signals.sources.replay import ReplaySource
    from ultra_signals.sources.sim import export_candles

    s = settings()
    data = Path(args.data) / f"sim-seed{s.sim.seed}-{args.days}d"
    if not all((data / f"{sym}-1m.csv").exists() for sym in SYMBOLS):
        export_candles(s.sim, SYMBOLS, args.days, data, ["1m"])
    with tempfile.TemporaryDirectory() as tmp:
        journal = Journal(f"sqlite:///{tmp}/journal.db", s.journal.batch_size)
        metrics = Metrics()
        rec = _Recording(make_executor(s, metrics, journal, NullNotifier(), "bench-record", namespace=NAMESPACE))
        src = ReplaySource(data, SYMBOLS, s.runtime.timeframes, None, None, 0)
        runner = build_runner(
            s, source=src, journal=journal, notifier=NullNotifier(), metrics=metrics, executor=rec,  # type: ignore[arg-type]
            serve_metrics=False, namespace=NAMESPACE,
        )  # fmt: skip
        asyncio.run(runner.run())
        journal.close()
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("wb") as f:
        pickle.dump(rec.calls, f, protocol=pickle.HIGHEST_PROTOCOL)
    kinds = [k for k, _ in rec.calls]
    print(
        f"recorded {kinds.count(EVENT):,} market events, {kinds.count(SIGNAL)} allowed decisions, "
        f"{kinds.count(HEALTH)} health reports → {out}"
    )


def _digest(summary: dict[str, Any], journal: Journal) -> str:
    from sqlalchemy import text

    h = hashlib.sha256(json.dumps(summary, sort_keys=True, default=str).encode())
    with journal.engine.connect() as c:
        for table in ("exec_orders", "exec_fills", "exec_trades", "exec_events"):
            for row in c.execute(text(f"SELECT * FROM {table} ORDER BY 1")).mappings():
                h.update(repr({k: v for k, v in row.items() if "wall" not in k}).encode())
    return h.hexdigest()[:16]


def replay(path: Path) -> None:
    import asyncio

    with path.open("rb") as f:
        calls: list[tuple[int, Any]] = pickle.load(f)
    s = settings()
    print(f"machine: {describe()}")
    print(f"checkout: {Path(args.root).resolve()}; {len(calls):,} executor calls from {path}")
    for i in range(args.repeat):
        with tempfile.TemporaryDirectory() as tmp:
            journal = Journal(f"sqlite:///{tmp}/journal.db", s.journal.batch_size)
            exe = make_executor(s, Metrics(), journal, NullNotifier(), "bench-replay", namespace=NAMESPACE)
            asyncio.run(exe.start())
            on_event, on_signal, on_health = exe.on_market_event, exe.on_signal, exe.on_health
            c0 = time.process_time()
            for kind, x in calls:
                if kind == EVENT:
                    on_event(x)
                elif kind == SIGNAL:
                    on_signal(x)
                else:
                    on_health(x)
            cpu = time.process_time() - c0
            asyncio.run(exe.aclose())
            summary = exe.summary()
            digest = _digest(summary, journal)
            journal.close()
        print(
            f"run {i + 1}: {cpu:.3f} s CPU for the executor ({cpu / len(calls) * 1e6:.2f} µs per call); "
            f"{summary.get('trades')} trades, {summary.get('closed')} closed; digest {digest}"
        )


if args.record:
    record(Path(args.record))
if args.replay:
    replay(Path(args.replay))
