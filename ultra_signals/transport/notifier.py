"""Notifier interface and the console sink.

The decision loop only ever calls :meth:`Notifier.publish`, which enqueues and returns at once; delivery happens
in a task of its own, so a slow terminal or a hanging Bot API never delays a decision.
"""

from __future__ import annotations

import asyncio
import contextlib
from dataclasses import dataclass
from typing import Protocol

from rich.console import Console

from ultra_signals.core.decision import Decision
from ultra_signals.transport.messages import Payload, PlainText, SignalCard, plain_text


@dataclass(frozen=True, slots=True)
class Notice:
    """A typed fact to announce; each sink renders ``payload`` itself (see :mod:`ultra_signals.transport.messages`)."""

    payload: Payload
    chat_key: str | None = None  # idempotency key (e.g. the decision id): the same key is never sent twice

    @property
    def kind(self) -> str:
        """``signal``, ``blocked``, ``breaker``, ``fallback``, ``start``, ``stop``, ``daily_summary``, ..."""
        return self.payload.kind

    @property
    def text(self) -> str:
        """The shared plain text of the payload."""
        return plain_text(self.payload)

    @classmethod
    def plain(cls, kind: str, text: str, chat_key: str | None = None) -> Notice:
        return cls(PlainText(kind, text), chat_key)

    @classmethod
    def signal(cls, decision: Decision, mode: str, simulated: bool = False) -> Notice:
        """A decision's card, keyed by the decision id."""
        return cls(SignalCard(decision, mode, simulated), decision.id)


class Notifier(Protocol):
    def publish(self, notice: Notice) -> None:
        """Enqueue; never blocks, never raises on delivery problems."""
        ...

    async def start(self) -> None: ...

    async def aclose(self) -> None:
        """Deliver what can be delivered, then stop."""
        ...


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
        self.console.print(notice.text, style=style, markup=False, soft_wrap=True)
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
