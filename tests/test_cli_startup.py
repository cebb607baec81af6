"""What the everyday commands load: ``--help``, ``status`` and ``config show`` in a fresh interpreter.

Why: a heavy library imported at start costs every call 0.1-0.5 s of CPU on a loaded 2-core machine, and issue 16
asks that matplotlib, SQLAlchemy, websockets and the web stack load only in the commands that use them.  Checked
through ``sys.modules`` after the real command ran (``python -m ultra_signals`` exactly, through ``runpy``), never
by timing: the CPU figures are ``bench/bench_cli.py``'s (docs/benchmarks.md).

``status`` with no runner up reads the journal, so it loads SQLAlchemy Core (the journal's one reader and writer),
but not its ORM, not Alembic (a journal at the head revision is checked with plain SQL), not rich (its answer is
plain lines), and not the brokers (only ``kill`` and ``balance`` reach the exchange).  With a runner up (a real
``shadow`` run with its web API, started from the same folder), ``status`` asks it over HTTP and loads neither
SQLAlchemy nor pydantic nor the settings models; when the runner is gone, refuses, or the run file is garbage, the
journal answers, and the last line says which source did.
"""

from __future__ import annotations

import http.server
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO
from ultra_signals.apps import runfile

#: Never at start, in any of these commands: plotting, the venue's network clients, the web stack, numpy.
NEVER = (
    "matplotlib",
    "numpy",
    "websockets",
    "httpx",
    "aiohttp",
    "redis",
    "fastapi",
    "starlette",
    "uvicorn",
    "sqlalchemy.orm",
    "alembic",
    "ultra_signals.live",
    "ultra_signals.bootstrap",
    "ultra_signals.execution.brokers",
    "ultra_signals.venues",
)

#: Runs the CLI as ``python -m ultra_signals ARGS`` does, then writes the loaded module names to the file named by
#: the first argument (at exit, after typer's own ``sys.exit``).
_PROBE = """
import atexit, json, runpy, sys
out = sys.argv[1]
atexit.register(lambda: open(out, "w").write(json.dumps(sorted(sys.modules))))
sys.argv = ["ultra-signals", *sys.argv[2:]]
runpy.run_module("ultra_signals", run_name="__main__")
"""


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """This process's environment without any ``ULTRA_SIGNALS_*``, on a scratch journal in ``tmp_path``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ULTRA_SIGNALS_") and k != "PYTHONPATH"}
    env.update(
        PYTHONPATH=str(REPO),
        ULTRA_SIGNALS_JOURNAL__URL=f"sqlite:///{tmp_path / 'journal.sqlite'}",
        COLUMNS="200",
        **extra,
    )
    return env


def loaded_by(tmp_path: Path, *args: str, **env_extra: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run one command from an empty folder on a scratch journal; its result and every module it imported."""
    env = cli_env(tmp_path, **env_extra)
    out = tmp_path / "modules.json"
    p = subprocess.run(
        [sys.executable, "-c", _PROBE, str(out), *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    return p, set(json.loads(out.read_text()))


def under(modules: set[str], packages: tuple[str, ...]) -> list[str]:
    """The packages of ``packages`` that ``modules`` holds (a package or any of its submodules)."""
    return [p for p in packages if any(m == p or m.startswith(p + ".") for m in modules)]


def test_help_loads_neither_the_journal_nor_the_settings_models(tmp_path: Path) -> None:
    p, mods = loaded_by(tmp_path, "--help")
    assert p.returncode == 0, p.stderr
    assert "status" in p.stdout and "shadow" in p.stdout  # the real help was printed
    heavy = under(
        mods, (*NEVER, "sqlalchemy", "pydantic", "yaml", "ultra_signals.core.config", "ultra_signals.control")
    )
    assert heavy == [], f"--help imported {heavy}"


def test_status_loads_sqlalchemy_core_only_and_no_rich(tmp_path: Path) -> None:
    p, mods = loaded_by(tmp_path, "status")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("journal: ") and "no runs in the journal yet" in p.stdout, p.stdout
    assert "sqlalchemy" in mods  # it did read the journal, through the journal's own SQLAlchemy code
    heavy = under(mods, (*NEVER, "rich"))
    assert heavy == [], f"status imported {heavy}"


@pytest.mark.parametrize("args", [("config", "show"), ("status", "--json"), ("health",), ("signals",), ("pnl",)])
def test_other_everyday_answers_load_nothing_they_do_not_use(tmp_path: Path, args: tuple[str, ...]) -> None:
    p, mods = loaded_by(tmp_path, *args)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip(), "no answer printed"
    heavy = under(mods, NEVER)
    assert heavy == [], f"{' '.join(args)} imported {heavy}"


# -- status asked of the running runner (issue 16 item 5) -------------------------------------------------------
READ_TOKEN = "status-test-read-token-0001"
#: What the answer from the runner must not load: the journal's SQLAlchemy, pydantic, the settings models.
NOT_FROM_RUNNER = (
    *NEVER,
    "sqlalchemy",
    "pydantic",
    "yaml",
    "rich",
    "ultra_signals.core.config",
    "ultra_signals.journal",
)


def _wait_for_web(proc: subprocess.Popen[str], run_file: Path, timeout: float = 90.0) -> dict[str, Any]:
    """The run file once it names the runner's web URL (bounded); fails if the runner died first."""
    info = runfile.wait_serving(run_file, lambda: proc.poll() is None, timeout)
    if info is not None:
        return info
    raise AssertionError(f"no web URL in the run file (runner exit {proc.poll()})")


def _keys(d: dict[str, Any]) -> set[str]:
    return set(d)


@pytest.mark.timeout(240)
def test_status_asks_the_running_runner_then_the_journal_once_it_stopped(tmp_path: Path) -> None:
    env = cli_env(tmp_path, ULTRA_SIGNALS_WEB__READ_TOKEN=READ_TOKEN)
    # 600 market minutes at 20x: half an hour, stopped with SIGTERM once the questions are asked.
    proc = subprocess.Popen(
        [sys.executable, "-m", "ultra_signals", "shadow", "--duration", "600", "--speed", "20",
         "--metrics-port", "0", "--web-port", "0", "--no-report"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        info = _wait_for_web(proc, tmp_path / "var" / "run" / "current.json")
        url = info["web_url"].rstrip("/")
        assert url.startswith("http://127.0.0.1:")

        p, mods = loaded_by(tmp_path, "status", ULTRA_SIGNALS_WEB__READ_TOKEN=READ_TOKEN)
        assert p.returncode == 0, p.stderr
        lines = p.stdout.splitlines()
        assert f"run_id: {info['run_id']}" in lines and "status: running" in lines, p.stdout
        assert lines[-1] == f"source: running runner at {url}", p.stdout
        assert READ_TOKEN not in p.stdout + p.stderr
        heavy = under(mods, NOT_FROM_RUNNER)
        assert heavy == [], f"status answered by the runner imported {heavy}"

        # --json: the journal path's shape (control's Status), with what only the runner knows filled in.
        pj, mods_j = loaded_by(tmp_path, "status", "--json", ULTRA_SIGNALS_WEB__READ_TOKEN=READ_TOKEN)
        assert pj.returncode == 0, pj.stderr
        assert pj.stderr.strip().endswith(f"source: running runner at {url}")
        assert under(mods_j, NOT_FROM_RUNNER) == []
        runner_view = json.loads(pj.stdout)
        pk, _ = loaded_by(tmp_path, "status", "--json", "--journal-url", env["ULTRA_SIGNALS_JOURNAL__URL"])
        assert pk.returncode == 0, pk.stderr
        journal_view = json.loads(pk.stdout)
        assert _keys(runner_view) == _keys(journal_view)
        assert _keys(runner_view["run"]) == _keys(journal_view["run"])
        assert _keys(runner_view["trading"]) == _keys(journal_view["trading"])
        assert runner_view["run"]["run_id"] == journal_view["run"]["run_id"] == info["run_id"]
        assert runner_view["journal"] == journal_view["journal"]
        assert runner_view["run"]["uptime_s"] is not None and runner_view["run"]["counter_backend"] == "memory"
        assert runner_view["caps"] is not None and [w["name"] for w in runner_view["caps"]["windows"]] == [
            "hour",
            "day",
        ]

        # Without the read token the runner refuses: the journal answers and the reason is named.
        pn, _ = loaded_by(tmp_path, "status")
        assert pn.returncode == 0, pn.stderr
        assert f"run_id: {info['run_id']}" in pn.stdout.splitlines()
        assert pn.stdout.splitlines()[-1] == (
            f"source: journal (no runner answered: the runner at {url} answered HTTP 401 "
            "(set ULTRA_SIGNALS_WEB__READ_TOKEN))"
        ), pn.stdout
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=60)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate(timeout=10)
    assert proc.returncode == 1, "interrupted by SIGTERM: exit status 1"

    p, mods = loaded_by(tmp_path, "status", ULTRA_SIGNALS_WEB__READ_TOKEN=READ_TOKEN)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert f"run_id: {info['run_id']}" in lines and "status: interrupted" in lines, p.stdout
    assert lines[-1] == "source: journal (no runner answered: the run file's last run is interrupted)"
    assert "sqlalchemy" in mods


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _finished_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait(timeout=60)
    return p.pid


@pytest.mark.parametrize(
    ("run_file", "why"),
    [
        (lambda: "not json {", "the run file var/run/current.json is not a run's JSON"),
        (lambda: "[1, 2]", "the run file var/run/current.json is not a run's JSON"),
        (
            lambda: json.dumps({"pid": _finished_pid(), "status": "running", "web_url": "http://127.0.0.1:9/"}),
            "is not alive",
        ),
        (lambda: json.dumps({"pid": os.getpid(), "status": "running", "web_url": None}), "serves no web API"),
        (
            lambda: json.dumps({"pid": os.getpid(), "status": "running", "web_url": "http://10.1.2.3:8080/"}),
            "is not plain HTTP on loopback",
        ),
        (
            lambda: json.dumps(
                {"pid": os.getpid(), "status": "running", "web_url": f"http://127.0.0.1:{_free_port()}/"}
            ),
            "did not answer (ConnectionRefusedError)",
        ),
    ],
    ids=["garbage", "not-an-object", "dead-pid", "no-web", "not-loopback", "refused"],
)
def test_status_falls_back_to_the_journal_without_a_traceback(tmp_path: Path, run_file: Any, why: str) -> None:
    (tmp_path / "var" / "run").mkdir(parents=True)
    (tmp_path / "var" / "run" / "current.json").write_text(run_file())
    for args in (("status",), ("status", "--json")):
        p, mods = loaded_by(tmp_path, *args)
        assert p.returncode == 0, p.stderr
        assert "Traceback" not in p.stderr
        assert "sqlalchemy" in mods  # the journal answered
        source = p.stderr.strip().splitlines()[-1] if "--json" in args else p.stdout.splitlines()[-1]
        assert source.startswith("source: journal (no runner answered: ") and why in source, source
    assert json.loads(p.stdout)["run"] is None  # --json stays one JSON document on stdout


class _NotTheApi(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # a server that answers 200 with something that is not the runner's status
        body = b'{"hello": "world"}'
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return


def test_status_falls_back_when_the_answer_is_not_the_runners_status(tmp_path: Path) -> None:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _NotTheApi)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/"
        (tmp_path / "var" / "run").mkdir(parents=True)
        (tmp_path / "var" / "run" / "current.json").write_text(
            json.dumps({"pid": os.getpid(), "status": "running", "web_url": url})
        )
        p, _ = loaded_by(tmp_path, "status")
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert p.returncode == 0 and "Traceback" not in p.stderr, p.stderr
    assert p.stdout.splitlines()[-1] == (
        f"source: journal (no runner answered: the runner at {url.rstrip('/')} answered something that is not "
        "its status)"
    )
