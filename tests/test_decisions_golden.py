"""Decisions on the shared recordings are byte-identical to the stored decisions file (tests/golden/).

A refactor or an optimisation must not change a single byte; work that changes decisions on purpose regenerates
the file (``python -m tests.golden_decisions``) in a commit that states the behaviour change and shows the diff.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import pytest

from tests.conftest import require_data
from tests.golden_decisions import GOLDEN, SCENARIOS, produce


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_decisions_match_the_stored_file(name: str, tmp_path: Path) -> None:
    out = tmp_path / "decisions.jsonl"
    produce(name, require_data("klines"), out, f"sqlite:///{tmp_path}/j.db")
    want = (GOLDEN / f"decisions_{name}.jsonl").read_text(encoding="utf-8")
    got = out.read_text(encoding="utf-8")
    assert want.count("\n") > 50, "the stored file should hold a real run's candidates"
    if got != want:
        diff = "".join(list(difflib.unified_diff(want.splitlines(True), got.splitlines(True), "stored", "now"))[:40])
        pytest.fail(f"decisions changed for {name}:\n{diff}")
