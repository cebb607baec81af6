"""A small run file under ``var/``: how a monitor in a second terminal finds the run, and learns how it ended.

``shadow``/``replay`` write ``var/run/current.json`` when the exporter is up (run id, pid, metrics URL, web URL,
start) and rewrite it at the end (status, verdict, exit status, report paths).  ``monitor_shadow.py`` started before or
after the run reads it: it follows the run's URL (even with ``--metrics-port 0``), and once the file says the run
ended, shows the verdict and the report path and exits; ``ultra-signals status`` asks a running run's web API
instead of the journal (:mod:`ultra_signals.apps.status_remote`).  The file is the latest run started from this
folder.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

RUN_FILE = Path("var") / "run" / "current.json"


def write(data: dict[str, Any], path: Path = RUN_FILE) -> None:
    """Atomic rewrite (a monitor never reads half a file)."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, indent=2, default=str), encoding="utf-8")
        tmp.replace(path)
    except OSError:  # a read-only folder must not stop a run: the monitor then needs --url
        pass


def read(path: Path = RUN_FILE) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def pid_alive(pid: Any) -> bool:
    try:
        os.kill(int(pid), 0)
    except (OSError, ValueError, TypeError):
        return False
    return True


def started(
    run_id: str,
    metrics_url: str | None,
    planned_wall_s: float | None,
    path: Path = RUN_FILE,
    *,
    web_url: str | None = None,
) -> None:
    """``web_url``: the run's status page and API, which ``ultra-signals status`` asks while the run is up."""
    write(
        {
            "run_id": run_id,
            "pid": os.getpid(),
            "status": "running",
            "metrics_url": metrics_url,
            "web_url": web_url,
            "started_at": time.time(),
            "planned_wall_s": planned_wall_s,
        },
        path,
    )


def ended(
    run_id: str, status: str, verdict: str | None, exit_code: int, reports: list[str], path: Path = RUN_FILE
) -> None:
    data = read(path) or {}
    if data.get("run_id") not in (None, run_id):
        return  # another run started from this folder since: leave its file alone
    data.update(
        {
            "run_id": run_id,
            "pid": os.getpid(),
            "status": status,
            "verdict": verdict,
            "exit_code": exit_code,
            "reports": reports,
            "ended_at": time.time(),
        }
    )
    write(data, path)


def wait_serving(
    path: Path, alive: Callable[[], bool], timeout_s: float, every_s: float = 0.2
) -> dict[str, Any] | None:
    """The run file once it names a running run's web URL, or None if ``alive()`` turns false or ``timeout_s``
    passes first (bounded: a tool starting a runner must not hang on one that never comes up)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and alive():
        info = read(path) or {}
        if info.get("status") == "running" and info.get("web_url"):
            return info
        time.sleep(every_s)
    return None
