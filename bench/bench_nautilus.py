"""Whole process, side by side: ``ultra-signals replay`` and a NautilusTrader backtest on the same CSV bars (issue 13).

Both read the same 3 symbols × 30 days of 1m bars (129,600 bars, built at bench time from the shared real
recording: bench/replay_data.py), each in a fresh child process, alternating, so both see the same machine load.
Each child's CPU time (user + sys from ``wait4``) is its own; wall time moves with the other sessions' load.

What runs: ours is the whole product path (1m → 5m/15m/1h, ten indicators per timeframe, scoring, every filter,
sniper caps, SQLite journal, metrics, paper what-if executor, report with charts).  Nautilus's is
bench/nautilus_inner.py: 1m bars, three indicators and a simple rule with market orders through its engine.

NautilusTrader is not a dependency of this project: install it into a separate venv and point at its Python.

    python3 -m venv /work/nautilus-venv && /work/nautilus-venv/bin/pip install nautilus_trader
    python bench/bench_nautilus.py --nautilus-python /work/nautilus-venv/bin/python [--repeat 3]

Target (issue 13): ours ≥ 3× faster than Nautilus on the whole process.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_replay import run_once
from bench.machine import describe
from bench.replay_data import synthesise

INNER = Path(__file__).resolve().parent / "nautilus_inner.py"


def run_nautilus(python: str, data: Path) -> dict[str, float]:
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [python, str(INNER), str(data)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    assert proc.stdout is not None
    out = proc.stdout.read()
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    if code != 0 or "nautilus:" not in out:
        raise SystemExit(f"the Nautilus backtest failed (exit {code}):\n{out[-3000:]}")
    print("       " + next(line for line in out.splitlines() if line.startswith("nautilus:")))
    return {"wall": wall, "cpu": ru.ru_utime + ru.ru_stime, "rss_mb": ru.ru_maxrss / 1024.0}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nautilus-python", default="/work/nautilus-venv/bin/python")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--days", type=int, default=30)
    args = ap.parse_args()
    if not Path(args.nautilus_python).exists():
        raise SystemExit(
            f"{args.nautilus_python} not found: install nautilus_trader into a separate venv (see this file's doc)"
        )
    print(f"machine: {describe()}")
    with tempfile.TemporaryDirectory(prefix="bench-nautilus-") as tmp:
        data, work = Path(tmp) / "candles", Path(tmp) / "work"
        work.mkdir()
        synthesise(data, 3, args.days)
        bars = 3 * args.days * 1440
        print(f"input: {bars:,} 1m bars (3 symbols × {args.days} days), the same CSV files for both")
        ours: list[dict[str, float]] = []
        theirs: list[dict[str, float]] = []
        pyc = Path(tmp) / "pyc"  # ours with cached bytecode, as installed (see bench_replay.py); one untimed run
        run_once(data, work, None, report=True, pyc=pyc)
        for i in range(args.repeat):
            r = run_once(data, work, None, report=True, pyc=pyc)
            ours.append(r)
            print(
                f"run {i + 1} ultra-signals: CPU {r['cpu']:.2f} s, wall {r['wall']:.2f} s, peak RSS {r['rss_mb']:.0f} MB"
            )
            n = run_nautilus(args.nautilus_python, data)
            theirs.append(n)
            print(
                f"run {i + 1} nautilus:      CPU {n['cpu']:.2f} s, wall {n['wall']:.2f} s, peak RSS {n['rss_mb']:.0f} MB"
            )
    best = {k: min(r[k] for r in ours) for k in ("cpu", "wall")}
    tbest = {k: min(r[k] for r in theirs) for k in ("cpu", "wall")}
    print(
        f"best of {args.repeat}: ultra-signals CPU {best['cpu']:.2f} s / wall {best['wall']:.2f} s; "
        f"nautilus CPU {tbest['cpu']:.2f} s / wall {tbest['wall']:.2f} s; "
        f"nautilus ÷ ours: CPU {tbest['cpu'] / best['cpu']:.2f}×, wall {tbest['wall'] / best['wall']:.2f}× "
        "(target ≥ 3×)"
    )


if __name__ == "__main__":
    main()
