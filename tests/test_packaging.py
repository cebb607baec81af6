"""The package as a user gets it: a wheel installed in a fresh venv, run from an empty folder (no checkout).

Why: the defaults (``settings.yaml``, ``profiles/``) used to live only in the checkout, so ``pip install .`` gave a
command that failed everywhere else.  This builds the wheel the way a release does, installs it with the exact
versions CI uses (``-c requirements.lock``) and runs ``shadow`` and ``init`` where no settings file exists.

Also here: the command line's import diet (``import ultra_signals.apps.cli`` loads no heavy library), checked
through ``sys.modules`` in a fresh interpreter -- never by timing (that is ``bench/bench_cli.py``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

from tests.conftest import DEFAULTS, REPO

#: Libraries the command line must not import before a command needs them (each costs 0.1-0.5 s of CPU).
HEAVY = ("matplotlib", "sqlalchemy", "alembic", "websockets", "httpx", "numpy")


def _clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ULTRA_SIGNALS_") and k != "PYTHONPATH"}
    env.update(extra)
    return env


def test_importing_the_cli_loads_no_heavy_library() -> None:
    code = f"import sys, ultra_signals.apps.cli\nprint(','.join(m for m in {HEAVY!r} if m in sys.modules))\n"
    p = subprocess.run(
        [sys.executable, "-c", code],
        cwd=REPO,
        env=_clean_env(PYTHONPATH=str(REPO)),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == "", f"imported at CLI start: {p.stdout.strip()}"


def test_help_lists_each_command_once() -> None:
    p = subprocess.run(
        [sys.executable, "-m", "ultra_signals", "--help"],
        cwd=REPO,
        env=_clean_env(PYTHONPATH=str(REPO), COLUMNS="200"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert p.returncode == 0, p.stderr
    rows = [ln.split()[1] for ln in p.stdout.splitlines() if ln.startswith("│ ") and len(ln.split()) > 2]
    for name in ("shadow", "status", "config", "init", "db"):
        assert rows.count(name) == 1, (name, rows)


def test_settings_flag_is_shown_by_config_show_and_init_overwrites_only_with_force(tmp_path: Path) -> None:
    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ultra_signals", *args],
            cwd=tmp_path,
            env=_clean_env(PYTHONPATH=str(REPO), COLUMNS="200"),
            capture_output=True,
            text=True,
            timeout=120,
        )

    target = tmp_path / "conf"
    assert run("init", str(target)).returncode == 0
    (target / "settings.yaml").write_text("sniper:\n  cooldown_bars: 7\n")
    refused = run("init", str(target))
    assert refused.returncode == 2 and "--force" in refused.stderr, refused.stderr
    assert (target / "settings.yaml").read_text() == "sniper:\n  cooldown_bars: 7\n"  # nothing written
    shown = run("--settings", str(target / "settings.yaml"), "config", "show", "-p", "canary")
    assert shown.returncode == 0, shown.stderr
    assert f"# settings: {target / 'settings.yaml'} (--settings)" in shown.stdout
    assert f"# profile: {target / 'profiles' / 'canary.yaml'}" in shown.stdout
    assert "cooldown_bars: 7" in shown.stdout
    assert run("init", "--force", str(target)).returncode == 0
    assert (target / "settings.yaml").read_bytes() == (DEFAULTS / "settings.yaml").read_bytes()


@pytest.mark.slow
def test_wheel_installs_in_a_fresh_venv_and_runs_from_an_empty_folder(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    p = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", str(wheels), str(REPO)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    (wheel,) = wheels.glob("ultra_signals-*.whl")
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    py = env_dir / "bin" / "python"
    p = subprocess.run(
        [str(py), "-m", "pip", "install", "--quiet", "-c", str(REPO / "requirements.lock"), str(wheel)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-2000:]
    exe = env_dir / "bin" / "ultra-signals"
    empty = tmp_path / "empty"
    empty.mkdir()
    env = _clean_env(COLUMNS="200")

    def run(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(exe), *args], cwd=empty, env=env, capture_output=True, text=True, timeout=timeout)

    shown = run("config", "show")
    assert shown.returncode == 0, shown.stderr
    assert "(packaged defaults)" in shown.stdout and str(REPO) not in shown.stdout, shown.stdout[:400]

    ran = run("shadow", "--duration", "60", "--no-report", "--metrics-port", "0")
    assert ran.returncode in (0, 1), ran.stdout[-2000:] + ran.stderr[-2000:]  # GO or NO-GO: a finished run
    assert "Traceback" not in ran.stderr and "not found" not in ran.stderr, ran.stderr[-2000:]
    assert "NO-GO" in ran.stdout or "GO" in ran.stdout, ran.stdout[-2000:]

    made = run("init")
    assert made.returncode == 0, made.stderr
    assert (empty / "settings.yaml").read_bytes() == (DEFAULTS / "settings.yaml").read_bytes()
    assert sorted(p.name for p in (empty / "profiles").glob("*.yaml")) == sorted(
        p.name for p in (DEFAULTS / "profiles").glob("*.yaml")
    )
    again = run("init")
    assert again.returncode == 2 and "already exist" in again.stderr, again.stderr
    shown = run("config", "show")
    assert f"{empty / 'settings.yaml'} (./settings.yaml in the working directory)" in shown.stdout, shown.stdout[:400]
