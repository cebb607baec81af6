"""``evaluate`` end to end on the recorded XRPUSDT series, and the walk-forward's promise: no future data is read."""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import require_data
from ultra_signals.apps.evaluate import (
    FINAL,
    Cand,
    EvalConfig,
    EvaluationError,
    Fold,
    collect,
    evaluate,
    make_folds,
    read_funding,
    score_folds,
)
from ultra_signals.core.config import load_settings
from ultra_signals.research.outcomes import Outcome
from ultra_signals.research.quality import FEATURES
from ultra_signals.research.selection import DAY_MS

M = 60_000


def _settings():  # type: ignore[no-untyped-def]
    return load_settings(overrides={"runtime.timeframes": "5m,15m,1h", "execution.broker": "none"}, environ={})


def _xrp(tmp_path: Path) -> Path:
    src = require_data("klines", "XRPUSDT-5m.csv")
    d = tmp_path / "klines"
    d.mkdir()
    shutil.copy(src, d / "XRPUSDT-5m.csv")
    return d


def _cands(n: int = 600, seed: int = 0) -> list[Cand]:
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        ts = i * 30 * M
        x = list(rng.normal(size=len(FEATURES)))
        win = bool(rng.random() < 1 / (1 + math.exp(-2 * x[0])))
        exit_ts = ts + int(rng.integers(1, 48)) * 5 * M
        o = Outcome("target" if win else "stop", 1.0 if win else -1.0, 1.0, ts, exit_ts, 1.0, 1.0, 0.0, (win,))
        out.append(Cand(f"S:{i}", ts, "S", "5m", ts, True, None, 1.0, 0.9, (1.1,), x, o))
    return out


def test_the_model_of_a_fold_never_reads_its_future() -> None:
    """Poison every candidate at or after the test window, and every label not yet known then: nothing changes."""
    cands = _cands()
    fold = Fold(0, 2 * DAY_MS, 5 * DAY_MS, 6 * DAY_MS)
    clean = score_folds(cands, [fold], bar_ms=5 * M, jobs=1)[0]
    assert any(w != 0.0 for w in clean.weights)  # it did learn something: the test is not vacuous
    rng = np.random.default_rng(9)
    for c in cands:
        future_label = c.outcome is not None and c.outcome.exit_ts + 5 * M > fold.test_from
        if c.ts >= fold.test_from or future_label:
            assert c.outcome is not None
            kind = "stop" if c.outcome.exit_kind == "target" else "target"
            c.outcome = replace(c.outcome, exit_kind=kind, r=-c.outcome.r)
            if c.ts >= fold.test_from:
                c.x = list(rng.normal(size=len(FEATURES)) * 100)
    poisoned = score_folds(cands, [fold], bar_ms=5 * M, jobs=1)[0]
    assert poisoned == clean


def test_folds_roll_before_the_final_test() -> None:
    cfg = EvalConfig(Path("."), None, train_days=2, test_days=1, final_frac=0.2)
    folds, final = make_folds(0, 10 * DAY_MS, cfg)
    assert [(f.test_from, f.test_to) for f in folds] == [
        (2 * DAY_MS, 3 * DAY_MS),
        (3 * DAY_MS, 4 * DAY_MS),
        (4 * DAY_MS, 5 * DAY_MS),
        (5 * DAY_MS, 6 * DAY_MS),
        (6 * DAY_MS, 7 * DAY_MS),
        (7 * DAY_MS, 8 * DAY_MS),
    ]
    assert all(f.test_from - f.train_from == 2 * DAY_MS for f in folds)
    assert (final.index, final.test_from, final.train_from) == (FINAL, 8 * DAY_MS, 6 * DAY_MS)


def test_candidates_do_not_depend_on_later_bars(tmp_path: Path) -> None:
    """The engine's candidates up to T are the same when every bar after T is replaced by garbage."""
    d = _xrp(tmp_path)
    s = _settings()
    cfg = EvalConfig(d, ("XRPUSDT",))
    before, *_ = collect(s, cfg)
    lines = (d / "XRPUSDT-5m.csv").read_text().splitlines()
    cut = len(lines) * 3 // 4
    t_cut = int(lines[cut].split(",")[0])
    rng = np.random.default_rng(3)
    poisoned = lines[:cut]
    for line in lines[cut:]:
        t = line.split(",")[0]
        o, c = rng.uniform(0.5, 2.0, size=2)
        poisoned.append(f"{t},{o},{max(o, c) * 1.1},{min(o, c) * 0.9},{c},{rng.uniform(1, 1e7)}")
    (d / "XRPUSDT-5m.csv").write_text("\n".join(poisoned) + "\n")
    after, *_ = collect(s, cfg)
    early = [c for c in before if c.ts <= t_cut]
    assert len(early) > 50
    assert [(c.key, c.reason, c.x, c.stop) for c in early] == [
        (c.key, c.reason, c.x, c.stop) for c in after[: len(early)]
    ]


def test_evaluate_on_xrpusdt_writes_the_report_and_does_not_depend_on_jobs(tmp_path: Path) -> None:
    d = _xrp(tmp_path)
    s = _settings()
    base = EvalConfig(
        d,
        ("XRPUSDT",),
        train_days=1,
        test_days=0.5,
        draws=100,
        out=tmp_path / "out",
        funding_dir=require_data("funding"),
        ledger=tmp_path / "ledger.jsonl",
        name="one",
    )
    doc = evaluate(s, base)
    doc2 = evaluate(s, replace(base, jobs=2, name="two"))
    for k in ("walk_forward_test", "final", "engine_verdicts", "final_model"):
        assert json.dumps(doc[k], default=str) == json.dumps(doc2[k], default=str)
    assert doc2["configurations_tried"]["final_test_views_including_this_one"] == 2
    assert doc2["configurations_tried"]["earlier_configurations_on_this_data"] == 0  # same configuration
    wf = doc["walk_forward_test"]["groups"]
    assert wf["all candidates"]["count"] > 100
    assert 0 < wf["allowed: first_come"]["count"] < wf["reached the budget step"]["count"]
    md = (tmp_path / "out" / "one.md").read_text()
    assert "Final test" in md and "random from all candidates" in md
    assert (tmp_path / "out" / "one.png").read_bytes()[:4] == b"\x89PNG"
    assert read_funding(require_data("funding"), "XRPUSDT")[0] == (1637193600017, 0.0001)


def test_bad_inputs_say_why(tmp_path: Path) -> None:
    d = _xrp(tmp_path)
    with pytest.raises(EvaluationError, match="no walk-forward fold"):
        evaluate(_settings(), EvalConfig(d, ("XRPUSDT",), train_days=30, out=tmp_path / "o", ledger=None))
    with pytest.raises(EvaluationError, match="no candle file for NOPE"):
        evaluate(_settings(), EvalConfig(d, ("NOPE",), out=tmp_path / "o", ledger=None))
    (d / "XRPUSDT-funding.csv").write_text("funding_time,funding_rate\n123,abc\n")
    with pytest.raises(EvaluationError, match=r"XRPUSDT-funding.csv:2"):
        read_funding(d, "XRPUSDT")


def test_a_finished_runs_journal_evaluates_like_its_replay(tmp_path: Path) -> None:
    import asyncio

    from ultra_signals.bootstrap import build_runner
    from ultra_signals.journal.writer import Journal
    from ultra_signals.observability.metrics import Metrics
    from ultra_signals.sources.replay import ReplaySource
    from ultra_signals.transport.notifier import NullNotifier

    d = _xrp(tmp_path)
    s = _settings()
    url = f"sqlite:///{tmp_path}/j.db"
    journal = Journal(url)
    src = ReplaySource(d, ["XRPUSDT"], s.runtime.timeframes, None, None, s.runtime.warmup_bars)
    runner = build_runner(
        s, source=src, journal=journal, notifier=NullNotifier(), metrics=Metrics(), executor=False, serve_metrics=False
    )
    st = asyncio.run(runner.run())
    journal.close()
    assert st.crash is None
    base = EvalConfig(d, ("XRPUSDT",), train_days=1, test_days=0.5, draws=100, out=tmp_path / "out", name="replay")
    from_replay = evaluate(s, base)
    from_journal = evaluate(s, replace(base, journal=url, name="journal"))
    assert from_journal["candidates"] == from_replay["candidates"] > 100
    assert from_journal["engine_verdicts"] == from_replay["engine_verdicts"]
    for k in ("walk_forward_test", "final"):
        assert json.dumps(from_journal[k], default=str) == json.dumps(from_replay[k], default=str)
    with pytest.raises(EvaluationError, match="other sniper settings"):
        other = load_settings(overrides={"runtime.timeframes": "5m,15m,1h", "sniper.daily_signal_cap": 9}, environ={})
        evaluate(other, replace(base, journal=url))
    with pytest.raises(EvaluationError, match="no run 'nope'"):
        evaluate(s, replace(base, journal=url, run_id="nope"))


def test_gc_paused_restores_the_collector_as_it_was() -> None:
    import gc

    from ultra_signals.apps.evaluate import _gc_paused

    assert gc.isenabled()
    with pytest.raises(ValueError), _gc_paused():
        assert not gc.isenabled()
        raise ValueError
    assert gc.isenabled()
    gc.disable()
    try:
        with _gc_paused():
            pass
        assert not gc.isenabled()  # it was off: left off
    finally:
        gc.enable()
