"""``ultra-signals status|health|caps|signals|positions|pnl|balance|pause|resume|stop-entry|kill``: the operator
actions from a shell.

A thin adapter over :class:`ultra_signals.control.Control` (the same actions Telegram's commands call): it
parses options, calls control over the journal alone (:class:`~ultra_signals.control.JournalView`), so it
answers whether or not a runner is up, and prints the typed result (``--json`` prints it as JSON).  ``status``
first asks a running runner over its web API (:mod:`ultra_signals.apps.status_remote`: no SQLAlchemy, no settings
models), and shows its answer through the same :class:`~ultra_signals.control.Status`.  A change
made here (pause, resume, stop-entry, kill) reaches a running runner through the journal within a second and
holds for the next one.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

if TYPE_CHECKING:  # imported where used: ``--help`` starts without the journal (SQLAlchemy) and control
    from ultra_signals.apps.status_remote import Answer as RunnerAnswer
    from ultra_signals.control import BalanceInfo, Caps, Control, Health, PnlReport, Position, SignalRow, Status
    from ultra_signals.core.config import Settings

ProfileOpt = Annotated[str | None, typer.Option("--profile", "-p", help="Settings profile (default: shadow).")]
SettingsOpt = Annotated[Path | None, typer.Option("--settings", help="Base settings file.")]
SecretsOpt = Annotated[Path | None, typer.Option("--secrets-file", help="Secrets file (KEY=value lines).")]
JournalOpt = Annotated[str | None, typer.Option("--journal-url", help="Journal DB URL (default: journal.url).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON.")]

BY = "cli"
T = TypeVar("T")


def _settings(profile: str | None, settings_file: Path | None, secrets: Path | None) -> Settings:
    from ultra_signals.core.config import ConfigError, load_settings

    try:
        return load_settings(profile, settings_file=settings_file, secrets_file=secrets)
    except ConfigError as e:
        typer.echo(str(e), err=True)
        raise typer.Exit(2) from None


@contextmanager
def _control(
    profile: str | None, settings_file: Path | None, secrets: Path | None, url: str | None, *, kill: bool = False
) -> Iterator[tuple[Control, Settings]]:
    from ultra_signals.control import Control, JournalView
    from ultra_signals.journal.writer import Journal, JournalError

    s = _settings(profile, settings_file, secrets)
    try:
        j = Journal(url or s.journal.url, batch_size=s.journal.batch_size)
    except JournalError as e:  # unreachable, or written by a newer release: the message says which and why
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None
    flatten = None
    if kill:
        from ultra_signals.control.kill import exchange_flattener

        flatten = exchange_flattener(s)
    from ultra_signals.control.exits import exchange_balance

    try:
        yield Control(j, JournalView(j), flatten=flatten, balance=exchange_balance(s), settings=s), s
    finally:
        j.close()


def _call(fn: Callable[[], T], *, ask: bool = False) -> T:
    """Run one action; a refusal is the operator's message on stderr and exit code 2, never a traceback.

    ``ask``: a :class:`~ultra_signals.control.ConfirmationRequired` propagates (the caller prompts).
    """
    from ultra_signals.control import ConfirmationRequired, ControlError

    try:
        return fn()
    except ControlError as e:
        if ask and isinstance(e, ConfirmationRequired):
            raise
        typer.echo(e.message, err=True)
        raise typer.Exit(2) from None


def _ask(
    profile: str | None,
    settings_file: Path | None,
    secrets: Path | None,
    url: str | None,
    action: Callable[[Control], T],
) -> T:
    """One read or change over the journal: open control, run ``action`` through :func:`_call`, close the journal."""
    with _control(profile, settings_file, secrets, url) as (c, _):
        return _call(lambda: action(c))


def _show(result: T, as_json: bool, as_dict: Callable[[T], Any], lines: Callable[[T], list[str]]) -> None:
    """A single answer: JSON (``as_dict``) or its text lines."""
    if as_json:
        _json(as_dict(result))
    else:
        typer.echo("\n".join(lines(result)))


def _json(obj: Any) -> None:
    typer.echo(json.dumps(obj, indent=2, default=str))


def _rows(rows: Sequence[Any], as_json: bool, empty: str, line: Callable[[Any], str]) -> None:
    """A list answer: JSON, a line per row, or what an empty list means."""
    if as_json:
        _json([asdict(r) for r in rows])
    else:
        typer.echo("\n".join(line(r) for r in rows) if rows else empty)


# -- rendering --------------------------------------------------------------------------------------------------


def _caps_lines(caps: Caps) -> list[str]:
    lines = [f"windows at market time {caps.at_market_time or '-'}:"]
    lines += [f"  {w.name}: {w.used} / {w.cap if w.cap is not None else '?'}" for w in caps.windows]
    return lines


def _fleet(s: Settings, namespace: str | None, as_json: bool) -> None:
    import time

    import redis

    from ultra_signals.counters.fleet import read_fleet, state_of
    from ultra_signals.counters.redis_backend import connect, describe_target

    if not s.redis.enabled:
        typer.echo(
            "error: status --fleet reads the runners' heartbeats from Redis, and redis.enabled is false", err=True
        )
        raise typer.Exit(2)
    ns = namespace or s.redis.namespace
    client = connect(s.redis)
    try:
        beats = read_fleet(client, ns, s.profile)
    except redis.RedisError as e:
        typer.echo(f"error: redis at {describe_target(s.redis)}: {type(e).__name__}", err=True)
        raise typer.Exit(2) from None
    finally:
        client.close()
    now = time.time()
    if as_json:
        _json([{**asdict(b), "state": state_of(b, now), "beat_age_s": round(b.age_s(now), 1)} for b in beats])
        return
    if not beats:
        typer.echo(f"no runner has reported in namespace {ns!r} (profile {s.profile})")
        return
    typer.echo(f"fleet of namespace {ns!r}, profile {s.profile}: {len(beats)} runner(s)")
    for b in beats:
        age = "-" if b.max_data_age_s is None else f"{b.max_data_age_s:.0f}s"
        typer.echo(
            f"shard {b.shard:>5}  {state_of(b, now):<11} beat {b.age_s(now):5.0f}s ago  {b.host}:{b.pid}  "
            f"run {b.run_id}  symbols {len(b.symbols)}  data age {age}  backend {b.backend}  "
            f"trading {b.trading_state}  window hour {b.window_hour} day {b.window_day}  allowed {b.allowed_run}"
        )


def status_lines(st: Status) -> list[str]:
    lines = [f"journal: {st.journal}", f"paused: {'yes' if st.paused else 'no'}", f"trading: {st.trading.line}"]
    lines += [f"breaker trip: {t.breaker} ({t.detail})" for t in st.trips]
    run = st.run
    if run is None:
        return [*lines, "no runs in the journal yet"]
    for k in ("run_id", "status", "mode", "profile", "source", "simulated", "namespace", "started", "ended"):
        v = getattr(run, k)
        lines.append(f"{k}: {v if v is not None else '-'}")
    if st.caps is None:
        return [*lines, "windows: no decisions in this run yet"]
    return lines + _caps_lines(st.caps)


def health_lines(h: Health) -> list[str]:
    lines = [f"state: {h.state}", f"trading: {h.trading.line}", f"paused: {'yes' if h.paused else 'no'}"]
    if h.run is not None:
        lines.append(f"run: {h.run.run_id} ({h.run.status})")
    lines.append(f"last event (market time): {h.last_event or '-'}")
    for sym, age in h.data_age_s.items():
        lines.append(f"data age {sym}: {'no data yet' if age is None else f'{age:.1f}s'}")
    if h.stale:
        lines.append(f"stale: {', '.join(h.stale)} (max {h.max_data_age_s:g}s)")
    lines.append(f"counter backend: {h.counter_backend or 'unknown here (known in the running process)'}")
    if h.latency_p50_ms is not None and h.latency_p99_ms is not None:
        lines.append(f"latency: p50 {h.latency_p50_ms:.1f} ms, p99 {h.latency_p99_ms:.1f} ms")
    lines += [f"breaker trip: {t.breaker} ({t.detail})" for t in h.trips] or ["breaker trips: none"]
    return lines


def pnl_lines(r: PnlReport, *, daily: bool) -> list[str]:
    if r.run_id is None:
        return ["no runs in the journal yet"]
    if r.today is None:
        return [f"run {r.run_id}: no market time and no closed trade yet"]

    def trades(n: int, w: int) -> str:
        return f"{n} trade(s), {w} win(s)" if n else "no closed trades"

    lines = [f"run {r.run_id}: realised PnL, net of fees and funding (days in UTC market time)"]
    if not daily:
        lines += [
            f"today {r.today}: {r.realized_today:+.2f} USDT ({trades(r.trades_today, r.wins_today)})",
            f"since start: {r.realized_total:+.2f} USDT ({trades(r.trades_total, r.wins_total)})",
            f"fees paid: {r.fees_total:.2f} USDT",
        ]
    if daily or len(r.days) > 1:
        lines += [f"{d.day}: {d.realized:+.2f} USDT ({trades(d.trades, d.wins)})" for d in r.days]
    if r.open_positions:
        unreal = "mark unknown here" if r.unrealized is None else f"{r.unrealized:+.2f} USDT"
        lines.append(f"open: {r.open_positions} position(s), unrealised {unreal}")
    else:
        lines.append("open: no positions")
    return lines


def _balance_lines(b: BalanceInfo) -> list[str]:
    start = "" if b.start_equity is None else f" (started at {b.start_equity:.2f})"
    return [f"balance ({b.source}): {b.equity:.2f} {b.asset}{start}" + (f"; {b.detail}" if b.detail else "")]


def _signal_line(r: SignalRow) -> str:
    from ultra_signals.transport.messages import fmt_price

    tp = "/".join(fmt_price(t) for t in r.targets)
    when = datetime.fromtimestamp(r.ts / 1000, tz=UTC).strftime("%Y-%m-%d %H:%MZ")
    return f"{when} {r.symbol} {r.side} ENTRY:{fmt_price(r.entry)} SL:{fmt_price(r.stop)} TP:{tp}"


def _position_line(p: Position) -> str:
    from ultra_signals.transport.messages import fmt_price

    entry = fmt_price(p.entry) if p.entry is not None else "pending"
    return (
        f"{p.symbol} {p.side} {p.status} qty {p.qty:.8g} ENTRY:{entry} SL:{fmt_price(p.stop)} "
        f"TP:{fmt_price(p.target)} ({p.broker}, decision {p.decision_id})"
    )


# -- commands ---------------------------------------------------------------------------------------------------


def status(
    profile: ProfileOpt = None,
    settings: SettingsOpt = None,
    secrets_file: SecretsOpt = None,
    journal_url: JournalOpt = None,
    as_json: JsonOpt = False,
    fleet: Annotated[bool, typer.Option("--fleet", help="Every runner of the namespace, from Redis.")] = False,
    namespace: Annotated[
        str | None, typer.Option(help="With --fleet: the namespace (default redis.namespace).")
    ] = None,
) -> None:
    """Show the latest run, whether new signals are paused, the trading state and breakers, and the cap windows.

    Asked of the runner started from this folder over its web API when it is up (var/run/current.json names it),
    else read from the journal; the last line says which.  --profile, --settings, --secrets-file or
    --journal-url read that journal.  With ``--fleet``: every runner sharing the namespace's caps, from the
    heartbeats they keep in Redis.
    """
    if fleet:
        _fleet(_settings(profile, settings, secrets_file), namespace, as_json)
        return
    why = None
    if not _journal_asked(profile, settings, secrets_file, journal_url):
        why = _runner_miss
        if why is None:
            from ultra_signals.apps.status_remote import ask_runner

            answer = ask_runner()
            if answer.status is not None:
                show_runner_status(answer, as_json)
                return
            why = answer.why
    st = _ask(profile, settings, secrets_file, journal_url, lambda c: c.status())
    _show(st, as_json, lambda r: r.as_dict(), status_lines)
    if why is not None:
        _source(f"source: journal (no runner answered: {why})", as_json)
    elif not as_json:
        typer.echo("source: journal (named by the flags)")


#: Why the running runner did not answer, when :func:`ultra_signals.apps.cli.main` already asked it before typer
#: parsed the command line (the journal path then does not ask again, and a 2-second timeout is not paid twice).
_runner_miss: str | None = None


def _journal_asked(profile: str | None, settings: Path | None, secrets: Path | None, url: str | None) -> bool:
    """A flag that names settings, secrets or a journal asks about that journal, not about whatever runner is up."""
    if profile is not None or settings is not None or secrets is not None or url is not None:
        return True
    cli = sys.modules.get("ultra_signals.apps.cli")
    return getattr(cli, "_settings_origin", None) == "--settings"  # the global ``--settings`` flag


def _source(line: str, as_json: bool) -> None:
    """Which source answered: the last line, or on stderr under ``--json`` (stdout stays the one JSON document)."""
    typer.echo(line, err=as_json)


def status_from_runner(as_json: bool) -> bool:
    """``status`` and ``status --json`` before typer parses anything: True when the running runner answered.

    Why before typer: typer 0.29 converts every command's parameters through pydantic TypeAdapters, 0.06 s of CPU
    that an answer from the runner does not need (docs/benchmarks.md).  When it does not answer, the reason is kept
    for :func:`status`, which typer then runs on the journal.
    """
    global _runner_miss
    from ultra_signals.apps.status_remote import ask_runner

    answer = ask_runner()
    if answer.status is None:
        _runner_miss = answer.why
        return False
    show_runner_status(answer, as_json)
    return True


def show_runner_status(answer: RunnerAnswer, as_json: bool) -> None:
    """The running runner's status, shown as the journal's is (same lines, same JSON) plus where it came from."""
    assert answer.status is not None
    _show(answer.status, as_json, lambda r: r.as_dict(), status_lines)
    _source(f"source: running runner at {answer.url}", as_json)


def caps(
    profile: ProfileOpt = None,
    settings: SettingsOpt = None,
    secrets_file: SecretsOpt = None,
    journal_url: JournalOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Allowed signals in the trailing hour and day windows of the latest run, and their caps."""
    _show(_ask(profile, settings, secrets_file, journal_url, lambda c: c.caps()), as_json, asdict, _caps_lines)


def signals(
    n: Annotated[int, typer.Option("-n", help="How many (newest last).")] = 5,
    profile: ProfileOpt = None,
    settings: SettingsOpt = None,
    secrets_file: SecretsOpt = None,
    journal_url: JournalOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """The last n allowed signals of the latest run's namespace."""
    rows = _ask(profile, settings, secrets_file, journal_url, lambda c: c.recent_signals(n))
    _rows(rows, as_json, "no allowed signals yet", _signal_line)


def positions(
    profile: ProfileOpt = None,
    settings: SettingsOpt = None,
    secrets_file: SecretsOpt = None,
    journal_url: JournalOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Open and pending trades of the latest run, with their stop and target."""
    rows = _ask(profile, settings, secrets_file, journal_url, lambda c: c.positions())
    _rows(rows, as_json, "no open positions", _position_line)


def health(
    profile: ProfileOpt = None,
    settings: SettingsOpt = None,
    secrets_file: SecretsOpt = None,
    journal_url: JournalOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Trading state, breaker trips, the latest market time (and, in the running process, data age, counter
    backend and latency: ask it over Telegram /health or the web page)."""
    h = _ask(profile, settings, secrets_file, journal_url, lambda c: c.health())
    _show(h, as_json, lambda r: r.as_dict(), health_lines)


def pnl(
    days: Annotated[int, typer.Option("--days", "-d", help="Per-day rows for the last DAYS days.")] = 1,
    daily: Annotated[bool, typer.Option("--daily", help="Only the per-day rows (default 7 days).")] = False,
    profile: ProfileOpt = None,
    settings: SettingsOpt = None,
    secrets_file: SecretsOpt = None,
    journal_url: JournalOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Realised PnL of the latest run today, per day and since its start; open positions' unrealised PnL."""
    if daily and days == 1:
        days = 7
    r = _ask(profile, settings, secrets_file, journal_url, lambda c: c.pnl(days))
    _show(r, as_json, lambda x: x.as_dict(), lambda x: pnl_lines(x, daily=daily))


def balance(
    profile: ProfileOpt = None,
    settings: SettingsOpt = None,
    secrets_file: SecretsOpt = None,
    journal_url: JournalOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Account equity on Binance (execution.broker binance); the paper equity lives in the running runner."""
    import asyncio

    b = _ask(profile, settings, secrets_file, journal_url, lambda c: asyncio.run(c.balance()))
    _show(b, as_json, asdict, _balance_lines)


def pause(
    profile: ProfileOpt = None,
    settings: SettingsOpt = None,
    secrets_file: SecretsOpt = None,
    journal_url: JournalOpt = None,
) -> None:
    """Block new signals (journal state ``paused``); a running runner picks it up; it survives restarts."""
    r = _ask(profile, settings, secrets_file, journal_url, lambda c: c.pause(BY))
    already = "" if r.changed else " (it already was)"
    typer.echo(f"paused{already}: new signals are blocked (reason: paused) until resume ({r.journal})")


def resume(
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation (a breaker's halt).")] = False,
    profile: ProfileOpt = None,
    settings: SettingsOpt = None,
    secrets_file: SecretsOpt = None,
    journal_url: JournalOpt = None,
) -> None:
    """Allow new signals again, and clear a circuit-breaker halt or a stop-entry (back to ACTIVE).

    A breaker's halt asks for confirmation (``--yes`` skips it) and is refused while its cause persists.
    """
    from ultra_signals.control import ConfirmationRequired

    with _control(profile, settings, secrets_file, journal_url) as (c, _):
        try:
            r = _call(lambda: c.resume(BY, confirm=yes), ask=True)
        except ConfirmationRequired as e:
            if not typer.confirm(f"{e.message}. Resume?", default=False):
                typer.echo("aborted: nothing was changed")
                raise typer.Exit(1) from None
            r = _call(lambda: c.resume(BY, confirm=True))
    typer.echo(f"resumed: new signals are allowed ({r.journal}); {r.trading}")
    if r.unchecked:
        typer.echo(f"note: not checked from here: {r.unchecked}")


def stop_entry(
    profile: ProfileOpt = None,
    settings: SettingsOpt = None,
    secrets_file: SecretsOpt = None,
    journal_url: JournalOpt = None,
) -> None:
    """No new entries (trading REDUCING); open positions keep their stop and target. ``resume`` undoes it."""
    r = _ask(profile, settings, secrets_file, journal_url, lambda c: c.stop_entry(BY))
    head = "stop-entry" if r.changed else "stop-entry (it already was)"
    typer.echo(f"{head}: trading {r.trading.line}; no new entries, exits continue ({r.journal})")


def kill(
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    profile: ProfileOpt = None,
    settings: SettingsOpt = None,
    secrets_file: SecretsOpt = None,
    journal_url: JournalOpt = None,
) -> None:
    """Kill switch: HALT trading, cancel every open order and flatten every position on the exchange."""
    import asyncio

    from ultra_signals.control import ConfirmationRequired
    from ultra_signals.control.kill import venue_label

    with _control(profile, settings, secrets_file, journal_url, kill=True) as (c, s):
        confirm = yes or typer.confirm(
            f"Cancel ALL open orders and close ALL positions on {venue_label(s)}, and halt trading?", default=False
        )
        try:
            r = asyncio.run(c.kill(confirm=confirm, by=BY))
        except ConfirmationRequired:
            typer.echo("aborted: nothing was changed")
            raise typer.Exit(1) from None
    typer.echo(f"trading state: {r.trading.line}")
    if r.exchange:
        typer.echo(
            f"cancelled {r.cancelled_orders} orders; flattened {', '.join(r.flattened) or 'nothing'};"
            f" left: {r.remaining_orders} orders, {r.remaining_positions} positions"
        )
    else:
        typer.echo("paper positions live in the runner: it flattens them when it reads the HALT (within 1 s)")
    for err in r.errors:
        typer.echo(f"error: {err}", err=True)
    raise typer.Exit(0 if r.clean else 1)


def register(app: typer.Typer) -> None:
    """Add the operator actions to the main CLI."""
    app.command("status")(status)
    app.command("health")(health)
    app.command("pnl")(pnl)
    app.command("profit", hidden=True)(pnl)
    app.command("balance")(balance)
    app.command("caps")(caps)
    app.command("signals")(signals)
    app.command("positions")(positions)
    app.command("pause")(pause)
    app.command("resume")(resume)
    app.command("stop-entry")(stop_entry)
    app.command("kill")(kill)
