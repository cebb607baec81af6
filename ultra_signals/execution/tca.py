"""Transaction cost analysis: what each order cost against the price at the moment it was decided.

Per order (all its fills together): the reference price (arrival price at the decision for entries, the
trigger price for brackets), the volume-weighted fill price, slippage in bps (positive = worse), fees, time
from the order going live to its last fill, and the fill ratio.  Per trade (the journal's trade rows): gross PnL,
fees, the funding paid or received while it was open (Binance's ``ACCOUNT_UPDATE`` reason ``FUNDING_FEE``,
booked on the open trade), net PnL, and how it ended (``liq`` / ``adl``: closed by Binance itself).  Funding is
a cost of holding as real as the fee, so the report puts both side by side.  Pure functions over journal rows,
plus a report writer (markdown and a PNG of slippage over time) for ``ultra-signals tca --run ID``.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rich.table import Table


@dataclass(frozen=True, slots=True)
class TcaRow:
    run_id: str
    decision_id: str | None
    client_id: str
    symbol: str
    side: str
    kind: str
    order_ts: int
    last_fill_ts: int
    reference_price: float
    avg_price: float
    qty: float
    order_qty: float
    fees: float
    simulated: bool

    @property
    def slippage_bps(self) -> float:
        if self.reference_price <= 0:
            return 0.0
        d = self.avg_price - self.reference_price if self.side == "BUY" else self.reference_price - self.avg_price
        return d / self.reference_price * 10_000.0

    @property
    def time_to_fill_ms(self) -> int:
        return max(0, self.last_fill_ts - self.order_ts)

    @property
    def fill_ratio(self) -> float:
        return self.qty / self.order_qty if self.order_qty > 0 else 0.0

    @property
    def notional(self) -> float:
        return self.qty * self.avg_price


def tca_rows(fills: Iterable[Mapping[str, Any]]) -> list[TcaRow]:
    """One row per order from ``exec_fills`` rows, in order of first fill."""
    by_order: dict[str, list[Mapping[str, Any]]] = {}
    for f in fills:
        by_order.setdefault(str(f["client_id"]), []).append(f)
    rows = []
    for cid, fs in by_order.items():
        qty = sum(float(f["qty"]) for f in fs)
        vwap = sum(float(f["qty"]) * float(f["price"]) for f in fs) / qty if qty > 0 else 0.0
        first = fs[0]
        rows.append(
            TcaRow(
                run_id=str(first["run_id"]),
                decision_id=first.get("decision_id"),
                client_id=cid,
                symbol=str(first["symbol"]),
                side=str(first["side"]),
                kind=str(first["kind"]),
                order_ts=int(first["order_ts"]),
                last_fill_ts=max(int(f["ts"]) for f in fs),
                reference_price=float(first["reference_price"]),
                avg_price=vwap,
                qty=qty,
                order_qty=float(first["order_qty"]),
                fees=sum(float(f["fee"]) for f in fs),
                simulated=bool(first["simulated"]),
            )
        )
    return sorted(rows, key=lambda r: (r.last_fill_ts, r.client_id))


@dataclass(frozen=True, slots=True)
class TradeCost:
    """One trade's money: what the fills made, what fees and funding took, what is left."""

    decision_id: str
    symbol: str
    side: str
    status: str
    exit_kind: str | None
    gross: float
    fees: float
    funding: float  # + received, - paid
    pnl: float | None  # net (gross - fees + funding), set when closed


def trade_costs(trades: Iterable[Mapping[str, Any]]) -> list[TradeCost]:
    """From ``exec_trades`` rows: the trades that reached the venue (entered), in the order they were opened."""
    out = []
    for t in trades:
        if t.get("status") == "cancelled" or not float(t.get("entry_qty") or 0.0):
            continue
        out.append(
            TradeCost(
                decision_id=str(t["decision_id"]),
                symbol=str(t["symbol"]),
                side=str(t["side"]),
                status=str(t["status"]),
                exit_kind=t.get("exit_kind"),
                gross=float(t.get("gross_pnl") or 0.0),
                fees=float(t.get("fees") or 0.0),
                funding=float(t.get("funding") or 0.0),
                pnl=None if t.get("pnl") is None else float(t["pnl"]),
            )
        )
    return out


def funding_by_symbol(costs: Sequence[TradeCost]) -> dict[str, dict[str, float]]:
    """Per symbol and ``ALL``: trades, gross, fees, funding and net PnL of the closed ones."""
    out: dict[str, dict[str, float]] = {}
    for c in costs:
        for key in (c.symbol, "ALL"):
            a = out.setdefault(key, {"trades": 0.0, "gross": 0.0, "fees": 0.0, "funding": 0.0, "pnl": 0.0})
            a["trades"] += 1
            a["gross"] += c.gross
            a["fees"] += c.fees
            a["funding"] += c.funding
            a["pnl"] += c.pnl or 0.0
    return out


def _p95(xs: Sequence[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, round(0.95 * (len(s) - 1)))]


def aggregate(rows: Sequence[TcaRow]) -> dict[str, dict[str, float]]:
    """Per symbol and ``ALL``: orders, notional, fees, slippage mean/median/p95/max, fill time and ratio."""
    groups: dict[str, list[TcaRow]] = {}
    for r in rows:
        groups.setdefault(r.symbol, []).append(r)
    if rows:
        groups["ALL"] = list(rows)
    out: dict[str, dict[str, float]] = {}
    for sym, rs in groups.items():
        slip = [r.slippage_bps for r in rs]
        entries = [r.slippage_bps for r in rs if r.kind == "entry"]
        out[sym] = {
            "orders": float(len(rs)),
            "entries": float(len(entries)),
            "notional": sum(r.notional for r in rs),
            "fees": sum(r.fees for r in rs),
            "slippage_mean_bps": statistics.fmean(slip),
            "slippage_median_bps": statistics.median(slip),
            "slippage_p95_bps": _p95(slip),
            "slippage_max_bps": max(slip),
            "entry_slippage_mean_bps": statistics.fmean(entries) if entries else float("nan"),
            "time_to_fill_mean_ms": statistics.fmean(r.time_to_fill_ms for r in rs),
            "fill_ratio_mean": statistics.fmean(r.fill_ratio for r in rs),
        }
    return out


_SLIP_KEYS = (
    "slippage_mean_bps",
    "slippage_median_bps",
    "slippage_p95_bps",
    "slippage_max_bps",
    "entry_slippage_mean_bps",
)


def _md_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def _ts(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S")


def rich_table(rows: Sequence[TcaRow], title: str) -> Table:
    t = Table(title=title)
    for col in (
        "time (UTC)",
        "symbol",
        "kind",
        "side",
        "arrival/ref",
        "fill",
        "slip bps",
        "fees",
        "t→fill ms",
        "ratio",
    ):
        t.add_column(col, justify="right" if col not in ("symbol", "kind", "side", "time (UTC)") else "left")
    for r in rows:
        t.add_row(
            _ts(r.last_fill_ts),
            r.symbol,
            r.kind,
            r.side,
            f"{r.reference_price:.8g}",
            f"{r.avg_price:.8g}",
            f"{r.slippage_bps:+.2f}",
            f"{r.fees:.4f}",
            str(r.time_to_fill_ms),
            f"{r.fill_ratio:.2f}",
        )
    return t


def write_report(
    run_id: str,
    rows: Sequence[TcaRow],
    out_dir: str | Path,
    charts: bool = True,
    trades: Sequence[Mapping[str, Any]] = (),
) -> tuple[Path, Path | None]:
    """``tca_<run>.md`` (and ``tca_<run>.png`` when charts and fills exist); returns both paths.

    ``trades``: the run's ``exec_trades`` rows, for the per-trade fees, funding and PnL section.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = out / f"tca_{run_id}.md"
    png = out / f"tca_{run_id}.png" if charts and rows else None
    simulated = any(r.simulated for r in rows)
    lines = [f"# TCA — run `{run_id}`", ""]
    if simulated:
        lines += [
            "**SIMULATED**: paper-broker (what-if) fills from the slippage model, not exchange fills.",
            "",
        ]
    if not rows:
        lines += ["No fills were journaled for this run.", ""]
    else:
        agg = aggregate(rows)
        lines += [
            "## Per symbol",
            "",
            "| symbol | orders | entries | notional USDT | fees USDT | slip mean bps | median | p95 | max |"
            " entry slip mean | t→fill mean ms | fill ratio |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for sym, a in sorted(agg.items(), key=lambda kv: (kv[0] == "ALL", kv[0])):
            cells = [
                sym,
                f"{a['orders']:.0f}",
                f"{a['entries']:.0f}",
                f"{a['notional']:.2f}",
                f"{a['fees']:.4f}",
            ]
            cells += [f"{a[k]:+.2f}" for k in _SLIP_KEYS]
            cells += [f"{a['time_to_fill_mean_ms']:.0f}", f"{a['fill_ratio_mean']:.2f}"]
            lines.append(_md_row(cells))
        lines += [
            "",
            "Slippage is against the arrival price at the decision for entries and against the trigger"
            " price for stop and take-profit orders; positive is worse.",
            "",
            "## Orders",
            "",
            _md_row(["time (UTC)", "symbol", "kind", "side", "reference", "fill", "slip bps", "fees"])[:-2]
            + " | t→fill ms | fill ratio |",
            "|---|---|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in rows:
            cells = [
                _ts(r.last_fill_ts),
                r.symbol,
                r.kind,
                r.side,
                f"{r.reference_price:.8g}",
                f"{r.avg_price:.8g}",
            ]
            cells += [
                f"{r.slippage_bps:+.2f}",
                f"{r.fees:.4f}",
                str(r.time_to_fill_ms),
                f"{r.fill_ratio:.2f}",
            ]
            lines.append(_md_row(cells))
        if png is not None:
            _chart(rows, png, run_id)
            lines += ["", f"![slippage over time]({png.name})"]
    lines += _trade_section(trade_costs(trades))
    md.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return md, png


def _trade_section(costs: Sequence[TradeCost]) -> list[str]:
    """Markdown: fees, funding and PnL per symbol and per trade (nothing when no trade was entered)."""
    if not costs:
        return []
    lines = [
        "",
        "## Fees, funding and PnL per trade",
        "",
        "Funding is what the position paid (−) or received (+) at each funding time while it was open"
        " (Binance ACCOUNT_UPDATE, reason FUNDING_FEE); net PnL = gross − fees + funding.",
        "",
        "| symbol | trades | gross USDT | fees USDT | funding USDT | net PnL USDT (closed) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for sym, a in sorted(funding_by_symbol(costs).items(), key=lambda kv: (kv[0] == "ALL", kv[0])):
        lines.append(
            _md_row(
                [
                    sym,
                    f"{a['trades']:.0f}",
                    f"{a['gross']:+.4f}",
                    f"{a['fees']:.4f}",
                    f"{a['funding']:+.4f}",
                    f"{a['pnl']:+.4f}",
                ]
            )
        )
    lines += [
        "",
        "| trade | symbol | side | status | exit | gross | fees | funding | net PnL |",
        "|---|---|---|---|---|---:|---:|---:|---:|",
    ]
    for c in costs:
        exit_kind = {
            "liq": "liq (liquidated by Binance)",
            "adl": "adl (auto-deleveraged)",
            "settle": "settle (delisting)",
        }.get(c.exit_kind or "", c.exit_kind or "")
        pnl = "" if c.pnl is None else f"{c.pnl:+.4f}"
        lines.append(
            _md_row(
                [
                    c.decision_id,
                    c.symbol,
                    c.side,
                    c.status,
                    exit_kind,
                    f"{c.gross:+.4f}",
                    f"{c.fees:.4f}",
                    f"{c.funding:+.4f}",
                    pnl,
                ]
            )
        )
    return lines


def _chart(rows: Sequence[TcaRow], path: Path, run_id: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 4))
    for sym in sorted({r.symbol for r in rows}):
        for kind, marker in (("entry", "o"), ("stop", "v"), ("tp", "^"), ("exit", "x")):
            rs = [r for r in rows if r.symbol == sym and r.kind == kind]
            if rs:
                ax.scatter(
                    [datetime.fromtimestamp(r.last_fill_ts / 1000, tz=UTC) for r in rs],  # type: ignore[arg-type]
                    [r.slippage_bps for r in rs],
                    marker=marker,
                    label=f"{sym} {kind}",
                )
    ax.axhline(0, color="grey", linewidth=0.8)
    ax.set_ylabel("slippage (bps, + = worse)")
    ax.set_title(f"Fill slippage over time — {run_id}")
    ax.legend(fontsize=7)
    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
