"""Python's cyclic garbage collector, kept off the decision path and measured (issue 13, target 3).

Why: a full collection walks every object the collector tracks, and a runner holds many.  Its bar buffers are
objects (a whole-market runner: 500 symbols × 4 timeframes × 500 bars is a million ``Kline``s), on top of every
module, settings model and schema from start-up.  A full collection stops the event loop for all of that walk:
measured 60 ms for start-up's objects alone and 225 ms with 600,000 bars on the slow 2-core machine of
``docs/benchmarks.md`` ("Garbage collector").  A bar close arriving in it waits, so one collection is a p99 of its
own.  Three things here:

1. :meth:`GcControl.settle`, once the runner is built: one collection, then ``gc.freeze()`` of what is left
   (modules, settings, compiled schemas, the warm-up's state).  None of it becomes garbage; freezing puts it out of
   every later collection's walk (it is still freed by reference counting as usual).
2. Live runs: no automatic full collection (the third generation's threshold is out of reach).  The runner asks
   for one (:meth:`GcControl.maybe_collect`) at least every ``every_s`` seconds and only in the middle of a minute
   by the wall clock, away from bar closes: Binance sends a bar's close up to ~2 s after its boundary, and every
   timeframe closes on a minute.  The young generations still run automatically (each is a fraction of a ms).
   Replays keep the automatic full collection: no one waits on a replay's decision, and its bars fly past any
   wall-clock window.
3. Every collection's pause is observed in ``gc_pause_ms{generation}`` and the longest full one is kept, so what
   the collector costs is visible, not guessed.

One :class:`GcControl` per process at a time: the collector's settings are the process's.  :meth:`GcControl.close`
puts them back as they were (tests and benchmarks build many runners in one process).
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

from prometheus_client import Histogram

#: A full collection is due at most this often in a live run (s): it only frees cycles among long-lived objects.
FULL_EVERY_S = 600.0
#: The part of each wall-clock minute in which a full collection may run (ms into the minute): bar closes land
#: in the first ~2 s (Binance's sweep of symbols with no trade), so this leaves a wide margin either side.
QUIET_FROM_MS = 10_000
QUIET_TO_MS = 50_000
#: Out of reach: the third generation's automatic collection never fires (CPython counts second-generation
#: collections against it).
_NEVER = 1 << 30


def quiet(wall_ms: int) -> bool:
    """True in the part of the minute with no bar close near it."""
    return QUIET_FROM_MS <= wall_ms % 60_000 < QUIET_TO_MS


class GcControl:
    """See the module docstring.  ``pauses``: the histogram to observe into (None: nothing observed there)."""

    def __init__(
        self,
        *,
        live: bool,
        pauses: Histogram | None = None,
        every_s: float = FULL_EVERY_S,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.live = live
        self.every_s = every_s
        self._monotonic = monotonic
        self._children = tuple(pauses.labels(generation=str(g)) for g in range(3)) if pauses is not None else None
        self._t0 = 0.0
        self._threshold = gc.get_threshold()
        self._installed = False
        self._last_full = monotonic()
        #: Collections observed, by generation, and the longest full one (ms), for the run's report.
        self.collections = [0, 0, 0]
        self.max_full_ms = 0.0

    def _on_gc(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._t0 = time.perf_counter()
            return
        ms = (time.perf_counter() - self._t0) * 1000.0
        g = int(info["generation"])
        self.collections[g] += 1
        if g == 2 and ms > self.max_full_ms:
            self.max_full_ms = ms
        if self._children is not None:
            self._children[g].observe(ms)

    def settle(self) -> None:
        """Collect once, freeze what survives, then take over: observe every collection; live, no automatic full one."""
        if not self._installed:
            gc.callbacks.append(self._on_gc)
            self._installed = True
        gc.collect()
        gc.freeze()
        if self.live:
            g0, g1, _ = self._threshold
            gc.set_threshold(g0, g1, _NEVER)
        self._last_full = self._monotonic()

    def maybe_collect(self, wall_ms: int) -> bool:
        """Live: a full collection when one is due and the minute is quiet; True when it ran."""
        if not self.live or not self._installed:
            return False
        now = self._monotonic()
        if now - self._last_full < self.every_s or not quiet(wall_ms):
            return False
        gc.collect()
        self._last_full = now
        return True

    def close(self) -> None:
        """Put the collector back as it was (thresholds, callback); what was frozen rejoins the oldest generation."""
        if not self._installed:
            return
        gc.set_threshold(*self._threshold)
        gc.unfreeze()
        gc.callbacks.remove(self._on_gc)
        self._installed = False
