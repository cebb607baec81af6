"""The operator actions, once: every adapter (CLI, Telegram, HTTP) calls :class:`Control` and renders its result.

State changes go to the journal (the pause flag, the trading state, an event naming who acted), never to a
runner's memory: a runner picks them up within a second, one on another host over the same journal too, and
they survive restarts.  Reads go through a :class:`~ultra_signals.control.view.RunView`.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from ultra_signals.control.model import (
    MAX_SIGNALS,
    Caps,
    ConfirmationRequired,
    InvalidInput,
    KillResult,
    NotAvailable,
    PauseResult,
    Position,
    ResumeResult,
    SignalRow,
    Status,
    StopEntryResult,
    TradingInfo,
    TripInfo,
)
from ultra_signals.control.state import is_paused, set_paused
from ultra_signals.control.view import RunView, iso_s
from ultra_signals.core.config import redact_url
from ultra_signals.execution.breakers import (
    StateRecord,
    TradingState,
    halt_trading,
    load_state,
    resume_trading,
    save_state,
)
from ultra_signals.execution.brokers.base import KillReport
from ultra_signals.journal.trading import ExecStore
from ultra_signals.journal.writer import Journal

#: Cancels every open order and closes every position on the exchange (built by :mod:`control.kill`).
Flatten = Callable[[], Awaitable[KillReport]]

#: How many of the run's latest breaker trips a status shows.
STATUS_TRIPS = 5

STOP_ENTRY_BREAKER = "operator_stop_entry"


def trading_info(rec: StateRecord) -> TradingInfo:
    return TradingInfo(rec.state.value, rec.breaker, rec.detail, iso_s(rec.at), rec.by)


def parse_count(text: str, default: int = 5) -> int:
    """An operator's ``n`` (``/signals 3``): a positive whole number, at most :data:`MAX_SIGNALS`."""
    text = text.strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise InvalidInput(f"n must be a positive whole number, got {text[:20]!r}")
    return min(int(text), MAX_SIGNALS)


class Control:
    """Pause, resume, stop-entry, kill, and the status, caps, signals and positions reads.

    ``flatten`` is how a kill reaches the exchange (None: the paper broker, whose positions live in the
    runner, which flattens them itself when it reads the HALT).  ``by`` on every write names the operator
    (``cli``, ``telegram:<user id>``) in the journal.
    """

    def __init__(self, journal: Journal, view: RunView, *, flatten: Flatten | None = None) -> None:
        self.journal = journal
        self.view = view
        self.flatten = flatten

    @property
    def journal_label(self) -> str:
        return redact_url(self.journal.url)

    # -- reads -------------------------------------------------------------------------------------------
    def trading(self) -> TradingInfo:
        return trading_info(load_state(self.journal))

    def status(self) -> Status:
        """Run, pause flag, trading state with its cause, the cap windows and the run's latest breaker trips."""
        run = self.view.run_info()
        trips: tuple[TripInfo, ...] = ()
        if run is not None:
            events = ExecStore(self.journal.engine).events(run_id=run.run_id, kind="trip")
            trips = tuple(TripInfo(e["name"], e["detail"], e["ts"]) for e in events[-STATUS_TRIPS:])
        return Status(
            journal=self.journal_label,
            paused=is_paused(self.journal),
            trading=self.trading(),
            run=run,
            caps=self.view.caps() if run is not None else None,
            trips=trips,
        )

    def caps(self) -> Caps:
        caps = self.view.caps()
        if caps is None:
            raise NotAvailable("no decisions yet: the cap windows start with the run's first decision")
        return caps

    def recent_signals(self, n: int = 5) -> list[SignalRow]:
        if n < 1:
            raise InvalidInput(f"n must be a positive whole number, got {n}")
        return self.view.recent_signals(min(n, MAX_SIGNALS))

    def positions(self) -> list[Position]:
        return self.view.positions()

    # -- writes ------------------------------------------------------------------------------------------
    def _event(self, action: str, by: str, detail: str) -> None:
        ExecStore(self.journal.engine).event("operator", action, f"{detail} (by {by})")

    def pause(self, by: str) -> PauseResult:
        """Block new signals (reason ``paused``) until a resume; exits and brackets are not touched."""
        was = is_paused(self.journal)
        set_paused(self.journal, True)
        if not was:
            self._event("pause", by, "new signals paused")
        return PauseResult(paused=True, changed=not was, journal=self.journal_label)

    def resume(self, by: str) -> ResumeResult:
        """Allow new signals again and clear a breaker halt or a stop-entry (back to ACTIVE)."""
        was = is_paused(self.journal)
        before = self.trading()
        set_paused(self.journal, False)
        if was:
            self._event("unpause", by, "new signals allowed again")
        line = resume_trading(self.journal, by=by)
        return ResumeResult(was_paused=was, trading_before=before, trading=line, journal=self.journal_label)

    def stop_entry(self, by: str) -> StopEntryResult:
        """REDUCING: no new entries; open positions keep their stop and target and exit as planned.

        Refused while HALTED: that is stricter, and lowering it must be a deliberate resume.
        """
        rec = load_state(self.journal)
        before = trading_info(rec)
        if rec.state is TradingState.HALTED:
            raise InvalidInput(
                f"trading is HALTED ({rec.breaker}: {rec.detail}); stop-entry would loosen it. "
                "Resume first if entries may stop while exits run"
            )
        if rec.state is TradingState.REDUCING:
            return StopEntryResult(False, before, before, self.journal_label)
        save_state(
            self.journal,
            StateRecord(TradingState.REDUCING, STOP_ENTRY_BREAKER, f"stop-entry by {by}", None, time.time(), by),
        )
        self._event("stop_entry", by, "no new entries, exits continue")
        return StopEntryResult(True, before, self.trading(), self.journal_label)

    async def kill(self, *, confirm: bool, by: str) -> KillResult:
        """HALT, then cancel every order and close every position on the exchange.  Needs ``confirm``."""
        if not confirm:
            raise ConfirmationRequired(
                "kill cancels ALL open orders, closes ALL positions and halts trading: confirm to do it"
            )
        # First the halt: no runner may enter while the exchange is being flattened.
        halt_trading(self.journal, "kill_switch", f"operator kill switch ({by})", by="kill")
        report = KillReport()
        if self.flatten is not None:
            try:
                report = await self.flatten()
            except Exception as e:  # the halt stands; say what the exchange did not do
                report = KillReport(errors=[f"flatten failed: {type(e).__name__}: {e}"])
        ExecStore(self.journal.engine).event("kill", by, {"flattened": report.flattened, "errors": report.errors})
        return KillResult(
            trading=self.trading(),
            exchange=self.flatten is not None,
            cancelled_orders=report.cancelled_orders,
            flattened=tuple(report.flattened),
            remaining_orders=report.remaining_orders,
            remaining_positions=report.remaining_positions,
            errors=tuple(report.errors),
        )
