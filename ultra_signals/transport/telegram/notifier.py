"""TelegramNotifier: ``publish()`` writes to the outbox and returns; a sender task delivers, paced, in order.

Delivery rules, per chat: the oldest pending row goes first and the next waits until it is sent or given up
(order matters: a "stop" must not overtake the signal before it).  429 blocks the chat for Telegram's
``retry_after``; network errors and 5xx retry with doubling backoff for as long as it takes (an outage must
not lose a signal); any other 4xx cannot succeed by repeating it, so the row is marked failed, reason logged.

Exactly once: a row is marked sent in the same moment its 200 arrives, and never picked again.  The one window
no Bot API client can close is a process killed after Telegram accepted a message but before that commit (or a
request that timed out after Telegram had accepted it): that row is sent again after the restart.  Clean
shutdowns never cut a request short, so they cannot cause it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Literal

from sqlalchemy import Engine

from ultra_signals.core.backoff import exponential_delay
from ultra_signals.core.config import ConfigError, Settings, TelegramEvents
from ultra_signals.core.decision import Decision
from ultra_signals.core.notices import Notice, SignalCard
from ultra_signals.journal.outbox import Outbox, OutboxRow
from ultra_signals.transport.telegram.client import PermanentError, RetryAfter, TelegramClient, TransientError
from ultra_signals.transport.telegram.format import digest_text, notice_parts, render
from ultra_signals.transport.telegram.pacing import Pacer, PacingRules

if TYPE_CHECKING:
    from ultra_signals.control import Control
    from ultra_signals.observability.metrics import Metrics
    from ultra_signals.transport.telegram.commands import CommandHandler

log = logging.getLogger(__name__)

EventMode = Literal["on", "silent", "off"]


class TelegramNotifier:
    """The Telegram sink of the :class:`~ultra_signals.transport.notifier.Notifier` protocol."""

    def __init__(
        self,
        client: TelegramClient,
        outbox: Outbox,
        *,
        chat_ids: Sequence[str],
        mode: str,
        events: TelegramEvents | None = None,
        metrics: Metrics | None = None,
        rules: PacingRules | None = None,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
        digest_interval_s: float = 3600.0,
        drain_timeout_s: float = 5.0,
        idle_poll_s: float = 1.0,
        allowed_chat_ids: Sequence[str] = (),
        allowed_users: Sequence[str] = (),
        commands_enabled: bool = True,
        poll_timeout_s: int = 25,
    ) -> None:
        self.client = client
        self.outbox = outbox
        self.chat_ids = list(dict.fromkeys(str(c) for c in chat_ids))
        self.mode = mode
        self.events: dict[str, EventMode] = (events or TelegramEvents()).model_dump()
        self.metrics = metrics
        self.pacer = Pacer(rules)
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.digest_interval_s = digest_interval_s
        self.drain_timeout_s = drain_timeout_s
        self.idle_poll_s = idle_poll_s
        self.allowed_chat_ids = [str(c) for c in allowed_chat_ids]
        self.allowed_users = [str(u) for u in allowed_users]
        self.commands_enabled = commands_enabled
        self.poll_timeout_s = poll_timeout_s
        self.commands: CommandHandler | None = None
        self._pending = outbox.pending_count()
        self._digest: list[Decision] = []
        self._digest_key: str | None = None
        self._digest_started = time.monotonic()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._stop: asyncio.Event | None = None
        self._finished: asyncio.Event | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._workers: dict[str, asyncio.Task[None]] = {}
        self._set_pending_gauge()

    # -- decision-loop side: never blocks on the network, never raises ------------------------------------
    def mode_of(self, kind: str) -> EventMode:
        return self.events.get(kind, "on")

    def publish(self, notice: Notice) -> None:
        """Write the notice into the outbox (or the blocked digest) and return; the sender task delivers."""
        try:
            kind = "blocked" if notice.kind == "blocked_digest" else notice.kind
            mode = self.mode_of(kind)
            if mode == "off":
                self._count(notice.kind, "off")
                return
            if notice.kind == "blocked":
                self._add_to_digest(notice)
                return
            self._enqueue(notice.kind, notice_parts(notice), notice.chat_key, mode == "silent", self.chat_ids)
        except Exception as e:  # a DB hiccup must not take the decision loop down with it
            self._count(notice.kind, "error")
            log.error("telegram: could not enqueue a %s notice: %s", notice.kind, self.client.redact(str(e)))

    def reply(self, chat_id: str, text: str, key: str | None) -> None:
        """Answer an operator command in its chat (through the outbox, so paced and retried like the rest)."""
        mode = self.mode_of("command_reply")
        if mode == "off":
            self._count("command_reply", "off")
            return
        self._enqueue("command_reply", render("command_reply", text), key, mode == "silent", [chat_id])

    def _enqueue(self, kind: str, parts: list[str], key: str | None, silent: bool, chats: Sequence[str]) -> None:
        for chat in chats:
            if self.outbox.enqueue(chat, kind, parts, key, silent):
                self._pending += len(parts)
                self._count(kind, "queued")
            else:
                self._count(kind, "duplicate")
        self._set_pending_gauge()
        self._notify_sender()

    def _notify_sender(self) -> None:
        """Wake the sender; safe from other threads (the Redis health thread publishes fallback notices)."""
        loop, wake = self._loop, self._wake
        if loop is None or wake is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is loop:
            wake.set()
        else:
            with contextlib.suppress(RuntimeError):  # the loop is already closed: the next start delivers
                loop.call_soon_threadsafe(wake.set)

    def _add_to_digest(self, notice: Notice) -> None:
        card = notice.payload
        if not isinstance(card, SignalCard):  # a blocked notice without its decision cannot be counted
            self._count("blocked", "untyped")
            return
        if not self._digest:
            self._digest_key = notice.chat_key
            self._digest_started = time.monotonic()
        self._digest.append(card.decision)
        self._count("blocked", "digested")

    def flush_digest(self) -> None:
        """Send the blocked candidates collected so far as one digest message (the digest task calls this)."""
        if not self._digest:
            return
        blocked, key = self._digest, self._digest_key
        period = time.monotonic() - self._digest_started
        self._digest, self._digest_key = [], None
        text = digest_text(self.mode, blocked, max(period, self.digest_interval_s))
        chat_key = f"digest:{key}:{len(blocked)}" if key else None
        parts = render("blocked_digest", text)
        self._enqueue("blocked_digest", parts, chat_key, self.mode_of("blocked") == "silent", self.chat_ids)

    @property
    def pending(self) -> int:
        """Rows waiting in this sender's outbox."""
        return self._pending

    # -- lifecycle ------------------------------------------------------------------------------------------
    def attach_commands(self, control: Control) -> CommandHandler | None:
        """Answer operator commands through ``control`` while this notifier runs (started and stopped with it).

        None when commands are disabled or no chat is allowed to command (polling would only be ignored).
        """
        from ultra_signals.transport.telegram.commands import CommandHandler

        if not self.commands_enabled:
            return None
        if not self.allowed_chat_ids:
            log.info("telegram: no telegram.allowed_chat_ids, operator commands are off")
            return None
        if self.mode in ("canary", "live") and not self.allowed_users:
            log.warning(
                "telegram: telegram.allowed_users is empty: in %s /resume, /stopentry, /forceexit and /kill are "
                "refused (group membership is not authentication)",
                self.mode,
            )
        self.commands = CommandHandler(
            self.client,
            self.reply,
            control,
            self.allowed_chat_ids,
            allowed_users=self.allowed_users,
            mode=self.mode,
            metrics=self.metrics,
            poll_timeout_s=self.poll_timeout_s,
            backoff_initial_s=self.backoff_initial_s,
            backoff_max_s=self.backoff_max_s,
        )
        return self.commands

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake, self._stop, self._finished = asyncio.Event(), asyncio.Event(), asyncio.Event()
        self._wake.set()  # deliver what a previous process left pending
        self._tasks = [asyncio.create_task(self._supervise(), name="telegram-sender")]
        if self.mode_of("blocked") != "off":
            self._tasks.append(asyncio.create_task(self._digest_loop(), name="telegram-digest"))
        if self.commands is not None:
            await self.commands.start()

    async def aclose(self) -> None:
        """Flush the digest, give the outbox ``drain_timeout_s`` to empty, let in-flight sends end, stop."""
        if self.commands is not None:
            await self.commands.aclose()
        self.flush_digest()
        if self._stop is None:
            await self.client.aclose()
            return
        deadline = time.monotonic() + self.drain_timeout_s
        while self._pending > 0 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self._stop.set()
        if self._wake is not None:
            self._wake.set()  # the supervisor may be waiting for work
        tasks = [*self._tasks, *self._workers.values()]
        if tasks:
            _, still = await asyncio.wait(tasks, timeout=self.client.timeout_s + 1.0)
            for t in still:
                t.cancel()
            for t in still:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await t
        self._tasks, self._workers = [], {}
        self._stop = self._wake = None
        self._loop = None
        self._pending = self.outbox.pending_count()
        self._set_pending_gauge()
        await self.client.aclose()
        if self._pending:
            log.info("telegram: %d message(s) left in the outbox; they go out after the next start", self._pending)

    # -- sender side ----------------------------------------------------------------------------------------
    def _stopping(self) -> bool:
        return self._stop is None or self._stop.is_set()

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when stopping."""
        assert self._stop is not None
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self._stop.wait(), timeout=max(0.0, seconds))

    async def _supervise(self) -> None:
        """Keep one worker per chat that has pending rows."""
        assert self._wake is not None
        while not self._stopping():
            self._wake.clear()
            try:
                chats = self.outbox.chats_with_pending()
            except Exception as e:
                log.error("telegram: outbox unreadable: %s", self.client.redact(str(e)))
                chats = []
            for chat in chats:
                w = self._workers.get(chat)
                if w is None or w.done():
                    self._workers[chat] = asyncio.create_task(self._deliver(chat), name=f"telegram-chat-{chat}")
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=self.idle_poll_s)

    async def _digest_loop(self) -> None:
        while not self._stopping():
            await self._sleep(self.digest_interval_s)
            if not self._stopping():
                self.flush_digest()

    async def _pace(self, chat: str) -> bool:
        """Wait for the pacing rules to let ``chat`` send; False if stopping first."""
        while True:
            wait = self.pacer.wait(chat, time.monotonic())
            if wait <= 0:
                return True
            if self._stopping():
                return False
            if wait == float("inf"):  # the overall limit is held by sends still in flight
                assert self._finished is not None
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(self._finished.wait(), timeout=1.0)
            else:
                await self._sleep(wait)

    def _send_finished(self, token: int) -> None:
        self.pacer.finish(token, time.monotonic())
        if self._finished is not None:
            self._finished.set()
            self._finished = asyncio.Event()

    async def _deliver(self, chat: str) -> None:
        try:
            await self._deliver_rows(chat)
        finally:  # a row enqueued while this worker was finishing gets a new worker at once
            if self._wake is not None:
                self._wake.set()

    async def _deliver_rows(self, chat: str) -> None:
        failures = 0
        while not self._stopping():
            try:
                row = self.outbox.next_pending(chat)
                if row is None or not await self._pace(chat):
                    return
                settled = await self._attempt(row)
            except Exception as e:  # the outbox DB failed: keep the row, try again after a backoff
                log.error("telegram: sender for chat %s: %s", chat, self.client.redact(str(e)))
                settled = False
            if settled:
                failures = 0
            else:
                failures += 1
                await self._sleep(exponential_delay(failures - 1, self.backoff_initial_s, self.backoff_max_s))

    async def _attempt(self, row: OutboxRow) -> bool:
        """One sendMessage; False when the row must be retried after a backoff (network error, 5xx)."""
        token = self.pacer.start(row.chat_id, time.monotonic())
        t0 = time.perf_counter()
        try:
            message_id = await self.client.send_message(row.chat_id, row.text, silent=row.silent)
        except RetryAfter as e:
            self._send_finished(token)
            self.pacer.block(row.chat_id, time.monotonic() + e.retry_after)
            self._observe(t0)
            self._count(row.kind, "rate_limited")
            self.outbox.note_attempt(row.id, str(e))
            log.warning("telegram: chat %s rate limited: %s", row.chat_id, e)
            return True  # not a failure: the pacer already holds the chat for retry_after
        except TransientError as e:
            self._send_finished(token)
            self._count(row.kind, "retry")
            self.outbox.note_attempt(row.id, str(e))
            log.warning("telegram: message %d to chat %s will be retried: %s", row.id, row.chat_id, e)
            return False
        except PermanentError as e:
            self._send_finished(token)
            self._observe(t0)
            self.outbox.mark_failed(row.id, str(e))
            self._settled(row, "failed")
            log.error("telegram: gave up on message %d (%s) to chat %s: %s", row.id, row.kind, row.chat_id, e)
            return True
        except BaseException:
            self._send_finished(token)
            raise
        self._send_finished(token)
        self._observe(t0)
        if self.outbox.mark_sent(row.id, message_id):
            self._settled(row, "sent")
        return True

    # -- metrics --------------------------------------------------------------------------------------------
    def _settled(self, row: OutboxRow, status: str) -> None:
        self._pending = max(0, self._pending - 1)
        self._count(row.kind, status)
        self._set_pending_gauge()

    def _observe(self, t0: float) -> None:
        if self.metrics is not None:
            self.metrics.telegram_send_ms.observe((time.perf_counter() - t0) * 1000.0)

    def _count(self, kind: str, status: str) -> None:
        if self.metrics is not None:
            self.metrics.telegram_messages.labels(kind=kind, status=status).inc()

    def _set_pending_gauge(self) -> None:
        if self.metrics is not None:
            self.metrics.telegram_pending.set(self._pending)


def make_telegram_notifier(settings: Settings, metrics: Metrics | None, engine: Engine, mode: str) -> TelegramNotifier:
    """The notifier for ``notifier.sink: telegram``; its outbox lives in the journal DB behind ``engine``."""
    t = settings.telegram
    if t.bot_token is None or not t.bot_token.get_secret_value().strip():
        raise ConfigError(
            "telegram.bot_token: required when notifier.sink is telegram; set "
            "ULTRA_SIGNALS_TELEGRAM__BOT_TOKEN or put it in the secrets file (never in YAML)"
        )
    if not t.chat_ids:
        raise ConfigError("telegram.chat_ids: at least one chat id is required when notifier.sink is telegram")
    client = TelegramClient(t.api_url, t.bot_token, timeout_s=t.send_timeout_s)
    rules = PacingRules(
        per_chat_interval_s=t.per_chat_interval_s,
        group_limit=t.group_per_minute,
        group_window_s=60.0,
        global_limit=t.global_per_second,
        global_window_s=1.0,
    )
    return TelegramNotifier(
        client,
        Outbox(engine, sender=f"{settings.redis.namespace}:{mode}"),
        chat_ids=t.chat_ids,
        mode=mode,
        events=t.events,
        metrics=metrics,
        rules=rules,
        backoff_initial_s=t.backoff_initial_s,
        backoff_max_s=t.backoff_max_s,
        digest_interval_s=t.digest_interval_s,
        drain_timeout_s=t.drain_timeout_s,
        allowed_chat_ids=t.allowed_chat_ids,
        allowed_users=t.allowed_users,
        commands_enabled=t.commands,
        poll_timeout_s=t.poll_timeout_s,
    )
