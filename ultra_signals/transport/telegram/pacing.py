"""Bot API flood limits as pure rules: may this chat send now, and if not, how long to wait.

Telegram counts messages when it *receives* them, which we cannot see; we only know that a request was
received somewhere between our start of it and its answer.  So a send counts from its start until its answer
and then for a whole window after the answer, and one still in flight counts indefinitely.  With that rule no
window at Telegram's side can hold more than the limit, however the network delays each request (the tests
check this at a fake server's receipt times).  These are real-world rate limits, so they run on a monotonic
wall clock, not on the market clock that drives decisions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PacingRules:
    per_chat_interval_s: float = 1.0  # at most one message per chat in this many seconds
    group_limit: int = 20  # at most this many messages per group chat ...
    group_window_s: float = 60.0  # ... in this window
    global_limit: int = 30  # at most this many messages overall ...
    global_window_s: float = 1.0  # ... in this window


def is_group(chat_id: str) -> bool:
    """Groups and channels have negative ids in the Bot API."""
    return chat_id.strip().startswith("-")


@dataclass(slots=True)
class _Send:
    token: int
    chat: str
    start: float
    end: float | None = None  # None while in flight


def _window_wait(sends: list[_Send], limit: int, window: float, now: float) -> float:
    """Seconds until fewer than ``limit`` of ``sends`` still count against a window of ``window`` seconds."""
    expiries = sorted(math.inf if s.end is None else s.end + window for s in sends)
    active = [e for e in expiries if e > now]
    if len(active) < limit:
        return 0.0
    # The oldest len(active) - limit + 1 must expire first.
    return active[len(active) - limit] - now


class Pacer:
    """Bookkeeping of recent sends; :meth:`wait` answers, :meth:`start` / :meth:`finish` record.

    Single-threaded by design (one asyncio loop): call :meth:`wait` and, when it says 0, :meth:`start` without
    awaiting in between, so two chats cannot take the same free slot.
    """

    def __init__(self, rules: PacingRules | None = None) -> None:
        self.rules = rules or PacingRules()
        self._sends: list[_Send] = []
        self._blocked: dict[str, float] = {}
        self._next_token = 0

    def wait(self, chat: str, now: float) -> float:
        """Seconds before ``chat`` may start a send (0: now; ``inf``: after an in-flight send answers)."""
        r = self.rules
        waits = [self._blocked.get(chat, 0.0) - now, 0.0]
        mine = [s for s in self._sends if s.chat == chat]
        if r.per_chat_interval_s > 0:
            waits.append(_window_wait(mine, 1, r.per_chat_interval_s, now))
        if is_group(chat):
            waits.append(_window_wait(mine, r.group_limit, r.group_window_s, now))
        waits.append(_window_wait(self._sends, r.global_limit, r.global_window_s, now))
        return max(waits)

    def start(self, chat: str, now: float) -> int:
        """Record a send starting now; returns the token to pass to :meth:`finish`."""
        self._prune(now)
        self._next_token += 1
        self._sends.append(_Send(self._next_token, chat, now))
        return self._next_token

    def finish(self, token: int, now: float) -> None:
        """Record that the send got its answer (or failed) at ``now``."""
        for s in self._sends:
            if s.token == token and s.end is None:
                s.end = now
                return

    def block(self, chat: str, until: float) -> None:
        """Telegram asked this chat to wait (429 ``retry_after``)."""
        self._blocked[chat] = max(self._blocked.get(chat, 0.0), until)

    @property
    def in_flight(self) -> int:
        return sum(1 for s in self._sends if s.end is None)

    def _prune(self, now: float) -> None:
        r = self.rules
        horizon = max(r.per_chat_interval_s, r.group_window_s, r.global_window_s)
        self._sends = [s for s in self._sends if s.end is None or s.end + horizon > now]
        self._blocked = {c: t for c, t in self._blocked.items() if t > now}
