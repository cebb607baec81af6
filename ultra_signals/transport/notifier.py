"""The console sink (and the null one); the :class:`Notifier` interface and :class:`Notice` live in ``core.notices``.

The decision loop only ever calls :meth:`Notifier.publish`, which enqueues and returns at once; delivery happens
in a task of its own, so a slow terminal or a hanging Bot API never delays a decision.
"""

from __future__ import annotations

import asyncio
import contextlib

from rich.console import Console

from ultra_signals.core.notices import Notice, Notifier
from ultra_signals.transport.messages import plain_text

__all__ = ["ConsoleNotifier", "Notice", "Notifier", "NullNotifier"]


class ConsoleNotifier:
    """Prints notices from a background task."""

    def __init__(self, console: Console | None = None, max_queue: int = 10_000) -> None:
        self.console = console or Console(highlight=False)
        self._queue: asyncio.Queue[Notice] | None = None
        self._task: asyncio.Task[None] | None = None
        self._max = max_queue
        self.sent = 0
        self.dropped = 0

    def publish(self, notice: Notice) -> None:
        if self._queue is None:  # not started (e.g. a synchronous caller): print directly
            self._print(notice)
            return
        try:
            self._queue.put_nowait(notice)
        except asyncio.QueueFull:
            self.dropped += 1

    async def start(self) -> None:
        self._queue = asyncio.Queue(self._max)
        self._task = asyncio.create_task(self._run(), name="console-notifier")

    async def _run(self) -> None:
        assert self._queue is not None
        while True:
            notice = await self._queue.get()
            self._print(notice)
            self._queue.task_done()

    def _print(self, notice: Notice) -> None:
        style = {"signal": "bold green", "breaker": "bold red", "fallback": "yellow"}.get(notice.kind, "")
        self.console.print(plain_text(notice.payload), style=style, markup=False, soft_wrap=True)
        self.sent += 1

    async def aclose(self) -> None:
        if self._queue is not None and self._task is not None:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._queue.join(), timeout=5)
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self._queue = None


class NullNotifier:
    def publish(self, notice: Notice) -> None:
        return None

    async def start(self) -> None:
        return None

    async def aclose(self) -> None:
        return None
