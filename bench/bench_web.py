"""What the status page costs the runner: CPU per page refresh (the eight API reads the page makes every 2 s).

A simulated shadow run is finished first (real SQLite journal); then the app is served by a real uvicorn on
127.0.0.1:0 in a child process and polled over HTTP from this one.  The child's CPU (user+system, read from
``/proc/<pid>/stat``) over N refreshes is what the runner's process would pay; wall time is printed too but the
machine is shared, so wall time measures the neighbours as much as the code.  Figures, not asserts.

    .venv/bin/python bench/bench_web.py [--refreshes 100] [--minutes 1440]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from multiprocessing import get_context
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import describe

PATHS = (
    "/api/v1/status",
    "/api/v1/caps",
    "/api/v1/decisions?limit=15",
    "/api/v1/blocked",
    "/api/v1/positions",
    "/api/v1/latency",
    "/api/v1/prices",
    "/api/v1/pnl",
)


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _serve(tmp: str, minutes: int, port_q: Any, stop: Any) -> None:
    from tests.web_run import finished_run
    from ultra_signals.control import Control
    from ultra_signals.live.view import RunnerView
    from ultra_signals.web.server import WebServer

    run = finished_run(Path(tmp), minutes=minutes)
    settings = run.settings.model_copy(update={"web": run.settings.web.model_copy(update={"port": 0})})
    view = RunnerView(run.runner)
    server = WebServer(Control(run.journal, view), settings, probe=view)

    async def main() -> None:
        port_q.put(await server.start())
        while not stop.is_set():
            await asyncio.sleep(0.05)
        await server.aclose()

    asyncio.run(main())


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--refreshes", type=int, default=100)
    ap.add_argument("--minutes", type=int, default=1440)
    a = ap.parse_args()
    import httpx

    ctx = get_context("spawn")
    with tempfile.TemporaryDirectory() as tmp:
        port_q, stop = ctx.Queue(), ctx.Event()
        child = ctx.Process(target=_serve, args=(tmp, a.minutes, port_q, stop))
        child.start()
        port = port_q.get(timeout=300)
        assert child.pid is not None
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as c:
            for p in PATHS:  # warm-up: first-call imports and caches
                c.get(p)
            cpu0, t0 = _cpu_s(child.pid), time.perf_counter()
            for _ in range(a.refreshes):
                for p in PATHS:
                    c.get(p)
            cpu1, t1 = _cpu_s(child.pid), time.perf_counter()
        stop.set()
        child.join(60)
    print(describe())
    print(f"{a.refreshes} page refreshes ({len(PATHS)} reads each) over a {a.minutes}-minute sim run's journal")
    print(f"server CPU per refresh: {1000 * (cpu1 - cpu0) / a.refreshes:.1f} ms (user+system of the serving process)")
    print(f"wall per refresh:       {1000 * (t1 - t0) / a.refreshes:.1f} ms (client and server, shared machine)")
    print(f"at the page's 2 s refresh: {100 * (cpu1 - cpu0) / a.refreshes / 2.0:.2f} % of one core per open page")


if __name__ == "__main__":
    main()
