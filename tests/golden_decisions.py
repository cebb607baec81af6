"""The stored decisions file: every candidate of a replay over the shared recordings, one JSON line each.

Refactors and optimisations must leave these bytes unchanged. Work that changes decisions on purpose regenerates
the file with ``python -m tests.golden_decisions`` in a commit that says which behaviour changed and shows the diff.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from ultra_signals.bootstrap import build_runner
from ultra_signals.core.config import load_settings
from ultra_signals.journal.writer import Journal
from ultra_signals.observability.metrics import Metrics
from ultra_signals.sources.replay import ReplaySource
from ultra_signals.transport.notifier import NullNotifier

GOLDEN = Path(__file__).parent / "golden"
ALTS = ["ADABTC", "DASHBTC", "ETCBTC", "ETHBTC", "LTCBTC", "NXTBTC", "TRXBTC", "XLMBTC", "XMRBTC", "ZECBTC"]
# Two shapes of real data: ten alt/BTC 5m series over the same 20 days (the caps and every sniper gate fire), and
# XRPUSDT perpetual 5m (the product's own market), each on the default shadow settings with the paper executor off.
SCENARIOS: dict[str, tuple[list[str], str]] = {
    "alts_5m_15m_1h": (ALTS, "5m,15m,1h"),
    "xrpusdt_5m_15m_1h": (["XRPUSDT"], "5m,15m,1h"),
}


def produce(name: str, klines: Path, out: Path, journal_url: str) -> None:
    symbols, timeframes = SCENARIOS[name]
    s = load_settings(overrides={"runtime.timeframes": timeframes, "execution.broker": "none"}, environ={})
    src = ReplaySource(klines, symbols, s.runtime.timeframes, None, None, s.runtime.warmup_bars)
    journal = Journal(journal_url)
    runner = build_runner(
        s,
        source=src,
        journal=journal,
        notifier=NullNotifier(),
        metrics=Metrics(),
        executor=False,
        serve_metrics=False,
        decisions_out=out,
    )
    stats = asyncio.run(runner.run())
    journal.close()
    if stats.crash is not None or stats.errors:
        raise RuntimeError(f"{name}: the replay failed: {stats.crash or stats.errors}")


def main() -> None:
    import tempfile

    klines = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "../shared/data/klines"
    with tempfile.TemporaryDirectory() as tmp:
        for name in SCENARIOS:
            produce(name, klines, GOLDEN / f"decisions_{name}.jsonl", f"sqlite:///{tmp}/{name}.db")
            print(f"wrote {GOLDEN / f'decisions_{name}.jsonl'}")


if __name__ == "__main__":
    main()
