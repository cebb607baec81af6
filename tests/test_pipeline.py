"""The signal engine's own choices (engine/pipeline.py): which bars get features at all."""

from __future__ import annotations

import dataclasses
import math

import pytest

from tests.conftest import require_data
from ultra_signals.core.caps import policy_from
from ultra_signals.core.config import load_settings
from ultra_signals.counters.windows import MemoryCounters
from ultra_signals.engine.pipeline import SignalEngine
from ultra_signals.sources.replay import ReplaySource


def test_features_no_one_reads_are_skipped_without_changing_a_decision() -> None:
    """1m bars only feed aggregation and 1h confirms nothing when 5m decides (MTF 5m → 15m): their indicators are
    skipped.  The same engine computing every timeframe's features makes exactly the same decisions."""
    s = load_settings(overrides={"runtime.timeframes": "1m,5m,15m,1h", "execution.broker": "none"}, environ={})
    src = ReplaySource(require_data("klines"), ["UNITTESTBTC"], s.runtime.timeframes, None, None, 60)
    lean = SignalEngine(s, MemoryCounters(policy_from(s.sniper)), "r")
    full = SignalEngine(s, MemoryCounters(policy_from(s.sniper)), "r")
    full.feature_tfs = frozenset(s.runtime.timeframes)
    assert lean.feature_tfs == {"5m", "15m"}
    lean.decide_from_ms = full.decide_from_ms = src.run_start_ms
    got, want = [], []
    for ev in src.iter_events():
        if (d := lean.on_event(ev)) is not None:
            got.append(repr(d))  # repr: NaN features compare equal as text
        if (d := full.on_event(ev)) is not None:
            want.append(repr(d))
    assert len(want) > 100 and any("allowed=True" in x for x in want)
    assert got == want
    assert lean.store.latest("UNITTESTBTC", "1m") is None and full.store.latest("UNITTESTBTC", "1m") is not None


def test_a_bad_bar_of_an_unread_timeframe_is_still_refused() -> None:
    s = load_settings(overrides={"runtime.timeframes": "1m,5m,15m", "execution.broker": "none"}, environ={})
    eng = SignalEngine(s, MemoryCounters(policy_from(s.sniper)), "r")
    assert "1m" not in eng.feature_tfs
    src = ReplaySource(require_data("klines"), ["UNITTESTBTC"], s.runtime.timeframes, None, None, 0)
    bar = next(ev for ev in src.iter_events() if getattr(ev, "timeframe", "") == "1m")
    with pytest.raises(ValueError, match="non-finite"):
        eng.on_event(dataclasses.replace(bar, close=math.nan))  # type: ignore[type-var]
