"""The operator's flags in the journal's ``state`` table, owned here so every reader and writer agrees on them.

``paused`` (``"1"``/``"0"``) blocks new signals with reason ``paused``; the runner polls it, so a pause set
from a shell or from Telegram reaches a running runner within a second and survives restarts.  The trading
state (ACTIVE / REDUCING / HALTED) has its own key, owned by :mod:`ultra_signals.execution.breakers`.
"""

from __future__ import annotations

from typing import Protocol

PAUSED_KEY = "paused"


class StateStore(Protocol):
    """Persistent operator state: :class:`ultra_signals.journal.writer.Journal` satisfies it."""

    def get_state(self, key: str, default: str | None = None) -> str | None: ...

    def set_state(self, key: str, value: str) -> None: ...


def is_paused(state: StateStore) -> bool:
    return state.get_state(PAUSED_KEY, "0") == "1"


def set_paused(state: StateStore, value: bool) -> None:
    state.set_state(PAUSED_KEY, "1" if value else "0")
