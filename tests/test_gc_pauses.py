"""The run's hold on the garbage collector: full collections only when due and quiet (live), every pause observed,
and the collector put back as it was."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry, Histogram

from ultra_signals.observability.gc_pauses import FULL_EVERY_S, QUIET_FROM_MS, QUIET_TO_MS, GcControl, quiet

MINUTE = 60_000
T = 1_700_000_040_000  # a minute boundary


@pytest.fixture(autouse=True)
def _collector_restored() -> Iterator[None]:
    before = gc.get_threshold()
    yield
    assert gc.get_threshold() == before and gc.get_freeze_count() == 0  # every test closes what it took


def _hist() -> Histogram:
    return Histogram("gc_pause_ms", "test", ["generation"], registry=CollectorRegistry())


def _count(h: Histogram, generation: int) -> float:
    return next(
        s.value
        for m in h.collect()
        for s in m.samples
        if s.name.endswith("_count") and s.labels["generation"] == str(generation)
    )


def test_the_quiet_part_of_a_minute_keeps_clear_of_bar_closes() -> None:
    assert not quiet(T) and not quiet(T + 2_000)  # the boundary and Binance's ~2 s sweep of closes
    assert quiet(T + QUIET_FROM_MS) and quiet(T + 30_000) and not quiet(T + QUIET_TO_MS)
    assert not quiet(T + MINUTE - 1)  # just before the next boundary


def test_settle_freezes_start_up_and_live_takes_full_collections_only_when_asked() -> None:
    now = [100.0]
    h = _hist()
    c = GcControl(live=True, pauses=h, monotonic=lambda: now[0])
    try:
        c.settle()
        assert gc.get_freeze_count() > 1000  # start-up's objects, out of every later walk
        assert gc.get_threshold()[2] > 10**8  # no automatic full collection
        assert c.collections[2] == 1 and _count(h, 2) == 1  # settle's own, observed
        # Not due yet (it just ran), then due but at a bar close, then due and quiet.
        assert not c.maybe_collect(T + 30_000)
        now[0] += FULL_EVERY_S
        assert not c.maybe_collect(T + 1_000)
        assert c.collections[2] == 1
        assert c.maybe_collect(T + 30_000)
        assert c.collections[2] == 2 and _count(h, 2) == 2 and c.max_full_ms > 0
        assert not c.maybe_collect(T + 31_000)  # once per interval
    finally:
        c.close()


def test_young_collections_still_run_and_are_observed() -> None:
    h = _hist()
    c = GcControl(live=True, pauses=h)
    try:
        c.settle()
        before = c.collections[0]
        junk = [[i] for i in range(gc.get_threshold()[0] * 3)]  # allocations past the first threshold
        del junk
        assert c.collections[0] > before and _count(h, 0) == c.collections[0]
    finally:
        c.close()


def test_a_replay_keeps_the_automatic_full_collection_and_never_asks() -> None:
    before = gc.get_threshold()
    c = GcControl(live=False, monotonic=lambda: 1e9)
    try:
        c.settle()
        assert gc.get_threshold() == before
        assert not c.maybe_collect(T + 30_000)
    finally:
        c.close()
    assert c.collections[2] == 1


def test_close_is_safe_twice_and_without_settle() -> None:
    GcControl(live=True).close()
    c = GcControl(live=True)
    c.settle()
    c.close()
    c.close()
    assert c._on_gc not in gc.callbacks
