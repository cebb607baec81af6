"""Replay benchmark, whole process: ``ultra-signals replay`` as a user runs it, timed from outside (issue 13).

Speed mode (default): 3 symbols × 30 days of 1m bars (129,600 input bars) with every stage on (1m/5m/15m/1h,
every feature, filter and sniper gate, SQLite journal, metrics, report with charts).  Memory mode (``--memory``):
100 symbols × 30 days (4,320,000 input bars) without the report, where the child's peak RSS is the figure.

The candles are built at bench time in a temporary folder from the shared real 1m recording
(``bench/replay_data.py``): nothing is committed.  Each run is a fresh child process; its CPU time (user + sys,
from ``wait4``'s rusage) and peak RSS (``ru_maxrss``) are its own, so other sessions on a shared machine move the
wall figure but not the CPU one.

    python bench/bench_replay.py                   # 3 symbols × 30 days, whole process (+ report)
    python bench/bench_replay.py --memory          # 100 symbols × 30 days, peak RSS and bars/s
    python bench/bench_replay.py --repeat 3 --python-path /tmp/old-checkout   # the same over another checkout
    python bench/bench_replay.py --repeat 2 --python-path /tmp/old --python-path .   # alternate, run by run

Bytecode is cached as on an installed package (``pip`` compiles it): one untimed run per checkout first writes
every module's ``.pyc`` under a scratch ``PYTHONPYCACHEPREFIX`` (even when ``PYTHONDONTWRITEBYTECODE`` is set
here, which would otherwise make every child recompile the whole package).

Targets (issue 13): whole process ≥ 3× NautilusTrader on the same bars (bench/bench_nautilus.py), run loop
≥ 100,000 input bars/s (bench/bench_pipeline.py); memory mode peak RSS ≤ 400 MB and bars/s within 20 % of the
3-symbol figure.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import describe
from bench.replay_data import synthesise

ROOT = Path(__file__).resolve().parents[1]


def run_once(
    data: Path, work: Path, python_path: str | None, report: bool, pyc: Path | None = None
) -> dict[str, float]:
    """One ``python -m ultra_signals replay`` in a fresh child: wall, CPU (user+sys) and peak RSS of that child."""
    journal = work / "journal.db"
    journal.unlink(missing_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "ultra_signals",
        "replay",
        "--data",
        str(data),
        "--timeframes",
        "1m,5m,15m,1h",
        "--metrics-port",
        "0",
        "--journal",
        f"sqlite:///{journal}",
        "--report" if report else "--no-report",
    ]
    env = child_env(python_path, pyc)
    log = work / "replay.log"
    t0 = time.perf_counter()
    with log.open("w") as fh:
        proc = subprocess.Popen(cmd, cwd=work, env=env, stdout=fh, stderr=subprocess.STDOUT)
        # wait4, not communicate(): it returns this child's own rusage (CPU time and peak RSS).
        _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = code = os.waitstatus_to_exitcode(status)
    out = log.read_text()
    m = re.search(r"allowed (\d+) \| blocked (\d+)", out)
    if code not in (0, 1) or m is None:  # 1 = NO-GO is still a completed run
        raise SystemExit(f"replay failed (exit {code}):\n{out[-3000:]}")
    return {
        "wall": wall,
        "cpu": ru.ru_utime + ru.ru_stime,
        "rss_mb": ru.ru_maxrss / 1024.0,
        "allowed": float(m.group(1)),
        "blocked": float(m.group(2)),
    }


def child_env(python_path: str | None, pyc: Path | None) -> dict[str, str]:
    """The child's environment: no ``ULTRA_SIGNALS_*`` settings, bytecode read and written under ``pyc`` (None:
    as this process has it)."""
    drop = ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX") if pyc is not None else ()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ULTRA_SIGNALS_") and k not in drop}
    if pyc is not None:
        env["PYTHONPYCACHEPREFIX"] = str(pyc)
    if python_path:
        env["PYTHONPATH"] = python_path
    return env


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--memory", action="store_true", help="100 symbols × 30 days, no report: peak RSS")
    ap.add_argument("--symbols", type=int, default=None, help="symbols (default 3, or 100 with --memory)")
    ap.add_argument("--days", type=int, default=30)
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--no-report", action="store_true", help="skip the report (always skipped with --memory)")
    ap.add_argument(
        "--python-path",
        action="append",
        default=None,
        help="PYTHONPATH for the child: time another checkout (repeat to alternate run by run; '.' = this one)",
    )
    args = ap.parse_args()
    n_sym = args.symbols or (100 if args.memory else 3)
    report = not (args.memory or args.no_report)
    print(f"machine: {describe()}")
    with tempfile.TemporaryDirectory(prefix="bench-replay-") as tmp:
        data = Path(tmp) / "candles"
        work = Path(tmp) / "work"
        work.mkdir()
        t = time.perf_counter()
        synthesise(data, n_sym, args.days)
        bars = n_sym * args.days * 1440
        print(
            f"input: {bars:,} 1m bars ({n_sym} symbols × {args.days} days, re-timed from the shared real "
            f"UNITTESTBTC-1m recording in {time.perf_counter() - t:.1f} s); timeframes 1m/5m/15m/1h; "
            f"report {'on (charts)' if report else 'off'}"
        )
        paths = [None if p in (None, ".", "") else p for p in (args.python_path or [None])]
        for j, path in enumerate(paths):  # untimed: fills the bytecode cache (ours and the libraries')
            run_once(data, work, path, report, Path(tmp) / f"pyc{j}")
        for i in range(args.repeat):
            for j, path in enumerate(paths):
                r = run_once(data, work, path, report, Path(tmp) / f"pyc{j}")
                print(
                    f"code {path or ROOT}, run {i + 1}: wall {r['wall']:.2f} s, CPU {r['cpu']:.2f} s (user+sys of the "
                    f"child), {bars / r['cpu']:,.0f} input bars per CPU-second, {bars / r['wall']:,.0f} per wall-second; "
                    f"peak RSS {r['rss_mb']:.0f} MB; allowed {r['allowed']:.0f}, blocked {r['blocked']:.0f}"
                )


if __name__ == "__main__":
    main()
