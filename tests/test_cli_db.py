"""``ultra-signals db upgrade | current | downgrade`` (apps/cli_db.py) on a copy of the 0.1.0 journal, and what the
operator commands say about a journal newer than the code: a clear error and exit code 2, never a traceback."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.test_journal_migrate import FIXTURE
from ultra_signals.apps.cli import app
from ultra_signals.journal import migrate

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
    assert cli.invoke(app, ["db", "upgrade", "--journal", url]).exit_code == 0
    con = sqlite3.connect(path)
    con.execute("UPDATE alembic_version SET version_num = '9999'")
    con.commit()
    con.close()
    state = _count(path, "state")
    r = cli.invoke(app, [*command, url])
    assert r.exit_code == 2, r.output
    assert "9999" in r.output and "newer" in r.output
    assert r.exception is None or isinstance(r.exception, SystemExit), repr(r.exception)
    assert "Traceback" not in r.output
    assert _count(path, "state") == state  # pause wrote nothing


def test_shadow_on_a_journal_newer_than_the_code_refuses_to_start(journal: tuple[Path, str]) -> None:
    path, url = journal
    assert cli.invoke(app, ["db", "upgrade", "--journal", url]).exit_code == 0
    con = sqlite3.connect(path)
    con.execute("UPDATE alembic_version SET version_num = '9999'")
    con.commit()
    con.close()
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
