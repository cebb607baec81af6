"""What a change of the exchange's universe does to trading: the entry gate, notices, and incidents.

The hourly refresh (:class:`ultra_signals.sources.universe.UniverseRefresher`) says what changed; this decides
what it means for the account: a symbol whose delisting is announced (or that left the universe) takes no new
entries; a new listing is announced (the runner picks it up at its next restart); and a delisted symbol on which
this executor still holds a position is an **incident** — journaled (``exec_events`` kind ``incident``, name
``delisted_position``) and alerted on every refresh while it lasts, never dropped silently.  The position itself
is left to the operator (and to its brackets on the exchange): closing it automatically on a contract in
settlement could trade at the worst price there is.
"""

from __future__ import annotations

import logging
from typing import Any

from ultra_signals.core.notices import Notice, Notifier
from ultra_signals.core.universe import EntryGate, UniverseChange

log = logging.getLogger(__name__)


class ListingWatch:
    """``on_change`` for the refresher, bound to one runner's gate, executor and notifier."""

    def __init__(self, gate: EntryGate, executor: Any, notifier: Notifier, *, mode: str, run_id: str) -> None:
        self.gate = gate
        self.executor = executor  # the runner's executor (or None); read for its open trades and its journal
        self.notifier = notifier
        self.mode = mode.upper()
        self.run_id = run_id
        self.incidents: list[str] = []

    def held(self) -> list[str]:
        """Symbols this executor holds a pending or open trade on (the lease holder holds the account's)."""
        portfolio = getattr(self.executor, "portfolio", None)
        if portfolio is None:
            return []
        return sorted({t.symbol for t in portfolio.open_trades()})

    def __call__(self, change: UniverseChange) -> None:
        self.gate.apply(change)
        held = set(self.held())
        for s, why in change.closed.items():
            self._notice(f"{s}: no new entries from now ({why})")
        for s in change.reopened:
            self._notice(f"{s}: entries allowed again")
        for s, why in change.listed.items():
            self._notice(f"{s}: listed and owned by this shard ({why}); watched from the next restart")
        for s, why in change.delisted.items():
            if s in held:
                self._incident(s, why)
            else:
                self._notice(f"{s}: left the universe ({why}); no new entries")

    def _notice(self, text: str) -> None:
        log.warning("universe: %s", text)
        self.notifier.publish(Notice.plain("universe", f"{self.mode} | UNIVERSE | {text}"))

    def _incident(self, symbol: str, why: str) -> None:
        detail = f"{symbol} left the universe ({why}) with a position still open: close or check it by hand"
        log.error("universe incident: %s", detail)
        self.incidents.append(symbol)
        store = getattr(self.executor, "store", None)
        if store is not None:
            store.event("incident", "delisted_position", detail, run_id=self.run_id)
        self.notifier.publish(Notice.plain("breaker", f"{self.mode} | DELISTED WITH A POSITION OPEN | {detail}"))
