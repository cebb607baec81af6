"""Operator commands over long polling (``getUpdates``), answered only in allowed chats.

Anyone can find a bot and message it, so a chat not in ``telegram.allowed_chat_ids`` gets no answer and
changes nothing; it is only counted (``telegram_updates_ignored_total``).  In an allowed *group* every member
may command.

/pause and /resume write the journal state key ``paused`` (``"1"``/``"0"``); the runner reads it and blocks
new signals with reason ``paused`` while it is set, so a pause survives restarts.  The update offset is stored
in the same state table: an update handled before a crash but not yet confirmed is handled again after it,
which is harmless (pause/resume are idempotent and replies are keyed by update id, so none is sent twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from ultra_signals.core.backoff import exponential_delay
from ultra_signals.transport.telegram.client import RetryAfter, TelegramClient
from ultra_signals.transport.telegram.format import kv_text, signals_text

if TYPE_CHECKING:
    from ultra_signals.observability.metrics import Metrics

log = logging.getLogger(__name__)

PAUSED_KEY = "paused"
OFFSET_KEY = "telegram.update_offset"
MAX_SIGNALS = 50

HELP = (
    "/status: mode, uptime, symbols and data freshness, counter backend\n"
    "/caps: signals in the current hour and day windows, and the caps\n"
    "/signals [n]: the last n allowed signals (default 5)\n"
    "/pause: block new signals (persists across restarts)\n"
    "/resume: allow new signals again\n"
    "/help: this list"
)


class OperatorView(Protocol):
    """What the runner shows to operators.  Values are plain data; nested mappings are shown inline.

    - ``status()``: e.g. ``{"mode": "shadow", "run_id": ..., "uptime_s": 812.0, "counter_backend": "redis",
      "freshness_s": {"BTCUSDT": 1.2, ...}}``
    - ``caps()``: e.g. ``{"hour": {"count": 1, "cap": 2}, "day": {"count": 3, "cap": 6}}``
    - ``recent_signals(n)``: the last ``n`` allowed signals, newest last, as ``Decision.as_record()`` dicts
      (``ts``, ``symbol``, ``side``, ``entry``, ``stop``, ``targets``; an optional ``time`` string is shown
      instead of ``ts``).
    """

    def status(self) -> Mapping[str, Any]: ...

    def caps(self) -> Mapping[str, Any]: ...

    def recent_signals(self, n: int) -> Sequence[Mapping[str, Any]]: ...


class StateStore(Protocol):
    """Persistent operator state: :class:`ultra_signals.journal.writer.Journal` satisfies it."""

    def get_state(self, key: str, default: str | None = None) -> str | None: ...

    def set_state(self, key: str, value: str) -> None: ...


def is_paused(state: StateStore) -> bool:
    return state.get_state(PAUSED_KEY, "0") == "1"


@dataclass(frozen=True, slots=True)
class Command:
    name: str
    args: tuple[str, ...]


def parse_command(text: str) -> Command | None:
    """``/signals@MyBot 3`` → ``Command("signals", ("3",))``; None for text that is not a command."""
    words = text.strip().split()
    if not words or not words[0].startswith("/") or len(words[0]) < 2:
        return None
    name = words[0][1:].split("@", 1)[0].lower()
    return Command(name, tuple(words[1:]))


Reply = Callable[[str, str, str | None], None]  # (chat_id, text, idempotency key)


class CommandHandler:
    def __init__(
        self,
        client: TelegramClient,
        reply: Reply,
        view: OperatorView,
        state: StateStore,
        allowed_chat_ids: Sequence[str],
        *,
        metrics: Metrics | None = None,
        poll_timeout_s: int = 25,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
    ) -> None:
        self.client = client
        self._reply = reply
        self.view = view
        self.state = state
        self.allowed = {str(c).strip() for c in allowed_chat_ids}
        self.metrics = metrics
        self.poll_timeout_s = poll_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.ignored = 0
        self.handled = 0
        self._task: asyncio.Task[None] | None = None

    # -- one update -----------------------------------------------------------------------------------------
    def handle_update(self, update: Mapping[str, Any]) -> str | None:
        """Act on one update; returns the reply sent (None when ignored)."""
        msg = update.get("message")
        if not isinstance(msg, Mapping):
            return None
        chat = msg.get("chat")
        chat_id = str(chat.get("id")) if isinstance(chat, Mapping) else ""
        if chat_id not in self.allowed:
            self.ignored += 1
            if self.metrics is not None:
                self.metrics.telegram_ignored.inc()
            log.info("telegram: ignored an update from chat %s (not in telegram.allowed_chat_ids)", chat_id or "?")
            return None
        text = msg.get("text")
        cmd = parse_command(text) if isinstance(text, str) else None
        if cmd is None:
            return None
        self.handled += 1
        answer = self.execute(cmd)
        self._reply(chat_id, answer, f"update:{update.get('update_id')}")
        return answer

    def execute(self, cmd: Command) -> str:
        try:
            return self._execute(cmd)
        except Exception as e:  # a view that fails must not stop the command loop
            log.error("telegram: /%s failed: %s", cmd.name, self.client.redact(str(e)))
            return f"/{cmd.name} failed: {type(e).__name__}"

    def _execute(self, cmd: Command) -> str:
        if cmd.name in ("help", "start"):
            return HELP
        if cmd.name == "status":
            data = dict(self.view.status())
            data["paused"] = "yes" if is_paused(self.state) else "no"
            return kv_text("Status", data)
        if cmd.name == "caps":
            return kv_text("Caps (current windows)", self.view.caps())
        if cmd.name == "signals":
            n = 5
            if cmd.args:
                if not cmd.args[0].isdigit() or int(cmd.args[0]) < 1:
                    return "usage: /signals [n], n a positive number"
                n = min(int(cmd.args[0]), MAX_SIGNALS)
            return signals_text(list(self.view.recent_signals(n)))
        if cmd.name == "pause":
            self.state.set_state(PAUSED_KEY, "1")
            return "Paused: new signals are blocked (reason: paused) until /resume. The pause survives restarts."
        if cmd.name == "resume":
            from ultra_signals.execution.breakers import resume_trading

            self.state.set_state(PAUSED_KEY, "0")
            trading = resume_trading(self.state, by="telegram")
            return f"Resumed: new signals are allowed again; {trading}."
        return f"Unknown command /{cmd.name}\n{HELP}"

    # -- long polling ---------------------------------------------------------------------------------------
    async def start(self) -> None:
        self._task = asyncio.create_task(self.run(), name="telegram-commands")

    async def aclose(self) -> None:
        if self._task is not None:  # a getUpdates in flight has no side effect: cancelling it is safe
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    async def run(self) -> None:
        raw = self.state.get_state(OFFSET_KEY)
        offset = int(raw) if raw and raw.lstrip("-").isdigit() else None
        failures = 0
        while True:
            try:
                updates = await self.client.get_updates(offset, self.poll_timeout_s)
                for u in updates:
                    uid = u.get("update_id")
                    if not isinstance(uid, int):
                        continue
                    try:
                        self.handle_update(u)
                    except Exception as e:
                        log.error("telegram: update %d: %s", uid, self.client.redact(str(e)))
                    offset = uid + 1
                if updates and offset is not None:
                    self.state.set_state(OFFSET_KEY, str(offset))
                failures = 0
            except RetryAfter as e:
                await asyncio.sleep(e.retry_after)
            except Exception as e:  # 409 (another poller or a webhook), outages, a journal error: retry, slower
                failures += 1
                delay = exponential_delay(failures - 1, self.backoff_initial_s, self.backoff_max_s)
                log.warning("telegram: command polling failed (retry in %.1fs): %s", delay, self.client.redact(str(e)))
                await asyncio.sleep(delay)
