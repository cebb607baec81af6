"""What the operator actions see of a run: the :class:`RunView` interface and its journal-only implementation.

Two places answer operators.  A shell (``ultra-signals status``) has only the journal, so it must answer
whether or not a runner is up: :class:`JournalView`.  The running process (Telegram commands, later the web
page) also knows what only it holds — uptime, data age, the live counter backend and windows, the latest
prices — through the runner's view in :mod:`ultra_signals.live.view`.  Both return the same typed values.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Protocol

from ultra_signals.control.model import Caps, CapWindow, Position, RunInfo, SignalRow
from ultra_signals.core.caps import DAY_MS, HOUR_MS
from ultra_signals.journal import queries
from ultra_signals.journal.trading import TRADE_OPEN_STATES, ExecStore
from ultra_signals.journal.writer import Journal


class RunView(Protocol):
    def run_info(self) -> RunInfo | None:
        """The run this view is about; None when the journal has none yet."""
        ...

    def caps(self) -> Caps | None:
        """Allowed signals in the trailing hour and day windows and their caps; None before any decision."""
        ...

    def recent_signals(self, n: int) -> list[SignalRow]:
        """The last ``n`` allowed signals of the run's namespace, oldest first."""
        ...

    def positions(self) -> list[Position]:
        """Open and pending trades of the run, with their stop and target."""
        ...

    def latency_ms(self) -> tuple[float | None, float | None]:
        """Tick-to-decision latency (p50, p99) of the running process; (None, None) where it is not known."""
        ...


def iso_s(ts_s: float | None) -> str | None:
    return None if ts_s is None else datetime.fromtimestamp(ts_s, tz=UTC).isoformat(timespec="seconds")


def iso_ms(ts_ms: int | None) -> str | None:
    return None if ts_ms is None else iso_s(ts_ms / 1000)


def signal_rows(journal: Journal, namespace: str, n: int) -> list[SignalRow]:
    return [
        SignalRow(
            ts=int(r["ts"]),
            symbol=str(r["symbol"]),
            side=str(r["side"]),
            entry=float(r["entry"]),
            stop=float(r["stop"]),
            targets=tuple(float(t) for t in r["targets"]),
        )
        for r in queries.recent_allowed(journal.engine, namespace, n)
    ]


def open_positions(journal: Journal, run_id: str, marks: Mapping[str, float] | None = None) -> list[Position]:
    """The run's trades still pending or open, from the execution journal (what the executor committed)."""
    out = []
    for t in ExecStore(journal.engine).trades(run_id):
        if t["status"] not in TRADE_OPEN_STATES:
            continue
        mark = (marks or {}).get(t["symbol"])
        entry = t["entry_price"] or None
        unreal = None
        if mark is not None and entry is not None and t["qty"]:
            sign = 1.0 if t["side"] == "LONG" else -1.0
            unreal = sign * (mark - entry) * float(t["qty"])
        out.append(
            Position(
                decision_id=str(t["decision_id"]),
                symbol=str(t["symbol"]),
                side=str(t["side"]),
                status=str(t["status"]),
                qty=float(t["qty"]),
                entry=entry,
                stop=float(t["stop"]),
                target=float(t["take_profit"]),
                opened_ts=int(t["opened_ts"]),
                broker=str(t["broker"]),
                mark=mark,
                unrealized=unreal,
            )
        )
    return out


def _sniper_caps(settings_json: str | None) -> dict[str, Any]:
    try:
        sniper = json.loads(settings_json or "{}").get("sniper", {})
    except (ValueError, AttributeError):
        sniper = {}
    return {"hour": sniper.get("max_signals_per_hour"), "day": sniper.get("daily_signal_cap")}


class JournalView:
    """The journal's latest run, read from the journal alone (the runner may be down)."""

    def __init__(self, journal: Journal) -> None:
        self.journal = journal

    def _run(self) -> dict[str, Any] | None:
        run_id = self.journal.latest_run_id()
        return self.journal.run(run_id) if run_id else None

    def run_info(self) -> RunInfo | None:
        run = self._run()
        if run is None:
            return None
        now_ms = queries.last_decision_ms(self.journal.engine, run["run_id"])
        return RunInfo(
            run_id=run["run_id"],
            mode=run["mode"],
            profile=run["profile"],
            source=run["source"],
            simulated=bool(run["simulated"]),
            namespace=run["namespace"],
            status=run["status"],
            started=iso_s(run["started_at"]),
            ended=iso_s(run["ended_at"]),
            market_time=iso_ms(now_ms),
        )

    def caps(self) -> Caps | None:
        """Counted at the run's latest decision time (market time, the clock the caps run on), over the run's
        namespace, which is what the sniper counted against."""
        run = self._run()
        if run is None:
            return None
        now_ms = queries.last_decision_ms(self.journal.engine, run["run_id"])
        if now_ms is None:
            return None
        caps = _sniper_caps(run["settings_json"])
        windows = tuple(
            CapWindow(
                name,
                queries.allowed_count(self.journal.engine, run["namespace"], now_ms - length, now_ms),
                caps[name],
            )
            for name, length in (("hour", HOUR_MS), ("day", DAY_MS))
        )
        return Caps(windows, at_market_time=iso_ms(now_ms))

    def recent_signals(self, n: int) -> list[SignalRow]:
        run = self._run()
        return [] if run is None else signal_rows(self.journal, run["namespace"], n)

    def positions(self) -> list[Position]:
        run = self._run()
        return [] if run is None else open_positions(self.journal, run["run_id"])

    def latency_ms(self) -> tuple[float | None, float | None]:
        return None, None  # measured in the running process only
