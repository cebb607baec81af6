"""Operator actions, transport-neutral: the CLI, Telegram and any HTTP API are thin adapters over :class:`Control`.

``Control(journal, view)`` answers status, caps, recent signals and positions from a
:class:`~ultra_signals.control.view.RunView` (the journal alone, or the running process's own view) and writes
pause, resume, stop-entry and kill to the journal, where every runner reads them.  Results are typed
dataclasses (:mod:`ultra_signals.control.model`); refusals are :class:`ControlError` with an operator-readable
message.
"""

from ultra_signals.control.actions import Control, Flatten, parse_count
from ultra_signals.control.model import (
    MAX_SIGNALS,
    Caps,
    CapWindow,
    ConfirmationRequired,
    ControlError,
    InvalidInput,
    KillResult,
    NotAvailable,
    PauseResult,
    Position,
    ResumeResult,
    RunInfo,
    SignalRow,
    Status,
    StopEntryResult,
    TradingInfo,
    TripInfo,
)
from ultra_signals.control.state import PAUSED_KEY, StateStore, is_paused, set_paused
from ultra_signals.control.view import JournalView, RunView

__all__ = [
    "MAX_SIGNALS",
    "PAUSED_KEY",
    "CapWindow",
    "Caps",
    "ConfirmationRequired",
    "Control",
    "ControlError",
    "Flatten",
    "InvalidInput",
    "JournalView",
    "KillResult",
    "NotAvailable",
    "PauseResult",
    "Position",
    "ResumeResult",
    "RunInfo",
    "RunView",
    "SignalRow",
    "StateStore",
    "Status",
    "StopEntryResult",
    "TradingInfo",
    "TripInfo",
    "is_paused",
    "parse_count",
    "set_paused",
]
