"""Several ``ultra-signals replay`` processes at once: the multi-runner tests' launcher.

The tests that race real runners against one Redis (exactly once, caps over the union, Sentinel failover) all
start the CLI the same way: in the environment ``tests.helpers.cli_env`` builds, one output file per process, a
bounded wait, a kill for any process still running, and a failure that shows the tail of the output of a process
that did not exit 0.  Kept here so a fix reaches all of them.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from types import TracebackType
from typing import IO

from tests.conftest import REPO


class ReplayRunners:
    """Replay processes started one by one and awaited together; the i-th one's output is ``out<i>.txt``.

    Use as a context manager: a process still running when the block ends (a failed step, a timeout) is killed.
    """

    def __init__(self, out_dir: Path, env: dict[str, str], cwd: Path = REPO) -> None:
        self.out_dir = out_dir
        self.env = env
        self.cwd = cwd
        self.procs: list[tuple[subprocess.Popen[bytes], IO[str]]] = []

    def start(self, *args: str) -> None:
        """Start ``python -m ultra_signals replay *args``."""
        out = (self.out_dir / f"out{len(self.procs)}.txt").open("w")
        cmd = [sys.executable, "-m", "ultra_signals", "replay", *args]
        proc = subprocess.Popen(cmd, cwd=self.cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        self.procs.append((proc, out))

    def wait(self, timeout: float) -> list[str]:
        """Wait for each process (up to ``timeout`` s each); their outputs, once every one has exited 0."""
        for p, out in self.procs:
            try:
                p.wait(timeout=timeout)
            finally:
                if p.poll() is None:
                    p.kill()
                    p.wait(timeout=10)
                out.close()
        logs = [(self.out_dir / f"out{i}.txt").read_text() for i in range(len(self.procs))]
        for i, ((p, _), log) in enumerate(zip(self.procs, logs, strict=True)):
            assert p.returncode == 0, f"replay {i} failed:\n{log[-3000:]}"
        return logs

    def __enter__(self) -> ReplayRunners:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        for p, out in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
            out.close()
