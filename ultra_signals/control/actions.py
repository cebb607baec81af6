"""The operator actions, once: every adapter (CLI, Telegram, HTTP) calls :class:`Control` and renders its result.

State changes go to the journal (the pause flag, the trading state, an event naming who acted), never to a
runner's memory: a runner picks them up within a second, one on another host over the same journal too, and
they survive restarts.  Reads go through a :class:`~ultra_signals.control.view.RunView`.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from ultra_signals.control.model import (
    MAX_SIGNALS,
    BalanceInfo,
    Caps,
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
    SignalRow,
    Status,
    StopEntryResult,
    TradingInfo,
    TripInfo,
    VersionInfo,
)
from ultra_signals.control.state import is_paused, set_paused
from ultra_signals.control.view import RunView, iso_s
from ultra_signals.core.config import redact_url
from ultra_signals.core.redaction import redact
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

if TYPE_CHECKING:
    from ultra_signals.core.config import Settings

#: Cancels every open order and closes every position on the exchange (built by :mod:`control.kill`).
Flatten = Callable[[], Awaitable[KillReport]]
#: Closes one symbol's position and its brackets and waits (bounded) for the exit fill (:mod:`control.exits`).
Close = Callable[[str], Awaitable[ForceExitResult]]
#: The account's equity where it is kept (:mod:`control.exits`).
Balance = Callable[[], Awaitable[BalanceInfo]]

#: Most days a PnL report covers (a Telegram message must stay readable).
MAX_PNL_DAYS = 90

_SYMBOL = re.compile(r"[A-Z0-9]{2,30}")

#: How many of the run's latest breaker trips a status shows.
STATUS_TRIPS = 5

STOP_ENTRY_BREAKER = "operator_stop_entry"


def trading_info(rec: StateRecord) -> TradingInfo:
    return TradingInfo(rec.state.value, rec.breaker, rec.detail, iso_s(rec.at), rec.by)


def health_state(trading: str, paused: bool) -> str:
    """RUNNING, PAUSED, REDUCING or HALTED: the trading state wins over the pause flag (it is stricter)."""
    if trading in ("HALTED", "REDUCING"):
        return trading
    return "PAUSED" if paused else "RUNNING"


def _day(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).date().isoformat()


def _market_ms(iso: str | None) -> int | None:
    if not iso:
        return None
    try:
        return int(datetime.fromisoformat(iso).timestamp() * 1000)
    except ValueError:
        return None


def parse_days(text: str, default: int = 1) -> int:
    """An operator's ``days`` (``/profit 7``): a positive whole number, at most :data:`MAX_PNL_DAYS`."""
    text = text.strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise InvalidInput(f"days must be a positive whole number, got {text[:20]!r}")
    return min(int(text), MAX_PNL_DAYS)


def parse_symbol(text: str) -> str:
    """``btcusdt`` → ``BTCUSDT``; anything but 2–30 letters and digits is refused."""
    sym = text.strip().upper()
    if not _SYMBOL.fullmatch(sym):
        raise InvalidInput(f"symbol must be letters and digits like BTCUSDT, got {text.strip()[:30]!r}")
    return sym


def parse_count(text: str, default: int = 5) -> int:
    """An operator's ``n`` (``/signals 3``): a positive whole number, at most :data:`MAX_SIGNALS`."""
    text = text.strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise InvalidInput(f"n must be a positive whole number, got {text[:20]!r}")
    return min(int(text), MAX_SIGNALS)


class Control:
    """Pause, resume, stop-entry, force-exit, kill, and the status, health, caps, signals, positions, PnL,
    balance, config and version reads.

    ``flatten`` is how a kill reaches the exchange (None: the paper broker, whose positions live in the
    runner, which flattens them itself when it reads the HALT); ``close`` and ``balance`` reach the executor
    that holds the positions (:mod:`ultra_signals.control.exits`; None where there is none: a refusal that
    says where to ask); ``settings`` feeds show-config and the staleness limit.  ``by`` on every write names
    the operator (``cli``, ``telegram:<user id>``, ``web:<who>``) in the journal.
    """

    def __init__(
        self,
        journal: Journal,
        view: RunView,
        *,
        flatten: Flatten | None = None,
        close: Close | None = None,
        balance: Balance | None = None,
        settings: Settings | None = None,
    ) -> None:
        self.journal = journal
        self.view = view
        self.flatten = flatten
        self.close = close
        self._balance = balance
        self.settings = settings

    @property
    def journal_label(self) -> str:
        return redact_url(self.journal.url)

    # -- reads -------------------------------------------------------------------------------------------
    def trading(self) -> TradingInfo:
        return trading_info(load_state(self.journal))

    def _trips(self, run_id: str | None) -> tuple[TripInfo, ...]:
        if run_id is None:
            return ()
        events = ExecStore(self.journal.engine).events(run_id=run_id, kind="trip")
        return tuple(TripInfo(e["name"], e["detail"], e["ts"]) for e in events[-STATUS_TRIPS:])

    def status(self) -> Status:
        """Run, pause flag, trading state with its cause, the cap windows and the run's latest breaker trips."""
        run = self.view.run_info()
        trips = self._trips(run.run_id if run is not None else None)
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

    def pnl(self, days: int = 1) -> PnlReport:
        """Realised PnL of the run's closed trades (net of fees and funding) today, per day and since the start,
        and the unrealised PnL of its open positions where a mark is known.

        Days are UTC days of each trade's close on the market clock; "today" is the day of the run's market clock
        (its latest event or decision), else of its latest close.
        """
        if days < 1:
            raise InvalidInput(f"days must be a positive whole number, got {days}")
        days = min(days, MAX_PNL_DAYS)
        run = self.view.run_info()
        trades = ExecStore(self.journal.engine).trades(run.run_id) if run is not None else []
        closed = [t for t in trades if t["status"] == "closed" and t["closed_ts"] is not None and t["pnl"] is not None]
        now_ms = _market_ms(run.market_time) if run is not None else None
        if now_ms is None and closed:
            now_ms = max(int(t["closed_ts"]) for t in closed)
        today = _day(now_ms) if now_ms is not None else None
        per_day: dict[str, list[float]] = {}
        for t in closed:
            per_day.setdefault(_day(int(t["closed_ts"])), []).append(float(t["pnl"]))
        rows: list[PnlDay] = []
        if today is not None:
            last = date.fromisoformat(today)
            for i in range(days - 1, -1, -1):
                d = (last - timedelta(days=i)).isoformat()
                pnls = per_day.get(d, [])
                rows.append(PnlDay(d, sum(pnls), len(pnls), sum(1 for p in pnls if p > 0)))
        todays = per_day.get(today or "", [])
        positions = [p for p in self.view.positions() if p.status == "open"]
        marked = [p.unrealized for p in positions if p.unrealized is not None]
        return PnlReport(
            run_id=run.run_id if run is not None else None,
            today=today,
            realized_today=sum(todays),
            trades_today=len(todays),
            wins_today=sum(1 for p in todays if p > 0),
            realized_total=sum(float(t["pnl"]) for t in closed),
            trades_total=len(closed),
            wins_total=sum(1 for t in closed if float(t["pnl"]) > 0),
            fees_total=sum(float(t["fees"] or 0.0) for t in closed),
            days=tuple(rows),
            open_positions=len(positions),
            marked=len(marked),
            unrealized=sum(marked) if marked else None,
        )

    async def balance(self) -> BalanceInfo:
        """The account's equity: the running process's broker (paper equity, or Binance's account as its user
        stream reports it), or Binance's account read directly when this process trades on Binance."""
        if self._balance is None:
            raise NotAvailable(
                "no balance here: the paper broker's equity lives in the running runner (ask it: Telegram "
                "/balance or the web page), and execution.broker is not binance"
            )
        try:
            return await self._balance()
        except ControlError:
            raise
        except Exception as e:  # the exchange failed to answer: say so, without a secret
            raise NotAvailable(f"balance: {type(e).__name__}: {redact(str(e), self._secrets())}") from None

    def health(self) -> Health:
        """Trading state (with the pause folded in), breaker history, data age per symbol, counter backend, the
        latest market time and tick-to-decision latency p50/p99 where this process knows them."""
        run = self.view.run_info()
        trading = self.trading()
        paused = is_paused(self.journal)
        ages = dict(run.data_age_s) if run is not None else {}
        max_age = self.settings.execution.breakers.max_data_staleness_s if self.settings is not None else None
        stale = tuple(sorted(s for s, a in ages.items() if a is not None and max_age is not None and a > max_age))
        p50, p99 = self.view.latency_ms()
        return Health(
            state=health_state(trading.state, paused),
            trading=trading,
            paused=paused,
            trips=self._trips(run.run_id if run is not None else None),
            run=run,
            data_age_s=ages,
            max_data_age_s=max_age,
            stale=stale,
            counter_backend=run.counter_backend if run is not None else None,
            last_event=run.market_time if run is not None else None,
            latency_p50_ms=p50,
            latency_p99_ms=p99,
            live=run is not None and run.uptime_s is not None,
        )

    def show_config(self) -> dict[str, Any]:
        """The effective settings with every secret shown as ``***`` (and passwords inside URLs hidden)."""
        if self.settings is None:
            raise NotAvailable("the settings are not known here")
        from ultra_signals.core.config import redacted_dict

        return redacted_dict(self.settings)

    def version(self) -> VersionInfo:
        from ultra_signals.observability.release import release

        r = release()
        return VersionInfo(str(r["version"]), r["git_commit"], sys.version.split()[0])

    def _secrets(self) -> set[str]:
        if self.settings is None:
            return set()
        from ultra_signals.core.config import secret_values

        return secret_values(self.settings)

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

    def refused(self, action: str, by: str, reason: str) -> None:
        """Journal a refused action (who asked, and why not): an adapter's own refusals (an allow-list) too."""
        ExecStore(self.journal.engine).event("refused", action, f"{reason} (by {by})")

    def persisting_cause(self, breaker: str | None) -> tuple[str | None, str | None]:
        """Whether what tripped ``breaker`` still holds: (the cause, None), (None, what could not be checked),
        or (None, None) when it is gone or the breaker has no lasting condition (losses, order errors, a kill)."""
        if breaker == "data_staleness":
            h = self.health()
            if h.stale:
                ages = ", ".join(f"{s} {h.data_age_s[s]:.0f} s" for s in h.stale if h.data_age_s.get(s) is not None)
                return f"data still stale: {ages} (max {h.max_data_age_s:g} s)", None
            if not h.live or h.max_data_age_s is None:
                return None, "data age (known only in the running process)"
        elif breaker == "counter_backend_lost":
            h = self.health()
            if h.counter_backend is None:
                return None, "the counter backend (known only in the running process)"
            if h.counter_backend != "redis":
                return f"the counter backend is still {h.counter_backend!r}, Redis is not back", None
        return None, None

    def resume(self, by: str, *, confirm: bool = False) -> ResumeResult:
        """Allow new signals again and clear a breaker halt or a stop-entry (back to ACTIVE).

        A circuit-breaker HALT (or a breaker's REDUCING) is cleared only with ``confirm`` and never while its
        cause persists (data still stale, Redis still gone): the refusal names the cause and is journaled.
        An operator's own stop-entry and a plain pause need no confirmation.
        """
        was = is_paused(self.journal)
        rec = load_state(self.journal)
        before = trading_info(rec)
        unchecked = None
        guarded = rec.state is TradingState.HALTED or (
            rec.state is TradingState.REDUCING and rec.breaker != STOP_ENTRY_BREAKER
        )
        if guarded:
            cause, unchecked = self.persisting_cause(rec.breaker)
            if cause is not None:
                self.refused("resume", by, f"{rec.state.value} by {rec.breaker}: {cause}")
                raise Refused(f"not resuming: trading is {rec.state.value} by {rec.breaker} and {cause}")
            if not confirm:
                raise ConfirmationRequired(
                    f"trading is {before.line}; resuming lets new orders through again: confirm to do it"
                )
        set_paused(self.journal, False)
        if was:
            self._event("unpause", by, "new signals allowed again")
        line = resume_trading(self.journal, by=by)
        return ResumeResult(
            was_paused=was, trading_before=before, trading=line, journal=self.journal_label, unchecked=unchecked
        )

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

    async def force_exit(self, symbol: str, *, confirm: bool, by: str) -> ForceExitResult:
        """Close one position at market and cancel its stop and target, through the executor; needs ``confirm``.

        Allowed in every trading state: an exit only reduces exposure.  The outcome (or the failure) is journaled
        with who asked (event kind ``force_exit``).
        """
        sym = parse_symbol(symbol)
        if not confirm:
            raise ConfirmationRequired(
                f"force-exit closes the position on {sym} at market and cancels its stop and target: confirm to do it"
            )
        if self.close is None:
            raise NotAvailable(
                "force-exit needs the executor that holds the position: the running process (Telegram, the web "
                "page), or ultra-signals force-exit on a Binance profile"
            )
        store = ExecStore(self.journal.engine)
        try:
            r = await self.close(sym)
        except ControlError as e:
            store.event("force_exit", by, {"symbol": sym, "refused": e.message})
            raise
        except Exception as e:  # the exit may or may not have reached the exchange: say so, keep the loop alive
            err = f"force-exit failed: {type(e).__name__}: {redact(str(e), self._secrets())}"
            r = ForceExitResult(sym, "", "unknown", 0.0, errors=(err,))
        r = replace(r, by=by)
        store.event(
            "force_exit",
            by,
            {"symbol": sym, "decision_id": r.decision_id, "status": r.status, "pnl": r.pnl, "errors": list(r.errors)},
        )
        return r
