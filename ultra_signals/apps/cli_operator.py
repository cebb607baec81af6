"""``ultra-signals status|pause|resume``: the operator commands of the Telegram bot, from a shell.

They work on the journal alone, so they answer even when the runner is down, and a pause set here holds for
the runner already running (it polls the state key) and for the next one.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from sqlalchemy import func, select

from ultra_signals.core.caps import DAY_MS, HOUR_MS
from ultra_signals.core.config import ConfigError, Settings, load_settings, redact_url
from ultra_signals.journal.models import decisions
from ultra_signals.journal.writer import Journal
from ultra_signals.transport.telegram.commands import PAUSED_KEY

ProfileOpt = Annotated[str | None, typer.Option("--profile", "-p", help="Settings profile (default: shadow).")]
SettingsOpt = Annotated[Path | None, typer.Option("--settings", help="Base settings file.")]
SecretsOpt = Annotated[Path | None, typer.Option("--secrets-file", help="Secrets file (KEY=value lines).")]
JournalOpt = Annotated[str | None, typer.Option("--journal-url", help="Journal DB URL (default: journal.url).")]


def _journal(profile: str | None, settings_file: Path | None, secrets: Path | None, url: str | None) -> Journal:
    try:
        settings: Settings = load_settings(profile, settings_file=settings_file, secrets_file=secrets)
    except ConfigError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2) from None
    return Journal(url or settings.journal.url, batch_size=settings.journal.batch_size)


def _iso(ts_s: float | None) -> str | None:
    return None if ts_s is None else datetime.fromtimestamp(ts_s, tz=UTC).isoformat(timespec="seconds")


def status_report(journal: Journal) -> dict[str, Any]:
    """The latest run, the pause flag, and the trailing hour/day counts of allowed signals with their caps.

    Counts are taken at the run's latest decision time (market time, the clock the caps run on), over the
    run's namespace, which is what the sniper counted against.
    """
    out: dict[str, Any] = {
        "journal": redact_url(journal.url),
        "paused": journal.get_state(PAUSED_KEY, "0") == "1",
    }
    run_id = journal.latest_run_id()
    run = journal.run(run_id) if run_id else None
    if run is None:
        out["run"] = None
        return out
    out["run"] = {
        "run_id": run["run_id"],
        "status": run["status"],
        "mode": run["mode"],
        "profile": run["profile"],
        "source": run["source"],
        "simulated": bool(run["simulated"]),
        "namespace": run["namespace"],
        "started": _iso(run["started_at"]),
        "ended": _iso(run["ended_at"]),
    }
    ns = run["namespace"]
    with journal.engine.connect() as c:
        now_ms = c.execute(select(func.max(decisions.c.ts)).where(decisions.c.run_id == run_id)).scalar()
        if now_ms is None:
            return out
        windows: dict[str, Any] = {"at_market_time": _iso(now_ms / 1000)}
        try:
            sniper = json.loads(run["settings_json"]).get("sniper", {})
        except (ValueError, AttributeError):
            sniper = {}
        caps = {"hour": sniper.get("max_signals_per_hour"), "day": sniper.get("daily_signal_cap")}
        for name, length in (("hour", HOUR_MS), ("day", DAY_MS)):
            n = c.execute(
                select(func.count())
                .select_from(decisions)
                .where(
                    decisions.c.namespace == ns,
                    decisions.c.allowed.is_(True),
                    decisions.c.ts > now_ms - length,
                    decisions.c.ts <= now_ms,
                )
            ).scalar_one()
            windows[name] = {"count": int(n), "cap": caps[name]}
    out["windows"] = windows
    return out


def _print_report(rep: dict[str, Any]) -> None:
    typer.echo(f"journal: {rep['journal']}")
    typer.echo(f"paused: {'yes' if rep['paused'] else 'no'}")
    run = rep.get("run")
    if run is None:
        typer.echo("no runs in the journal yet")
        return
    for k, v in run.items():
        typer.echo(f"{k}: {v if v is not None else '-'}")
    win = rep.get("windows")
    if win is None:
        typer.echo("windows: no decisions in this run yet")
        return
    typer.echo(f"windows at market time {win['at_market_time']}:")
    for name in ("hour", "day"):
        w = win[name]
        typer.echo(f"  {name}: {w['count']} / {w['cap'] if w['cap'] is not None else '?'}")


def status(
    profile: ProfileOpt = None,
    settings: SettingsOpt = None,
    secrets_file: SecretsOpt = None,
    journal_url: JournalOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Show the latest run, whether new signals are paused, and the current cap windows."""
    j = _journal(profile, settings, secrets_file, journal_url)
    try:
        rep = status_report(j)
    finally:
        j.close()
    if as_json:
        typer.echo(json.dumps(rep, indent=2))
    else:
        _print_report(rep)


def _set_paused(value: bool, profile: str | None, settings: Path | None, secrets: Path | None, url: str | None) -> None:
    j = _journal(profile, settings, secrets, url)
    trading = ""
    try:
        j.set_state(PAUSED_KEY, "1" if value else "0")
        if not value:  # resume also clears a circuit-breaker halt: only an operator may do that
            from ultra_signals.execution.breakers import resume_trading

            trading = resume_trading(j, by="cli")
    finally:
        j.close()
    if value:
        typer.echo(f"paused: new signals are blocked (reason: paused) until resume ({redact_url(j.url)})")
    else:
        typer.echo(f"resumed: new signals are allowed ({redact_url(j.url)}); {trading}")


def pause(
    profile: ProfileOpt = None,
    settings: SettingsOpt = None,
    secrets_file: SecretsOpt = None,
    journal_url: JournalOpt = None,
) -> None:
    """Block new signals (journal state ``paused``); a running runner picks it up; it survives restarts."""
    _set_paused(True, profile, settings, secrets_file, journal_url)


def resume(
    profile: ProfileOpt = None,
    settings: SettingsOpt = None,
    secrets_file: SecretsOpt = None,
    journal_url: JournalOpt = None,
) -> None:
    """Allow new signals again, and clear a circuit-breaker halt (back to ACTIVE)."""
    _set_paused(False, profile, settings, secrets_file, journal_url)


def register(app: typer.Typer) -> None:
    """Add ``status``, ``pause`` and ``resume`` to the main CLI."""
    app.command("status")(status)
    app.command("pause")(pause)
    app.command("resume")(resume)
