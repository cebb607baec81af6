"""Operator actions, transport-neutral: the CLI, Telegram and any HTTP API are thin adapters over :class:`Control`.

``Control(journal, view)`` answers status, caps, recent signals and positions from a
:class:`~ultra_signals.control.view.RunView` (the journal alone, or the running process's own view) and writes
pause, resume, stop-entry and kill to the journal, where every runner reads them.  Results are typed
dataclasses (:mod:`ultra_signals.control.model`); refusals are :class:`ControlError` with an operator-readable
message.
"""

from ultra_signals.control.actions import (
    MAX_PNL_DAYS,
    Balance,
    Close,
    Control,
    Flatten,
    health_state,
    parse_count,
    parse_days,
    parse_symbol,
)
from ultra_signals.control.model import (
    MAX_SIGNALS,
    BalanceInfo,
    Caps,
    CapWindow,
    ConfirmationRequired,
    ControlError,
    ForceExitResult,
    Health,
    InvalidInput,
    KillResult,
    NotAvailable,
    PauseResult,
    PnlDay,
    PnlReport,
    Position,
    Refused,
    ResumeResult,
    RunInfo,
    SignalRow,
    Status,
    StopEntryResult,
    TradingInfo,
    TripInfo,
    VersionInfo,
)
from ultra_signals.control.state import PAUSED_KEY, StateStore, is_paused, set_paused
from ultra_signals.control.view import JournalView, RunView

__all__ = [
    "MAX_PNL_DAYS",
    "MAX_SIGNALS",
    "PAUSED_KEY",
    "Balance",
    "BalanceInfo",
    "CapWindow",
    "Caps",
    "Close",
    "ConfirmationRequired",
    "Control",
    "ControlError",
    "Flatten",
    "ForceExitResult",
    "Health",
    "InvalidInput",
    "JournalView",
    "KillResult",
    "NotAvailable",
    "PauseResult",
    "PnlDay",
    "PnlReport",
    "Position",
    "Refused",
    "ResumeResult",
    "RunInfo",
    "RunView",
    "SignalRow",
    "StateStore",
    "Status",
    "StopEntryResult",
    "TradingInfo",
    "TripInfo",
    "VersionInfo",
    "health_state",
    "is_paused",
    "parse_count",
    "parse_days",
    "parse_symbol",
    "set_paused",
]
