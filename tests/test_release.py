"""A release you can roll back to (issue 10, item 7), the rollback of docs/rollout.md step by step.

``make release`` builds this tree's wheel; it is installed into a fresh virtualenv (with requirements.lock, as the
image does) and that install — not the checkout — runs the rollback steps against a journal the checkout's code wrote
with an entry stop in force: ``--version``, ``db current``, ``db downgrade 0001`` and ``db upgrade`` back (no row
lost), a start from an empty directory on that journal, then ``resume``. Slow (a wheel build and a pip install,
bounded by timeouts), so marked ``slow``.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import DEFAULTS, REPO, skip_or_fail_under_ci
from ultra_signals import __version__
from ultra_signals.journal import migrate

pytestmark = pytest.mark.slow

TABLES = ("runs", "decisions", "control_state", "exec_events")


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ULTRA_SIGNALS_") and k != "PYTHONPATH"}
    env.update({"COLUMNS": "200", "ULTRA_SIGNALS_SETTINGS": str(DEFAULTS / "settings.yaml"), **extra})
    return env


def _run(args: list[str], cwd: Path, timeout: float = 180, **extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, cwd=cwd, env=_env(**extra), capture_output=True, text=True, timeout=timeout)


def _counts(db: Path) -> dict[str, int]:
    with sqlite3.connect(db) as con:
        have = {r[0] for r in con.execute("select name from sqlite_master where type = 'table'")}
        return {t: int(con.execute(f'select count(*) from "{t}"').fetchone()[0]) for t in TABLES if t in have}


def _revision(db: Path) -> str:
    with sqlite3.connect(db) as con:
        return str(con.execute("select version_num from alembic_version").fetchone()[0])


def test_the_wheel_installs_in_a_fresh_venv_and_rolls_back_a_newer_journal(tmp_path: Path) -> None:
    db = tmp_path / "journal.db"
    url = f"sqlite:///{db}"
    work = tmp_path / "newer"
    work.mkdir()
    checkout = [sys.executable, "-m", "ultra_signals"]
    # The newer release (this checkout) ran, then the operator stopped entries before rolling back.
    r = _run([*checkout, "shadow", "--duration", "60", "--journal", url, "--metrics-port", "0", "--no-report"],
             work, PYTHONPATH=str(REPO))  # fmt: skip
    assert r.returncode in (0, 1), r.stdout + r.stderr  # GO or NO-GO: the run itself finished
    r = _run([*checkout, "stop-entry", "--journal-url", url], work, PYTHONPATH=str(REPO))
    assert r.returncode == 0 and "stop-entry" in r.stdout, r.stdout + r.stderr
    before = _counts(db)
    assert before["runs"] == 1 and before["decisions"] > 0
    assert _revision(db) == migrate.head()

    # make release: the wheel, named by version, and its record.
    releases = tmp_path / "releases"
    venv_root = Path(sys.prefix)
    r = _run(["make", "--no-print-directory", "-C", str(REPO), "release", f"RELEASES={releases}", "ALLOW_DIRTY=1",
              f"VENV={venv_root}"], REPO, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    wheel = releases / f"ultra_signals-{__version__}-py3-none-any.whl"
    assert wheel.is_file(), sorted(p.name for p in releases.iterdir())
    (record,) = (releases / "RELEASES").read_text().splitlines()
    version, commit, name, _built = record.split()
    assert version == __version__ and name == wheel.name and len(commit.removesuffix("-dirty")) == 40

    # A fresh virtualenv, the wheel installed with the lock's exact versions.
    venv = tmp_path / "venv"
    r = _run([sys.executable, "-m", "venv", str(venv)], tmp_path, timeout=180)
    if r.returncode != 0:
        skip_or_fail_under_ci(f"python -m venv is not usable here: {r.stderr.strip()[:200]}", "under CI it must be")
    py = venv / "bin" / "python"
    r = _run([str(py), "-m", "pip", "install", "--quiet", "-c", str(REPO / "requirements.lock"), str(wheel)],
             tmp_path, timeout=900)  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    exe = str(venv / "bin" / "ultra-signals")
    empty = tmp_path / "empty"
    empty.mkdir()

    r = _run([exe, "--version"], empty)
    assert r.returncode == 0 and r.stdout.strip() == f"ultra-signals {__version__}", r.stdout + r.stderr  # no checkout

    r = _run([exe, "db", "current", "--journal", url], empty)
    assert r.returncode == 0 and f"revision {migrate.head()} (head)" in r.stdout, r.stdout + r.stderr
    r = _run([exe, "db", "downgrade", "0001", "--journal", url], empty)
    assert r.returncode == 0, r.stdout + r.stderr
    assert _revision(db) == "0001" and _counts(db) == before
    r = _run([exe, "db", "current", "--journal", url], empty)
    assert r.returncode == 1, r.stdout + r.stderr  # behind the head this release knows
    r = _run([exe, "db", "upgrade", "--journal", url], empty)
    assert r.returncode == 0 and _revision(db) == migrate.head(), r.stdout + r.stderr
    assert _counts(db) == before

    # Start the installed release from an empty directory on that journal, then resume.
    r = _run([exe, "shadow", "--duration", "60", "--journal", url, "--metrics-port", "0", "--no-report"], empty)
    assert r.returncode in (0, 1), r.stdout + r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    after = _counts(db)
    assert after["runs"] == 2 and after["decisions"] > before["decisions"]
    with sqlite3.connect(db) as con:
        rows = con.execute("select settings_json from runs order by started_at").fetchall()
    releases_seen = [json.loads(s)["release"] for (s,) in rows]
    assert releases_seen[0]["version"] == __version__
    if (REPO / ".git").exists():  # the checkout's run names its commit
        assert str(releases_seen[0]["git_commit"]).startswith(commit.removesuffix("-dirty"))
    assert releases_seen[1] == {"version": __version__, "git_commit": None}  # the wheel knows no checkout
    r = _run([exe, "status", "--journal-url", url], empty)
    assert r.returncode == 0 and "REDUCING" in r.stdout, r.stdout + r.stderr  # the stop-entry outlived both restarts
    r = _run([exe, "resume", "--journal-url", url], empty)
    assert r.returncode == 0 and "resumed" in r.stdout and "ACTIVE" in r.stdout, r.stdout + r.stderr
