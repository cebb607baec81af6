"""Operator commands over long polling (``getUpdates``), answered only in allowed chats.

A thin adapter: it parses the message, calls :class:`ultra_signals.control.Control` (the same actions the CLI
calls) and renders the typed result with :mod:`ultra_signals.transport.telegram.format`.

Anyone can find a bot and message it, so a chat not in ``telegram.allowed_chat_ids`` gets no answer and
changes nothing; it is only counted (``telegram_updates_ignored_total``).  Group membership is not
authentication: when ``telegram.allowed_users`` (Telegram user ids) is set, only those users may change anything
(pause, resume, stop-entry, force-exit, kill); in canary and live, /resume, /stopentry, /forceexit and /kill
are refused outright while the list is empty.  A refusal is answered and journaled (event kind ``refused``).
The sender is journaled with every change (``by telegram:<user id>``, with ``@username`` when Telegram gives one).

Destructive actions ask first: ``/kill``, ``/forceexit SYMBOL`` and a ``/resume`` of a breaker's halt answer
with what they would do, and act only on a second message that adds ``confirm``.

The update offset is stored in the journal's state table: an update handled before a crash but not yet
confirmed is handled again after it, which is harmless (pause, resume and stop-entry are idempotent, /kill
halts an already halted run again, and replies are keyed by update id, so none is sent twice).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ultra_signals.control import (
    ConfirmationRequired,
    Control,
    ControlError,
    InvalidInput,
    parse_count,
    parse_days,
)
from ultra_signals.core.backoff import exponential_delay
from ultra_signals.transport.telegram.client import RetryAfter, TelegramClient
from ultra_signals.transport.telegram.format import (
    balance_text,
    caps_text,
    config_text,
    force_exit_text,
    health_text,
    kill_text,
    pause_text,
    pnl_text,
    positions_text,
    resume_text,
    signals_text,
    status_text,
    stop_entry_text,
    version_text,
)

if TYPE_CHECKING:
    from ultra_signals.observability.metrics import Metrics

log = logging.getLogger(__name__)

OFFSET_KEY = "telegram.update_offset"

HELP = (
    "/status: run, trading state and breakers, pause, data freshness, counter backend\n"
    "/health: trading state, breaker trips, data age per symbol, counter backend, latency\n"
    "/caps: signals in the current hour and day windows, and the caps\n"
    "/signals [n]: the last n allowed signals (default 5)\n"
    "/positions: open positions with their stop, target and unrealised PnL\n"
    "/profit [days]: realised PnL today and since start (per day for the last days), unrealised PnL\n"
    "/daily [days]: realised PnL per day (default 7)\n"
    "/balance: account equity (paper or Binance)\n"
    "/pause: block new signals (persists across restarts)\n"
    "/resume: allow new signals again (a breaker's halt asks for /resume confirm)\n"
    "/stopentry: no new entries, open positions keep their exits (REDUCING)\n"
    "/forceexit SYMBOL: close one position at market and cancel its brackets (asks for confirm)\n"
    "/kill: halt trading, cancel every order, close every position (asks for /kill confirm)\n"
    "/show_config: the effective settings, secrets hidden\n"
    "/version: release, git commit, python\n"
    "/help: this list"
)

#: Commands that change something: with ``telegram.allowed_users`` set, only those users may send them.
WRITE_COMMANDS = frozenset({"pause", "resume", "stopentry", "stop_entry", "forceexit", "force_exit", "kill"})
#: Commands that need ``telegram.allowed_users`` in canary and live (group membership is not authentication).
GUARDED_COMMANDS = frozenset({"resume", "stopentry", "stop_entry", "forceexit", "force_exit", "kill"})
GUARDED_MODES = frozenset({"canary", "live"})


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


def user_id_of(msg: Mapping[str, Any]) -> str | None:
    """The sender's Telegram user id (``message.from.id``), or None (a channel post has no ``from``)."""
    user = msg.get("from")
    uid = user.get("id") if isinstance(user, Mapping) else None
    return str(uid) if isinstance(uid, int) and not isinstance(uid, bool) else None


def sender_of(msg: Mapping[str, Any], chat_id: str) -> str:
    """Who acted, for the journal: the Telegram user id (and @username) when the update names one, else the chat."""
    uid = user_id_of(msg)
    if uid is None:
        return f"telegram:chat:{chat_id}"
    user = msg.get("from")
    name = user.get("username") if isinstance(user, Mapping) else None
    if isinstance(name, str) and name.replace("_", "").isalnum():
        return f"telegram:{uid} (@{name[:32]})"
    return f"telegram:{uid}"


def _confirmed(args: Sequence[str]) -> bool:
    """The second message of a confirmation: exactly the word ``confirm`` after the command (and its symbol)."""
    return [a.lower() for a in args] == ["confirm"]


class CommandHandler:
    def __init__(
        self,
        client: TelegramClient,
        reply: Reply,
        control: Control,
        allowed_chat_ids: Sequence[str],
        *,
        allowed_users: Sequence[str] = (),
        mode: str = "shadow",
        metrics: Metrics | None = None,
        poll_timeout_s: int = 25,
        backoff_initial_s: float = 1.0,
        backoff_max_s: float = 60.0,
    ) -> None:
        self.client = client
        self._reply = reply
        self.control = control
        self.state = control.journal
        self.allowed = {str(c).strip() for c in allowed_chat_ids}
        self.allowed_users = {str(u).strip() for u in allowed_users if str(u).strip()}
        self.mode = mode
        self.metrics = metrics
        self.poll_timeout_s = poll_timeout_s
        self.backoff_initial_s = backoff_initial_s
        self.backoff_max_s = backoff_max_s
        self.ignored = 0
        self.handled = 0
        self._task: asyncio.Task[None] | None = None

    # -- one update -----------------------------------------------------------------------------------------
    async def handle_update(self, update: Mapping[str, Any]) -> str | None:
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
        by = sender_of(msg, chat_id)
        refusal = self.authorize(cmd.name, user_id_of(msg))
        if refusal is not None:
            try:
                self.control.refused(cmd.name, by, refusal)
            except Exception as e:  # the refusal stands even if the journal cannot take it
                log.error("telegram: journaling a refused /%s: %s", cmd.name, self.client.redact(str(e)))
            answer = f"/{cmd.name}: refused: {refusal}"
        else:
            answer = await self.execute(cmd, by)
        self._reply(chat_id, answer, f"update:{update.get('update_id')}")
        return answer

    def authorize(self, command: str, user_id: str | None) -> str | None:
        """None when ``user_id`` may send ``command``; else why not (in the operator's words)."""
        if command not in WRITE_COMMANDS:
            return None
        if self.allowed_users:
            if user_id is None or user_id not in self.allowed_users:
                return f"user {user_id or '?'} is not in telegram.allowed_users"
            return None
        if command in GUARDED_COMMANDS and self.mode in GUARDED_MODES:
            return (
                f"in {self.mode}, /{command} needs telegram.allowed_users (the Telegram user ids allowed to "
                "trade-affecting commands); group membership is not authentication"
            )
        return None

    async def execute(self, cmd: Command, by: str = "telegram") -> str:
        try:
            return await self._execute(cmd, by)
        except ControlError as e:  # refused: the message is written for the operator
            return f"/{cmd.name}: {e.message}"
        except Exception as e:  # a journal that fails must not stop the command loop
            log.error("telegram: /%s failed: %s", cmd.name, self.client.redact(str(e)))
            return f"/{cmd.name} failed: {type(e).__name__}"

    async def _execute(self, cmd: Command, by: str) -> str:
        c = self.control
        arg = cmd.args[0] if cmd.args else ""
        match cmd.name:
            case "help" | "start":
                return HELP
            case "status":
                return status_text(c.status())
            case "health":
                return health_text(c.health())
            case "caps":
                return caps_text(c.caps())
            case "signals":
                try:
                    n = parse_count(arg)
                except InvalidInput:
                    return "usage: /signals [n], n a positive number"
                return signals_text(c.recent_signals(n))
            case "positions":
                return positions_text(c.positions())
            case "profit" | "daily":
                daily = cmd.name == "daily"
                try:
                    days = parse_days(arg, default=7 if daily else 1)
                except InvalidInput:
                    return f"usage: /{cmd.name} [days], days a positive number"
                return pnl_text(c.pnl(days), daily=daily)
            case "balance":
                return balance_text(await c.balance())
            case "show_config" | "showconfig" | "config":
                return config_text(c.show_config())
            case "version":
                return version_text(c.version())
            case "pause":
                return pause_text(c.pause(by))
            case "resume":
                try:
                    return resume_text(c.resume(by, confirm=_confirmed(cmd.args)))
                except ConfirmationRequired as e:
                    return f"{e.message}. Send /resume confirm to do it."
            case "stopentry" | "stop_entry":
                return stop_entry_text(c.stop_entry(by))
            case "forceexit" | "force_exit":
                if not arg or arg.lower() == "confirm":
                    return "usage: /forceexit SYMBOL, then /forceexit SYMBOL confirm"
                try:
                    return force_exit_text(await c.force_exit(arg, confirm=_confirmed(cmd.args[1:]), by=by))
                except ConfirmationRequired as e:
                    return f"{e.message}. Send /forceexit {arg.upper()} confirm to do it."
            case "kill":
                if not _confirmed(cmd.args):
                    return (
                        "/kill halts trading, cancels ALL open orders and closes ALL positions. "
                        "Send /kill confirm to do it."
                    )
                return kill_text(await c.kill(confirm=True, by=by))
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
                        await self.handle_update(u)
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
