"""Operator actions, transport-neutral: the CLI, Telegram and any HTTP API are thin adapters over :class:`Control`.

``Control(journal, view)`` answers status, caps, recent signals and positions from a
:class:`~ultra_signals.control.view.RunView` (the journal alone, or the running process's own view) and writes
pause, resume, stop-entry and kill to the journal, where every runner reads them.  Results are typed
dataclasses (:mod:`ultra_signals.control.model`); refusals are :class:`ControlError` with an operator-readable
message.
"""

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
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

#: Where each export lives: ``from ultra_signals.control import X`` imports only X's module (PEP 562), so a
#: command that asks for the status does not load the kill switch's brokers, and ``--help`` loads none of it.
_EXPORTS: dict[str, str] = {
    "Balance": "actions",
    "BalanceInfo": "model",
    "CapWindow": "model",
    "Caps": "model",
    "Close": "actions",
    "ConfirmationRequired": "model",
    "Control": "actions",
    "ControlError": "model",
    "Flatten": "actions",
    "ForceExitResult": "model",
    "Health": "model",
    "InvalidInput": "model",
    "JournalView": "view",
    "KillResult": "model",
    "MAX_PNL_DAYS": "actions",
    "MAX_SIGNALS": "model",
    "NotAvailable": "model",
    "PAUSED_KEY": "state",
    "PauseResult": "model",
    "PnlDay": "model",
    "PnlReport": "model",
    "Position": "model",
    "Refused": "model",
    "ResumeResult": "model",
    "RunInfo": "model",
    "RunView": "view",
    "SignalRow": "model",
    "StateStore": "state",
    "Status": "model",
    "StopEntryResult": "model",
    "TradingInfo": "model",
    "TripInfo": "model",
    "VersionInfo": "model",
    "health_state": "actions",
    "is_paused": "state",
    "parse_count": "actions",
    "parse_days": "actions",
    "parse_symbol": "actions",
    "set_paused": "state",
}


def __getattr__(name: str) -> object:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value  # the next lookup is a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


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
