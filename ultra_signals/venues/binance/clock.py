"""The server-time offset signed requests are stamped with.

A local clock that drifts (or jumps: NTP step, VM resume) makes every signed call fail with -1021.  So the
offset ``server - local`` is measured at start (``GET /fapi/v1/time``, half the round trip credited to each
way), refreshed every ``refresh_s`` and again whenever the server answers -1021.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field


def wall_ms() -> int:
    return int(time.time() * 1000)


@dataclass(slots=True)
class ServerClock:
    refresh_s: float = 900.0
    now_local_ms: Callable[[], int] = wall_ms
    offset_ms: int = 0
    measured_at_ms: int | None = None
    measurements: int = field(default=0)

    def stale(self) -> bool:
        if self.measured_at_ms is None:
            return True
        return self.now_local_ms() - self.measured_at_ms >= self.refresh_s * 1000.0

    def record(self, server_ms: int, sent_local_ms: int, received_local_ms: int) -> int:
        midpoint = (sent_local_ms + received_local_ms) // 2
        self.offset_ms = server_ms - midpoint
        self.measured_at_ms = received_local_ms
        self.measurements += 1
        return self.offset_ms

    def now_ms(self) -> int:
        """Our best estimate of the server's clock: what ``timestamp`` is set to."""
        return self.now_local_ms() + self.offset_ms
