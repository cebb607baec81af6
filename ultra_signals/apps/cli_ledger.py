"""``ultra-signals ledger [--day YYYY-MM-DD]``: the day's exchange income against the journal, and a CSV of it.

Read-only on the exchange (``GET /fapi/v1/income``, signed, paged by time) and on the journal.  Exit code 1
when anything disagrees, with each disagreement named; the CSV (``reports/ledger_<day>.csv``) has one row per
income item and how it matched.  See :mod:`ultra_signals.execution.ledger` for the rules.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ultra_signals.apps.cli_execution import JournalOpt, ProfileOpt, SecretsOpt, _journal, _settings, console

if TYPE_CHECKING:  # the rest is imported where used: the CLI starts without the venue client (httpx)
    from ultra_signals.core.config import Settings

PAGE = 1000


async def fetch_income(s: Settings, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
    """Every income item in ``[start_ms, end_ms)``, page by page (bounded: each page moves time forward)."""
    from ultra_signals.venues.binance.client import client_from_settings

    client = client_from_settings(s, name="ledger", trading=True)
    out: list[dict[str, Any]] = []
    try:
        since = start_ms
        for _ in range(1_000):
            rows = await client.signed(
                "GET", "/fapi/v1/income", {"startTime": since, "endTime": end_ms - 1, "limit": PAGE}
            )
            if not isinstance(rows, list) or not rows:
                break
            out += [r for r in rows if int(r["time"]) < end_ms]
            if len(rows) < PAGE:
                break
            since = int(rows[-1]["time"]) + 1
    finally:
        await client.aclose()
    return out


def ledger(
    day: Annotated[str | None, typer.Option("--day", help="UTC day YYYY-MM-DD (default: yesterday).")] = None,
    out: Annotated[Path | None, typer.Option("--out", help="CSV path (default reports/ledger_<day>.csv).")] = None,
    profile: ProfileOpt = None,
    secrets_file: SecretsOpt = None,
    journal_url: JournalOpt = None,
) -> None:
    """Reconcile one UTC day of fees, realised PnL and funding: exchange income history versus the journal."""
    import asyncio

    from ultra_signals.execution.ledger import reconcile_ledger, write_csv
    from ultra_signals.journal.trading import ExecStore
    from ultra_signals.venues.binance.errors import VenueError

    s = _settings(profile, secrets_file)
    try:
        d = datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=UTC) if day else None
    except ValueError:
        typer.echo(f"--day {day!r}: expected YYYY-MM-DD", err=True)
        raise typer.Exit(2) from None
    start = d or (datetime.now(UTC) - timedelta(days=1)).replace(hour=0, minute=0, second=0, microsecond=0)
    start_ms = int(start.timestamp() * 1000)
    end_ms = start_ms + 86_400_000
    try:
        income = asyncio.run(fetch_income(s, start_ms, end_ms))
    except VenueError as e:
        typer.echo(f"ledger: cannot read the income history: {e}", err=True)
        raise typer.Exit(2) from None
    j = _journal(s, journal_url)
    try:
        store = ExecStore(j.engine)
        trades = [t for t in store.closed_trades(s.redis.namespace, "binance", since_ms=start_ms)]
        rep = reconcile_ledger(income, store.fills(), trades, day_start_ms=start_ms, day_end_ms=end_ms)
    finally:
        j.close()
    label = start.strftime("%Y-%m-%d")
    path = write_csv(rep, out or Path(s.report.dir) / f"ledger_{label}.csv")
    for sym, fig in sorted(rep.totals.items()):
        console.print(f"{sym}: " + ", ".join(f"{k} {v:.6f}" for k, v in sorted(fig.items())))
    for p in rep.problems:
        console.print(f"MISMATCH {p}")
    console.print(
        f"ledger {label}: {len(rep.rows)} income items, {'clean' if rep.clean else 'MISMATCHES'}; csv: {path}"
    )
    raise typer.Exit(0 if rep.clean else 1)


def register(app: typer.Typer) -> None:
    app.command("ledger")(ledger)
