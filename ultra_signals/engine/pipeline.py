"""The signal path for one closed bar: feature store → scoring → risk filters → sniper → decision.

Pure of I/O: the runner feeds it events and takes the decisions to the journal, metrics, notifier and executor.
That keeps replay, live and tests on exactly the same code, and makes the hot path measurable on its own.
"""

from __future__ import annotations

from collections.abc import Callable

from ultra_signals.core.caps import SniperCounters
from ultra_signals.core.clock import EventClock
from ultra_signals.core.config import Settings
from ultra_signals.core.decision import Candidate, Decision
from ultra_signals.core.events import BookDepth, BookTicker, Funding, Kline, MarketEvent, event_time
from ultra_signals.engine.risk_filters import (
    FilterContext,
    FlagFilter,
    MarketState,
    RiskFilter,
    first_refusal,
    standard_filters,
)
from ultra_signals.engine.scoring import levels, score
from ultra_signals.engine.sniper import TAKEN, Sniper, htf_trend
from ultra_signals.features.store import FeatureStore


class SignalEngine:
    def __init__(
        self,
        settings: Settings,
        counters: SniperCounters,
        run_id: str,
        clock: EventClock | None = None,
        *,
        paused: Callable[[], bool] = lambda: False,
        halted_reason: Callable[[], str | None] = lambda: None,
        wall_now_ms: Callable[[], int] | None = None,
    ) -> None:
        self.settings = settings
        self.run_id = run_id
        self.clock = clock or EventClock()
        self.store = FeatureStore(settings.features, settings.runtime.timeframes)
        self.market = MarketState()
        self.signal_tfs = frozenset(settings.runtime.signal_timeframes)
        #: Timeframes whose features someone reads: the signal timeframes and their MTF confirmation timeframes.
        #: Bars of the others (the 1m bars that only feed aggregation, a 1h nothing confirms against) are checked
        #: but skip the indicators: no decision could change (issue 13: "no per-event work that no one reads").
        mtf = settings.sniper.mtf_map
        self.feature_tfs = self.signal_tfs | frozenset(mtf[tf] for tf in self.signal_tfs if tf in mtf)
        self.filters: list[RiskFilter] = [
            FlagFilter("paused", lambda: "paused" if paused() else None),
            FlagFilter("trading_halted", halted_reason),
            *standard_filters(settings),
        ]
        self.sniper = Sniper(settings.sniper, counters, run_id)
        self.decide_from_ms = 0  # bars closing before this (close_time < it) are warm-up: features only
        # Live only: the exchange's clock (wall clock corrected by the measured server offset).  The event clock
        # moves with the bars, so after a reconnect a REST backfill of hours-old bars looks fresh to it; this one
        # does not.  None for replay/sim, whose decisions must not depend on when they are replayed.
        self.wall_now_ms = wall_now_ms
        self.max_data_age_ms = int(settings.filters.max_data_age_s * 1000)

    def on_event(self, ev: MarketEvent) -> Decision | None:
        """Advance the clock, update state, and decide if ``ev`` closes a bar of a signal timeframe."""
        if type(ev) is Kline:  # the common case first, without event_time's own type test
            self.clock.advance(ev.close_time + 1 if ev.closed else ev.open_time)
            return self.on_kline(ev) if ev.closed else None
        self.clock.advance(event_time(ev))
        if isinstance(ev, BookTicker):
            self.market.book[ev.symbol] = ev
        elif isinstance(ev, BookDepth):
            self.market.depth[ev.symbol] = ev
        elif isinstance(ev, Funding):
            self.market.funding[ev.symbol] = ev
        return None

    def on_kline(self, k: Kline) -> Decision | None:
        if k.timeframe not in self.feature_tfs:
            self.store.check(k)  # the same refusals as update(), without the indicators no one reads
            return None
        f = self.store.update(k)
        if f.open_time != k.open_time or k.timeframe not in self.signal_tfs or k.close_time < self.decide_from_ms:
            return None  # duplicate / late bar, a context-only timeframe, or warm-up history
        sc = score(f, self.settings.scoring)
        if sc.side is None:
            return None
        stop, targets = levels(sc.side, f.close, f.atr, self.settings.scoring)
        feats = f.as_dict()
        htf = self.settings.sniper.mtf_map.get(k.timeframe)
        hf = self.store.latest(k.symbol, htf) if htf else None
        feats["htf_trend"] = float(htf_trend(hf)) if hf is not None and hf.warm else 0.0
        cand = Candidate(
            symbol=k.symbol,
            timeframe=k.timeframe,
            bar_open_time=k.open_time,
            ts=k.close_time + 1,
            side=sc.side,
            score=sc.total,
            confidence=sc.confidence,
            entry=f.close,
            stop=stop,
            targets=targets,
            components=sc.components(),
            features=feats,
        )
        counts: dict[str, int] = {}
        taken_by: str | None = None
        if self.wall_now_ms is not None and self.wall_now_ms() - cand.ts > self.max_data_age_ms:
            return Decision(self.run_id, cand, False, "stale_data")  # features updated above; no signal, no slot
        ctx = FilterContext(cand, f, self.store, self.market, self.clock.now_ms())
        reason = first_refusal(self.filters, ctx)
        if reason is None:
            reason = self.sniper.check(ctx)
            if self.sniper.last_cap is not None:
                counts = dict(self.sniper.last_cap.counts)
                self.sniper.last_cap = None
            if reason == TAKEN:
                taken_by = self.sniper.taken_by
        return Decision(
            self.run_id,
            cand,
            reason is None,
            reason,
            counts=counts,
            not_evaluated=tuple(ctx.not_evaluated),
            taken_by=taken_by,
        )
