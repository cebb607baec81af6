"""Reconciliation: what the journal says is open versus what the venue says is open.

Run at start and after every reconnect of the private stream.  Anything that does not match halts new
entries and alerts: an unknown position is never adopted (the runner did not size it, has no stop for it)
and a journaled position missing on the venue is never dropped (it may have been closed by hand, liquidated,
or be about to reappear); an operator looks, fixes, and resumes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ultra_signals.execution.brokers.base import VenueSnapshot, parse_client_id


@dataclass(frozen=True, slots=True)
class Expected:
    """An open trade from the journal."""

    decision_id: str
    symbol: str
    signed_qty: float  # > 0 long, < 0 short; 0 while the entry is not confirmed filled
    stop_cid: str
    tp_cid: str
    confirmed: bool = True  # False: entry sent, fill not yet seen


@dataclass(frozen=True, slots=True)
class Discrepancy:
    kind: str  # unknown_position | missing_position | position_mismatch | missing_bracket | orphan_order | ...
    symbol: str
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} {self.symbol}: {self.detail}"


def reconcile(expected: Sequence[Expected], venue: VenueSnapshot, qty_tolerance: float = 1e-9) -> list[Discrepancy]:
    """Every mismatch between ``expected`` and ``venue``; empty when they agree."""
    out: list[Discrepancy] = []
    exp_by_symbol = {e.symbol: e for e in expected}
    venue_pos = {p.symbol: p for p in venue.positions if abs(p.qty) > qty_tolerance}
    open_cids = {o.client_id for o in venue.open_orders}
    for sym, p in venue_pos.items():
        e = exp_by_symbol.get(sym)
        if e is None:
            out.append(
                Discrepancy("unknown_position", sym, f"venue holds {p.qty:+g} @ {p.entry_price:g}, journal none")
            )
        elif not e.confirmed:
            out.append(Discrepancy("unconfirmed_entry", sym, f"venue holds {p.qty:+g}; entry fill not journaled"))
        elif abs(p.qty - e.signed_qty) > qty_tolerance:
            out.append(Discrepancy("position_mismatch", sym, f"venue {p.qty:+g} vs journal {e.signed_qty:+g}"))
    for e in expected:
        if not e.confirmed:
            continue
        if e.symbol not in venue_pos:
            out.append(Discrepancy("missing_position", e.symbol, f"journal holds {e.signed_qty:+g}, venue flat"))
            continue
        for label, cid in (("stop", e.stop_cid), ("take-profit", e.tp_cid)):
            if cid not in open_cids:
                out.append(Discrepancy("missing_bracket", e.symbol, f"{label} {cid} not open on the venue"))
    parsed_ids = (parse_client_id(c) for e in expected for c in (e.stop_cid, e.tp_cid))
    expected_digests = {p[1] for p in parsed_ids if p is not None}
    for o in venue.open_orders:
        parsed = parse_client_id(o.client_id)
        if parsed is None:
            out.append(Discrepancy("foreign_order", o.symbol, f"open {o.order_type} {o.client_id} not placed by us"))
        elif parsed[1] not in expected_digests:
            out.append(Discrepancy("orphan_order", o.symbol, f"open {o.order_type} {o.client_id} of no open trade"))
    return out
