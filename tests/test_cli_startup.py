"""What the everyday commands load: ``--help``, ``status`` and ``config show`` in a fresh interpreter.

Why: a heavy library imported at start costs every call 0.1-0.5 s of CPU on a loaded 2-core machine, and issue 16
asks that matplotlib, SQLAlchemy, websockets and the web stack load only in the commands that use them.  Checked
through ``sys.modules`` after the real command ran (``python -m ultra_signals`` exactly, through ``runpy``), never
by timing: the CPU figures are ``bench/bench_cli.py``'s (docs/benchmarks.md).

``status`` reads the journal, so it loads SQLAlchemy Core (the journal's one reader and writer), but not its ORM,
not Alembic (a journal at the head revision is checked with plain SQL), not rich (its answer is plain lines), and
not the brokers (only ``kill`` and ``balance`` reach the exchange).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

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


def loaded_by(tmp_path: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run one command from an empty folder on a scratch journal; its result and every module it imported."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ULTRA_SIGNALS_") and k != "PYTHONPATH"}
    env.update(
        PYTHONPATH=str(REPO),
        ULTRA_SIGNALS_JOURNAL__URL=f"sqlite:///{tmp_path / 'journal.sqlite'}",
        COLUMNS="200",
    )
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
