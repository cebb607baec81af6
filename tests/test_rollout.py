"""Rollout: stage order, and a canary on replayed candles that ends with a TCA report and a gate verdict.

The canary drill is two runs of the canary profile sharing one counter namespace (a restart), with the
consecutive-loss breaker lowered to 1 in the first run so the trip → alert → operator resume path is exercised,
then ``tca`` and ``rollout gate`` on the second run, through the real CLI.  Fills are the paper broker's
(replayed data never reaches an exchange), and both reports say SIMULATED.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from tests.conftest import require_data
from ultra_signals.apps.cli import app
from ultra_signals.apps.rollout import STAGES, evaluate, next_stage, previous_stage, status
from ultra_signals.execution.breakers import TradingState, load_state, resume_trading
from ultra_signals.journal.trading import ExecStore
from ultra_signals.journal.writer import Journal


def test_stage_order() -> None:
    assert STAGES[0] == "shadow" and STAGES[-1] == "production-phase4"
    assert next_stage("canary") == "production-phase1" and next_stage("production-phase4") is None
    assert previous_stage("production-phase1") == "canary" and previous_stage("shadow") is None


def run_ids(journal: Journal) -> list[str]:
    return [r["run_id"] for r in status(journal)["runs"]]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_canary_replay_ends_with_tca_and_gate(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, namespace: str, redis_url: str
) -> None:
    data = require_data("klines", "XRPUSDT-5m.csv").parent
    monkeypatch.chdir(tmp_path)  # reports/ lands here; settings come from the checkout
    monkeypatch.setenv("ULTRA_SIGNALS_REDIS__URL", redis_url)
    url = f"sqlite:///{tmp_path}/journal.db"
    cli = CliRunner()
    common = ["replay", "--data", str(data), "--symbols", "XRPUSDT", "--profile", "canary", "--journal", url]
    common += ["--namespace", namespace, "--metrics-port", "0"]

    # Run 1: the breaker drill (a single loss trips).
    monkeypatch.setenv("ULTRA_SIGNALS_EXECUTION__BREAKERS__CONSECUTIVE_LOSSES", "1")
    r1 = cli.invoke(app, [*common, "--from", "2021-11-17T00:00:00Z", "--to", "2021-11-19T00:00:00Z"])
    assert r1.exit_code == 0, r1.output
    assert "BREAKER consecutive_losses" in r1.output
    journal = Journal(url)
    assert load_state(journal).state is TradingState.HALTED
    # Restart after the operator resumes (the normal threshold again).
    monkeypatch.delenv("ULTRA_SIGNALS_EXECUTION__BREAKERS__CONSECUTIVE_LOSSES")
    assert "resumed" in resume_trading(journal)
    r2 = cli.invoke(app, [*common, "--from", "2021-11-19T00:00:00Z"])
    assert r2.exit_code == 0, r2.output
    first, second = run_ids(journal)

    tca = cli.invoke(app, ["tca", "--run", second, "--profile", "canary", "--journal-url", url])
    assert tca.exit_code == 0, tca.output
    md = tmp_path / "reports" / f"tca_{second}.md"
    assert md.exists() and "SIMULATED" in md.read_text() and (tmp_path / "reports" / f"tca_{second}.png").exists()

    gate = cli.invoke(app, ["rollout", "gate", "--run", second, "--profile", "canary", "--journal-url", url])
    assert gate.exit_code in (0, 1), gate.output
    assert ("GO" in gate.output) and ("NO-GO" in gate.output) == (gate.exit_code == 1)
    verdict = evaluate(journal, second, tmp_path / "reports")
    by_name = {c.name: c for c in verdict.criteria}
    for name in ("fills_within_slippage", "cards_correct", "breakers_exercised", "counters_survived_restart"):
        assert name in by_name
    assert by_name["breakers_exercised"].passed, by_name["breakers_exercised"].evidence
    assert by_name["counters_survived_restart"].passed, by_name["counters_survived_restart"].evidence
    assert "SIMULATED" in by_name["fills_within_slippage"].evidence
    st = cli.invoke(app, ["rollout", "status", "--profile", "canary", "--journal-url", url])
    assert st.exit_code == 0 and first in st.output and second in st.output and "gates" in st.output
    assert len(ExecStore(journal.engine).events(kind="gate")) == 2  # the CLI's verdict and ours, journaled
    journal.close()
