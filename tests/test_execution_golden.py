"""The executor's money path is byte-identical to the stored timelines (tests/golden/execution_*.jsonl).

Each scenario (see :mod:`tests.golden_execution`) feeds fixed market events and decisions to a real executor and
records every order, fill, trade row, event, trading-state change, notice and broker command, step by step.  A
refactor of the execution layer must not change a byte; work that changes execution on purpose regenerates the
files (``python -m tests.golden_execution``) in a commit that says why and shows the diff.
"""

from __future__ import annotations

import difflib
import json
from pathlib import Path

import pytest

from tests.golden_execution import SCENARIOS, golden_path

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_execution_matches_the_stored_timeline(name: str, tmp_path: Path) -> None:
    want = golden_path(name).read_text(encoding="utf-8")
    got = SCENARIOS[name](tmp_path)
    steps = [json.loads(line)["step"] for line in want.splitlines()]
    assert len(steps) >= 4 and len(set(steps)) == len(steps), "the stored file should hold a real timeline"
    if got != want:
        diff = "".join(list(difflib.unified_diff(want.splitlines(True), got.splitlines(True), "stored", "now"))[:40])
        pytest.fail(f"execution changed for {name}:\n{diff}")


def test_the_canary_timeline_covers_the_money_path() -> None:
    """The stored canary timeline really holds what it claims: entries, both exits, every breaker, kill, restart."""
    rows = [json.loads(line) for line in golden_path("paper_canary").read_text(encoding="utf-8").splitlines()]
    exits = {f["kind"] for r in rows for f in r.get("fills", ())}
    assert exits == {"entry", "stop", "tp", "exit"}
    breakers = {r["trading_state"]["breaker"] for r in rows if r.get("trading_state")}
    assert {"consecutive_losses", "missing_bracket", "order_errors", "data_staleness", "kill_switch"} <= breakers
    assert any(t["status"] == "open_at_end" for r in rows for t in r.get("trades", ()))
    refused = {o["reason"] for r in rows for o in r.get("orders", ()) if o["status"] == "refused"}
    assert refused == {
        "position_open",
        "trading_halted",
        "invalid_prices",
        "throttle_orders_per_minute",
        "throttle_open_positions",
    }
    recovery = [json.loads(x) for x in golden_path("binance_recovery").read_text(encoding="utf-8").splitlines()]
    restart = next(r for r in recovery if r["step"] == "restart_recovers_open_trade")
    assert restart["recovered"] and restart["reconciliations"] == [[]]
