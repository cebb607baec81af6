"""Telegram Bot API sink: a durable outbox in the journal DB, a paced sender task, and operator commands.

The decision loop only ever writes a row into the outbox (:meth:`TelegramNotifier.publish`); everything that
can be slow or fail (the network, flood limits, Telegram outages) happens in the sender task, and what it had
not delivered when the process stopped is delivered by the next process over the same journal.
"""

from ultra_signals.transport.telegram.client import (
    PermanentError,
    RetryAfter,
    TelegramClient,
    TelegramError,
    TransientError,
)
from ultra_signals.transport.telegram.commands import CommandHandler
from ultra_signals.transport.telegram.notifier import TelegramNotifier, make_telegram_notifier

__all__ = [
    "CommandHandler",
    "PermanentError",
    "RetryAfter",
    "TelegramClient",
    "TelegramError",
    "TelegramNotifier",
    "TransientError",
    "make_telegram_notifier",
]
