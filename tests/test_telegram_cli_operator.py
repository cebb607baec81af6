"""``ultra-signals status|pause|resume`` on a real journal, through the main CLI."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from tests.factories import T0, candidate
from ultra_signals.apps.cli import app
from ultra_signals.core.decision import Decision
from ultra_signals.journal.writer import Journal

runner = CliRunner()


def test_pause_and_resume_write_the_journal_state(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/j.db"
    res = runner.invoke(app, ["pause", "--journal-url", url])
    assert res.exit_code == 0, res.output
    assert "paused" in res.output
    j = Journal(url)
    assert j.get_state("paused") == "1"
    res = runner.invoke(app, ["resume", "--journal-url", url])
    assert res.exit_code == 0 and "resumed" in res.output
    assert j.get_state("paused") == "0"
    j.close()


def test_status_shows_the_latest_run_and_its_windows(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/j.db"
    res = runner.invoke(app, ["status", "--journal-url", url])
    assert res.exit_code == 0 and "no runs in the journal yet" in res.output
    j = Journal(url)
    j.start_run(
        "r1",
        mode="shadow",
        profile="shadow",
        source="replay",
        simulated=False,
        namespace="ns:shadow",
        settings={"sniper": {"max_signals_per_hour": 2, "daily_signal_cap": 6}},
    )
    hour = 3_600_000
    # Allowed at T0+5m, T0+2h and T0+2h30m; blocked at T0+3h (the run's latest decision time).
    for i, (offset, ok) in enumerate([(0, True), (2 * hour, True), (2 * hour + hour // 2, True), (3 * hour, False)]):
        d = Decision("r1", candidate(open_time=T0 + offset + i), ok, None if ok else "hourly_cap")
        j.record(d, "ns:shadow", simulated=False)
    j.set_state("paused", "1")
    j.close()
    res = runner.invoke(app, ["status", "--journal-url", url, "--json"])
    assert res.exit_code == 0, res.output
    rep = json.loads(res.output)
    assert rep["paused"] is True
    assert rep["run"]["run_id"] == "r1" and rep["run"]["status"] == "running"
    assert rep["windows"]["hour"] == {"count": 1, "cap": 2}
    assert rep["windows"]["day"] == {"count": 3, "cap": 6}
    text = runner.invoke(app, ["status", "--journal-url", url]).output
    assert "paused: yes" in text and "hour: 1 / 2" in text and "day: 3 / 6" in text


def test_bad_profile_is_a_clear_error(tmp_path: Path) -> None:
    res = runner.invoke(app, ["pause", "--profile", "nope", "--journal-url", f"sqlite:///{tmp_path}/j.db"])
    assert res.exit_code == 2
    assert "profile 'nope'" in res.output


def test_resume_also_clears_a_circuit_breaker_halt(tmp_path: Path) -> None:
    from ultra_signals.execution.breakers import describe_state, halt_trading

    url = f"sqlite:///{tmp_path}/j.db"
    j = Journal(url)
    halt_trading(j, "consecutive_losses", "4 losses in a row")
    assert "HALTED" in describe_state(j)
    res = runner.invoke(app, ["resume", "--journal-url", url])
    assert res.exit_code == 0, res.output
    assert "trading resumed (ACTIVE)" in res.output and "consecutive_losses" in res.output
    assert "ACTIVE" in describe_state(j)
    j.close()
