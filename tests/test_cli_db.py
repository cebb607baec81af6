"""``ultra-signals db upgrade | current | downgrade`` (apps/cli_db.py) on a copy of the 0.1.0 journal, and what the
operator commands say about a journal newer than the code: a clear error and exit code 2, never a traceback."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.helpers import cli_env, copy_packaged_settings
from tests.test_journal_migrate import FIXTURE
from ultra_signals.apps.cli import app
from ultra_signals.bootstrap import build_runner
from ultra_signals.core.caps import policy_from
from ultra_signals.core.config import load_settings
from ultra_signals.counters.windows import MemoryCounters
from ultra_signals.execution.breakers import TradingState, halt_trading, load_state
from ultra_signals.journal import migrate
from ultra_signals.journal.writer import Journal, JournalError
from ultra_signals.observability.metrics import Metrics
from ultra_signals.sources.base import SourceInfo
from ultra_signals.sources.sim import SimSource
from ultra_signals.transport.notifier import NullNotifier

cli = CliRunner()


@pytest.fixture
def journal(tmp_path: Path) -> tuple[Path, str]:
    path = tmp_path / "journal.db"
    shutil.copyfile(FIXTURE, path)
    return path, f"sqlite:///{path}"


def _count(path: Path, table: str) -> int:
    con = sqlite3.connect(path)
    try:
        return int(con.execute(f'select count(*) from "{table}"').fetchone()[0])
    finally:
        con.close()


def test_current_then_upgrade_then_downgrade(journal: tuple[Path, str]) -> None:
    path, url = journal
    head = migrate.head()
    r = cli.invoke(app, ["db", "current", "--journal", url])
    assert r.exit_code == 1 and "unversioned 0.1.0 journal" in r.output, r.output
    r = cli.invoke(app, ["db", "upgrade", "--journal", url])
    assert r.exit_code == 0 and f"→ {head}" in r.output, r.output
    r = cli.invoke(app, ["db", "current", "--journal", url])
    assert r.exit_code == 0 and f"revision {head} (head)" in r.output, r.output
    r = cli.invoke(app, ["db", "upgrade", "--journal", url])
    assert r.exit_code == 0 and f"already at {head}" in r.output, r.output
    r = cli.invoke(app, ["db", "downgrade", migrate.BASELINE, "--journal", url])
    assert r.exit_code == 0 and f"{head} → {migrate.BASELINE}" in r.output, r.output
    r = cli.invoke(app, ["db", "current", "--journal-url", url])
    assert r.exit_code == 1 and "ultra-signals db upgrade" in r.output, r.output
    assert _count(path, "decisions") > 0 and _count(path, "telegram_outbox") > 0


def test_downgrade_to_base_needs_yes(journal: tuple[Path, str]) -> None:
    path, url = journal
    cli.invoke(app, ["db", "upgrade", "--journal", url])
    r = cli.invoke(app, ["db", "downgrade", "base", "--journal", url])
    assert r.exit_code == 2 and "--yes" in r.output, r.output
    assert _count(path, "decisions") > 0
    r = cli.invoke(app, ["db", "downgrade", "base", "--journal", url, "--yes"])
    assert r.exit_code == 0, r.output
    con = sqlite3.connect(path)
    try:
        names = {n for (n,) in con.execute("select name from sqlite_master where type='table'")}
    finally:
        con.close()
    assert names == {"alembic_version"}


def test_current_of_a_missing_file_does_not_create_it(tmp_path: Path) -> None:
    path = tmp_path / "none" / "journal.db"
    r = cli.invoke(app, ["db", "current", "--journal", f"sqlite:///{path}"])
    assert r.exit_code == 1 and "no journal yet" in r.output, r.output
    assert not path.exists() and not path.parent.exists()


def _stamp_newer_than_the_code(path: Path, url: str) -> None:
    """Bring the journal to head, then stamp it with a revision this code does not know (9999): a newer release's."""
    assert cli.invoke(app, ["db", "upgrade", "--journal", url]).exit_code == 0
    con = sqlite3.connect(path)
    con.execute("UPDATE alembic_version SET version_num = '9999'")
    con.commit()
    con.close()


@pytest.mark.parametrize(
    "command",
    [
        ["db", "upgrade", "--journal"],
        ["db", "current", "--journal"],
        ["db", "downgrade", "0001", "--journal"],
        ["status", "--journal-url"],
        ["pause", "--journal-url"],
        ["rollout", "status", "--journal-url"],
        ["tca", "--run", "x", "--journal-url"],
    ],
)
def test_a_journal_newer_than_the_code_is_a_clear_error(journal: tuple[Path, str], command: list[str]) -> None:
    path, url = journal
    _stamp_newer_than_the_code(path, url)
    state = _count(path, "state")
    r = cli.invoke(app, [*command, url])
    assert r.exit_code == 2, r.output
    assert "9999" in r.output and "newer" in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    assert _count(path, "state") == state  # pause wrote nothing


def test_shadow_on_a_journal_newer_than_the_code_refuses_to_start(journal: tuple[Path, str]) -> None:
    path, url = journal
    _stamp_newer_than_the_code(path, url)
    runs = _count(path, "runs")
    r = cli.invoke(app, ["shadow", "--duration", "5", "--journal", url, "--metrics-port", "0", "--no-report"])
    assert r.exit_code == 2 and "newer release" in r.output, r.output
    assert _count(path, "runs") == runs


def _allowed_of_latest_run(path: Path) -> int:
    con = sqlite3.connect(path)
    try:
        (run_id,) = con.execute("select run_id from runs order by started_at desc limit 1").fetchone()
        return int(con.execute("select count(*) from decisions where run_id = ? and allowed", (run_id,)).fetchone()[0])
    finally:
        con.close()


def test_a_shadow_run_on_the_0_1_0_journal_upgrades_it_and_seeds_its_caps_from_it(
    journal: tuple[Path, str], tmp_path: Path
) -> None:
    """The fixture's first run took the sim's signals of this window; a run seeded from it must not take them again.

    The same run on a new journal allows them (the control), so the difference is the seed read from the upgraded
    0.1.0 journal.
    """
    path, url = journal
    args = ["shadow", "--symbols", "BTCUSDT,ETHUSDT", "--namespace", "fixture", "--seed", "42", "--duration", "180"]
    args += ["--metrics-port", "0", "--no-report"]
    fresh = tmp_path / "fresh.db"
    r = cli.invoke(app, [*args, "--journal", f"sqlite:///{fresh}"])
    assert r.exit_code == 0, r.output
    assert _allowed_of_latest_run(fresh) > 0
    runs = _count(path, "runs")
    r = cli.invoke(app, [*args, "--journal", url])
    assert r.exit_code == 0, r.output
    assert _count(path, "runs") == runs + 1
    assert _allowed_of_latest_run(path) == 0
    assert cli.invoke(app, ["db", "current", "--journal", url]).exit_code == 0


# -- backup, restore, retention, and the halt on a lost journal (issue 12, item 8) ----------------------------


def _cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ultra_signals", *args],
        cwd=cwd,
        env=cli_env(COLUMNS="200"),
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_backup_taken_during_a_run_restores_caps_and_trading_state(tmp_path: Path) -> None:
    copy_packaged_settings(tmp_path)
    db = tmp_path / "var" / "journal.db"
    proc = subprocess.Popen(
        [sys.executable, "-m", "ultra_signals", "shadow", "--duration", "600", "--speed", "600",
         "--namespace", "ops", "--metrics-port", "0", "--no-report"],
        cwd=tmp_path, env=cli_env(COLUMNS="200"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 60
        allowed = 0
        while allowed < 2:
            assert time.monotonic() < deadline, "the run never allowed two signals"
            time.sleep(0.2)
            if db.exists():
                try:
                    with sqlite3.connect(db) as c:
                        allowed = c.execute("select count(*) from decisions where allowed = 1").fetchone()[0]
                except sqlite3.OperationalError:
                    pass
        j = Journal(f"sqlite:///{db}")
        halt_trading(j, "daily_loss", "a breaker tripped before the backup")  # the trading state to keep
        j.close()
        p = _cli(tmp_path, "db", "backup", "--to", str(tmp_path / "b.db"))  # while the runner writes
        assert p.returncode == 0, p.stderr
        assert "backed up" in p.stdout
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

    # Disaster: the journal is gone.  Restore the backup in its place.
    shutil.rmtree(tmp_path / "var")
    p = _cli(tmp_path, "db", "restore", "--from", str(tmp_path / "b.db"))
    assert p.returncode == 0, p.stderr
    p = _cli(tmp_path, "db", "restore", "--from", str(tmp_path / "b.db"))
    assert p.returncode == 2 and "--force" in p.stderr  # never silently over a journal

    j = Journal(f"sqlite:///{db}")
    assert not j.created
    with sqlite3.connect(tmp_path / "b.db") as c:
        backed_up = c.execute("select count(*) from decisions where allowed = 1").fetchone()[0]
    kept = list(j.allowed_reservations("ops:shadow"))
    assert len(kept) == backed_up >= 2
    s = load_settings("shadow", overrides={"execution.broker": "none"}, environ={})  # the same deployment
    src = SimSource(s.sim, ["BTCUSDT"], s.runtime.timeframes, 5, s.runtime.warmup_bars)
    runner = build_runner(
        s, source=src, journal=j, notifier=NullNotifier(), metrics=Metrics(), executor=False,
        serve_metrics=False, namespace="ops",
    )  # fmt: skip
    # The restart counts the restored signals in its windows (same as a fresh count of them) ...
    ref = MemoryCounters(policy_from(s.sniper))
    ref.seed(kept)
    last = kept[-1].ts_ms
    assert runner.counters.window_counts(last) == ref.window_counts(last)
    assert sum(runner.counters.window_counts(last).values()) > 0
    # ... and the trading state is still the breaker's HALTED, not a fresh ACTIVE.
    rec = load_state(j)
    assert rec.state is TradingState.HALTED and rec.breaker == "daily_loss"
    runner.counters.close()
    j.close()


class LiveSim(SimSource):
    """The simulator presented as a live source (``historical`` false), as a Binance feed would be."""

    @property
    def info(self) -> SourceInfo:
        return replace(super().info, historical=False)


def test_a_live_canary_start_on_a_missing_journal_is_halted_shadow_and_drills_are_not(tmp_path: Path) -> None:
    for name, profile, live, halted in (
        ("canary-live", "canary", True, True),
        ("canary-replay-drill", "canary", False, False),
        ("shadow-live", "shadow", True, False),
    ):
        s = load_settings(profile, overrides={"execution.broker": "none"}, environ={})
        j = Journal(f"sqlite:///{tmp_path}/{name}/journal.db")
        assert j.created
        cls = LiveSim if live else SimSource
        src = cls(s.sim, ["BTCUSDT"], s.runtime.timeframes, 5, s.runtime.warmup_bars)
        r = build_runner(
            s, source=src, journal=j, notifier=NullNotifier(), metrics=Metrics(), executor=False, serve_metrics=False
        )
        rec = load_state(j)
        assert (rec.state is TradingState.HALTED) is halted, name
        if halted:
            assert rec.breaker == "journal_missing" and "db restore" in (rec.detail or "")
        r.counters.close()
        j.close()
    # Reopened, the journal exists: no new halt is added (the operator's resume would stick).
    j = Journal(f"sqlite:///{tmp_path}/canary-live/journal.db")
    assert not j.created
    j.close()


def test_an_unreadable_journal_refuses_the_canary_start_and_moved_aside_it_starts_halted(tmp_path: Path) -> None:
    """A journal that exists but is not SQLite (random bytes): exit 2 with one line naming the file and the way
    out, no traceback, the file untouched.  Moved aside, the next canary start on a live source is HALTED."""
    copy_packaged_settings(tmp_path)
    db = tmp_path / "var" / "journal.db"
    db.parent.mkdir()
    garbage = os.urandom(8192)
    db.write_bytes(garbage)
    env = cli_env(
        COLUMNS="200",
        ULTRA_SIGNALS_BINANCE__REST_URL="http://127.0.0.1:9",
        ULTRA_SIGNALS_BINANCE__WS_URL="ws://127.0.0.1:9",
    )
    p = subprocess.run(
        [sys.executable, "-m", "ultra_signals", "shadow", "-p", "canary", "--duration", "1", "--metrics-port", "0",
         "--no-report"],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert p.returncode == 2 and "Traceback" not in p.stderr + p.stdout
    lines = [line for line in p.stderr.splitlines() if "journal" in line]
    assert len(lines) == 1 and "var/journal.db exists but cannot be read (file is not a database)" in lines[0]
    assert "ultra-signals db restore --from BACKUP --force" in lines[0] and "move the file aside" in lines[0]
    assert db.read_bytes() == garbage  # nothing written over the operator's file
    with pytest.raises(JournalError, match="cannot be read"):
        Journal(f"sqlite:///{db}")
    db.rename(tmp_path / "var" / "journal.db.corrupt")
    s = load_settings("canary", overrides={"execution.broker": "none"}, environ={})
    j = Journal(f"sqlite:///{db}")
    src = LiveSim(s.sim, ["BTCUSDT"], s.runtime.timeframes, 5, s.runtime.warmup_bars)
    r = build_runner(
        s, source=src, journal=j, notifier=NullNotifier(), metrics=Metrics(), executor=False, serve_metrics=False
    )
    rec = load_state(j)
    assert rec.state is TradingState.HALTED and rec.breaker == "journal_missing"
    r.counters.close()
    j.close()


def test_prune_keeps_at_least_two_days_and_deletes_older_rows(tmp_path: Path) -> None:
    from tests.factories import candidate
    from ultra_signals.core.decision import Decision

    j = Journal(f"sqlite:///{tmp_path}/j.db")
    j.start_run("r1", mode="shadow", profile="shadow", source="sim", simulated=True, namespace="n", settings={})
    now = 1_767_571_200_000
    for days_ago in (10, 5, 1, 0):
        c = candidate(open_time=now - days_ago * 86_400_000)
        j.record(Decision("r1", c, days_ago % 2 == 0, None if days_ago % 2 == 0 else "cooldown"), "n", True)
    j.flush()
    with pytest.raises(JournalError, match="at least 2 days"):
        j.prune(1.0, now_ms=now)
    assert j.prune(3.0, now_ms=now) == {"decisions": 2, "runs": 0}
    assert len(j.decisions("r1")) == 2
    j.close()
    p = _cli(tmp_path, "db", "prune", "--keep-days", "1", "--journal-url", f"sqlite:///{tmp_path}/j.db")
    assert p.returncode == 2 and "at least 2 days" in p.stderr and "Traceback" not in p.stderr


def test_backup_of_a_non_sqlite_journal_points_to_pg_dump(tmp_path: Path) -> None:
    p = _cli(tmp_path, "db", "backup", "--journal-url", "postgresql+psycopg://u:hunter2@127.0.0.1:1/x")
    assert p.returncode == 2 and "pg_dump" in p.stderr
    assert "hunter2" not in p.stdout + p.stderr and "Traceback" not in p.stderr
