"""The running process's :class:`~ultra_signals.control.view.RunView`: what only the runner knows, read live.

Reads only what the runner already keeps (its stats, counters, market clock, metrics registry and journal), so
answering /status or /caps costs the decision loop nothing but a few dictionary reads between events.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from ultra_signals.control.model import Caps, CapWindow, Position, RunInfo, SignalRow
from ultra_signals.control.view import iso_ms, iso_s, open_positions, signal_rows

if TYPE_CHECKING:
    from ultra_signals.live.runner import Runner


class RunnerView:
    def __init__(self, runner: Runner) -> None:
        self.runner = runner

    def run_info(self) -> RunInfo:
        r = self.runner
        st = r.stats
        ages: dict[str, float | None] = {
            sym: r.metrics.registry.get_sample_value("feed_last_event_age_seconds", {"symbol": sym})
            for sym in st.symbols
        }
        now_ms = r.clock.now_ms()
        return RunInfo(
            run_id=st.run_id,
            mode=st.mode,
            profile=st.profile,
            source=st.source,
            simulated=st.simulated,
            namespace=r.journal_ns,
            status=st.status,
            started=iso_s(st.wall_start) if st.wall_start else None,
            # An ended run's uptime stops at its end (the page may outlive the run while the report is written).
            uptime_s=(st.wall_end or time.time()) - st.wall_start if st.wall_start else None,
            market_time=iso_ms(now_ms) if now_ms else None,
            counter_backend=r.counters.backend,
            data_age_s=ages,
        )

    def caps(self) -> Caps:
        r = self.runner
        now_ms = r.clock.now_ms()
        counts = r.counters.window_counts(now_ms)
        s = r.settings.sniper
        caps = {"hour": s.max_signals_per_hour, "day": s.daily_signal_cap}
        return Caps(
            tuple(CapWindow(w, counts.get(w, 0), caps[w]) for w in ("hour", "day")),
            at_market_time=iso_ms(now_ms) if now_ms else None,
        )

    def recent_signals(self, n: int) -> list[SignalRow]:
        return signal_rows(self.runner.journal, self.runner.journal_ns, n)

    def latency_ms(self) -> tuple[float | None, float | None]:
        h = self.runner.stats.latencies_ms
        if not h:
            return None, None
        return h.quantile(0.50), h.quantile(0.99)

    def positions(self) -> list[Position]:
        r = self.runner
        marks = {sym: closes[-1][1] for sym, closes in r.stats.prices.items() if closes}
        return open_positions(r.journal, r.run_id, marks)

    # -- what the web page asks beyond the control reads (ultra_signals.web.app.LiveProbe) ------------------
    def latency_stats(self) -> tuple[float | None, float | None, int]:
        h = self.runner.stats.latencies_ms
        if not h:
            return None, None, 0
        return h.quantile(0.50), h.quantile(0.99), len(h)

    def prices(self) -> dict[str, list[tuple[int, float]]]:
        """The runner's bounded close series per symbol, copied (the page reads them from another thread)."""
        return {sym: list(pts) for sym, pts in list(self.runner.stats.prices.items())}

    def symbol_windows(self) -> dict[str, dict[str, int]]:
        r = self.runner
        now_ms = r.clock.now_ms()
        # Called from the web server's thread pool, never on the event loop: a Redis round trip here is fine.
        return {sym: dict(r.counters.window_counts(now_ms, sym)) for sym in list(r.stats.symbols)}
