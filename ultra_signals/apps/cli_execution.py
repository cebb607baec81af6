"""``ultra-signals tca | rollout gate | rollout status``: the execution side of the operator's CLI.

These work from the journal alone, so they answer whether or not a runner is up.  ``kill``, ``resume`` and
``stop-entry`` are operator actions: :mod:`ultra_signals.apps.cli_operator` over :mod:`ultra_signals.control`.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

if TYPE_CHECKING:  # imported where used: the CLI starts without SQLAlchemy, matplotlib or the journal
    from ultra_signals.core.config import Settings
    from ultra_signals.journal.writer import Journal

console = Console(highlight=False)
ProfileOpt = Annotated[str | None, typer.Option("--profile", "-p", help="Settings profile (default: shadow).")]
SecretsOpt = Annotated[Path | None, typer.Option("--secrets-file", help="Secrets file (KEY=value lines).")]
JournalOpt = Annotated[str | None, typer.Option("--journal-url", help="Journal DB URL (default: journal.url).")]


def _settings(profile: str | None, secrets: Path | None) -> Settings:
    from ultra_signals.core.config import ConfigError, load_settings

    try:
        return load_settings(profile, secrets_file=secrets)
    except ConfigError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2) from None


def _journal(settings: Settings, url: str | None) -> Journal:
    from ultra_signals.journal.writer import Journal, JournalError

    try:
        return Journal(url or settings.journal.url, batch_size=settings.journal.batch_size)
    except JournalError as e:  # unreachable, or written by a newer release: the message says which and why
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


def tca(
    run: Annotated[str, typer.Option("--run", help="Run id (see `rollout status`).")],
    profile: ProfileOpt = None,
    journal_url: JournalOpt = None,
    out: Annotated[str | None, typer.Option(help="Report folder (default: report.dir).")] = None,
) -> None:
    """Transaction cost analysis of a run: the table here, tca_<run>.md and a slippage chart on disk."""
    from ultra_signals.core.config import redact_url
    from ultra_signals.execution.tca import rich_table, tca_rows, write_report
    from ultra_signals.journal.trading import ExecStore

    s = _settings(profile, None)
    j = _journal(s, journal_url)
    store = ExecStore(j.engine)
    rows = tca_rows(store.fills(run))
    trades = store.trades(run)
    if not rows and j.run(run) is None:
        typer.echo(f"run {run!r} is not in the journal {redact_url(j.url)}", err=True)
        raise typer.Exit(2)
    sim = " — SIMULATED (paper fills)" if any(r.simulated for r in rows) else ""
    console.print(rich_table(rows, f"TCA {run}{sim}"))
    funding = sum(float(t.get("funding") or 0.0) for t in trades)
    if trades:
        console.print(f"funding over {len(trades)} trades: {funding:+.4f} USDT (in the trades' net PnL)")
    md, png = write_report(run, rows, out or s.report.dir, charts=s.report.charts, trades=trades)
    console.print(f"report: {md}" + (f"\nchart: {png}" if png else ""))
    j.close()


rollout_app = typer.Typer(help="Gated rollout: shadow → canary → production phases.", no_args_is_help=True)


@rollout_app.command("gate")
def rollout_gate(
    run: Annotated[str, typer.Option("--run", help="A finished run id.")],
    profile: ProfileOpt = None,
    journal_url: JournalOpt = None,
) -> None:
    """Evaluate a finished run against its stage's criteria.

    Exit status: 0 GO and eligible for promotion, 1 NO-GO (or a GO that may not promote: simulated or historical
    data, or a live run too short), 2 usage or configuration error (unknown run, run still running).
    """
    from rich.table import Table

    from ultra_signals.apps.rollout import GateError, evaluate

    s = _settings(profile, None)
    j = _journal(s, journal_url)
    try:
        v = evaluate(j, run, s.report.dir, s.rollout)
    except GateError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2) from None
    t = Table(title=f"rollout gate — {v.stage} run {run}")
    t.add_column("criterion")
    t.add_column("kind")
    t.add_column("result")
    t.add_column("evidence")
    for c in v.criteria:
        res = "[green]PASS[/]" if c.passed else ("[yellow]—[/]" if c.kind == "info" else "[red]FAIL[/]")
        t.add_row(c.name, c.kind, res, c.evidence)
    console.print(t)
    nxt = f" → next stage: {v.next_stage}" if v.promotable and v.next_stage else ""
    color = "green" if v.promotable else ("magenta" if v.go else "red")
    console.print(f"[bold {color}]{v.label}[/]{nxt}")
    for c in v.blockers if v.go else []:
        console.print(f"not promotable: {c.name}: {c.evidence}")
    j.close()
    raise typer.Exit(0 if v.promotable else 1)


@rollout_app.command("status")
def rollout_status(profile: ProfileOpt = None, journal_url: JournalOpt = None) -> None:
    """The current stage, its runs and every gate verdict, from the journal."""
    from rich.table import Table

    from ultra_signals.apps.rollout import status
    from ultra_signals.execution.breakers import describe_state

    s = _settings(profile, None)
    j = _journal(s, journal_url)
    st = status(j)
    console.print(f"stage: [bold]{st['stage'] or 'none yet'}[/]  next: {st['next_stage']}  | {describe_state(j)}")
    t = Table(title="runs")
    for col in ("run_id", "profile", "mode", "source", "status"):
        t.add_column(col)
    for r in st["runs"][-20:]:
        t.add_row(*(str(r[k]) for k in ("run_id", "profile", "mode", "source", "status")))
    console.print(t)
    g = Table(title="gates")
    for col in ("run_id", "stage", "verdict"):
        g.add_column(col)
    for x in st["gates"]:
        g.add_row(str(x["run_id"]), str(x["stage"]), str(x["verdict"]))
    console.print(g)
    j.close()


def register(app: typer.Typer) -> None:
    """Add ``tca`` and ``rollout`` to the main CLI (``kill`` and ``resume`` are the operator module's)."""
    app.command("tca")(tca)
    app.add_typer(rollout_app, name="rollout")
