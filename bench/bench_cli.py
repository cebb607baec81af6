"""CPU seconds of everyday CLI calls (``--help``, ``status``, ``config show``), each as a fresh subprocess.

Why CPU and not wall time: the machine is shared (2 cores, several jobs), so wall time measures the neighbours;
the child's user+system CPU (``resource.getrusage(RUSAGE_CHILDREN)``) is what the command itself costs.  The target
(issue 16) is under 0.3 s for ``--help`` and ``status``.  Never a test assert: figures go in docs/benchmarks.md.

    .venv/bin/python bench/bench_cli.py [--runs 7] [--root DIR ...]

``--root`` runs another checkout's code (e.g. an export of main) for before/after figures; give it several times
(``--root /tmp/main --root .``) and the runs alternate between them, command by command, so both see the same
neighbours.  ``status`` reads a scratch SQLite journal (it answers whether a runner is up or not), created empty by
the first call.  Then a ``shadow`` runner of this checkout (simulator, web API on a free port, on the same journal)
is started in the scratch folder, and ``status`` is measured again while it runs: the code that has the fast path
asks the runner over HTTP, older code reads the journal (the last line of the answer, printed once per checkout,
says which source answered).  The runner is stopped with SIGTERM at the end.  Bytecode is cached as on an installed package (``pip`` compiles it): the children write and read
their ``.pyc`` files under a scratch ``PYTHONPYCACHEPREFIX`` even when ``PYTHONDONTWRITEBYTECODE`` is set here,
and the first call of each command warms that cache.
"""

from __future__ import annotations

import argparse
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine import describe
from ultra_signals.apps import runfile

COMMANDS: dict[str, list[str]] = {
    "--help": ["--help"],
    "status": ["status"],
    "config show": ["config", "show"],
}


#: ``status`` measured again while a runner is up (its own row in the table).
RUNNER_UP = "status, runner up"


def run_child(argv: list[str], cwd: Path, env: dict[str, str]) -> tuple[float, str]:
    """User+system CPU seconds of one child process run to completion, and its stdout."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    p = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if p.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({p.returncode}): {p.stderr.strip()[-500:]}")
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), p.stdout


def cpu_of(argv: list[str], cwd: Path, env: dict[str, str]) -> float:
    return run_child(argv, cwd, env)[0]


def start_runner(cwd: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A simulated shadow run (1440 market minutes at 20x: over an hour) serving its web API on a free port; back
    once the run file names the API (bounded: 120 s)."""
    argv = [sys.executable, "-m", "ultra_signals", "shadow", "--duration", "1440", "--speed", "20"]
    argv += ["--metrics-port", "0", "--web-port", "0", "--no-report"]
    proc = subprocess.Popen(argv, cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if runfile.wait_serving(cwd / runfile.RUN_FILE, lambda: proc.poll() is None, 120.0) is not None:
        return proc
    stop_runner(proc)
    raise SystemExit("the shadow runner did not serve its web API within 120 s")


def stop_runner(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=7)
    ap.add_argument(
        "--root", type=Path, action="append", help="checkout to run (repeat to alternate; default: this one)"
    )
    args = ap.parse_args()
    roots = [r.resolve() for r in (args.root or [Path(__file__).resolve().parents[1]])]
    with tempfile.TemporaryDirectory() as tmp:
        cwd = Path(tmp)
        base = [sys.executable, "-m", "ultra_signals"]
        drop = ("PYTHONDONTWRITEBYTECODE", "PYTHONPYCACHEPREFIX")
        env0 = {k: v for k, v in os.environ.items() if not k.startswith("ULTRA_SIGNALS_") and k not in drop}
        env0.update(ULTRA_SIGNALS_JOURNAL__URL=f"sqlite:///{cwd / 'journal.sqlite'}", COLUMNS="120")
        envs: list[dict[str, str]] = []
        for i, root in enumerate(roots):
            env = {**env0, "PYTHONPATH": str(root), "PYTHONPYCACHEPREFIX": str(cwd / f"pyc{i}")}
            envs.append(env)
            for argv in COMMANDS.values():  # creates the journal; warms the page cache and the .pyc files
                cpu_of([*base, *argv], cwd, env)
        print(f"machine: {describe()}")
        print(f"{args.runs} runs each, alternating between roots; CPU seconds (user+system) of the child")
        xs: dict[tuple[int, str], list[float]] = {(i, n): [] for i in range(len(roots)) for n in COMMANDS}
        for name, argv in COMMANDS.items():
            for _ in range(args.runs):
                for i, env in enumerate(envs):
                    xs[i, name].append(cpu_of([*base, *argv], cwd, env))
        here = Path(__file__).resolve().parents[1]
        runner = start_runner(cwd, {**env0, "PYTHONPATH": str(here), "PYTHONPYCACHEPREFIX": str(cwd / "pyc-runner")})
        sources: dict[int, str] = {}
        try:
            for i, env in enumerate(envs):  # warm; and which source answers each checkout's status
                _, out = run_child([*base, "status"], cwd, env)
                sources[i] = (out.strip().splitlines() or ["(no answer)"])[-1]
                xs[i, RUNNER_UP] = []
            for _ in range(args.runs):
                for i, env in enumerate(envs):
                    xs[i, RUNNER_UP].append(cpu_of([*base, "status"], cwd, env))
        finally:
            stop_runner(runner)
        for i, root in enumerate(roots):
            print(f"\ncode: {root}")
            print(f"{RUNNER_UP} answered by: {sources[i]}")
            print(f"{'command':<18} {'median':>7} {'min':>7} {'max':>7}")
            for name in (*COMMANDS, RUNNER_UP):
                v = xs[i, name]
                print(f"{name:<18} {statistics.median(v):7.3f} {min(v):7.3f} {max(v):7.3f}")


if __name__ == "__main__":
    main()
