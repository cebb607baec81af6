"""``ultra-signals``: the operator's command line (typer + rich).

Every command loads settings the same way (base + profile + secrets file + env, then the flags given here), so
what ``config show`` prints is what ``shadow`` runs with.

Exit status of shadow, replay and rollout gate: 0 GO, 1 NO-GO or interrupted, 2 usage or configuration error,
3 the run failed (crash).
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from ultra_signals.apps.console import lazy_console
from ultra_signals.observability.logging import apply_settings, configure_logging, json_logging, scrub

if TYPE_CHECKING:
    # Everything heavier than typer (rich, yaml, pydantic, SQLAlchemy, numpy, websockets, httpx, the runner) is
    # imported inside the command that needs it, so ``--help`` and ``status`` answer at once (bench/bench_cli.py);
    # tests/test_cli_startup.py checks which libraries each of them loads.
    import asyncio
    from collections.abc import Callable

    from rich.progress import TaskID

    from ultra_signals.core.config import Settings
    from ultra_signals.live.runner import RunStats

log = logging.getLogger(__name__)

#: Exit status of ``shadow``, ``replay`` and ``rollout gate`` (README, ``--help``): scripts and CI gate on it.
EXIT_GO, EXIT_NO_GO, EXIT_USAGE, EXIT_CRASH = 0, 1, 2, 3
EXIT_HELP = "Exit status: 0 GO, 1 NO-GO or interrupted, 2 usage or configuration error, 3 the run failed (crash)."

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)
config_app = typer.Typer(no_args_is_help=True, help="Inspect the effective configuration.")
sim_app = typer.Typer(no_args_is_help=True, help="The built-in market simulator.")
app.add_typer(config_app, name="config")
app.add_typer(sim_app, name="sim")


#: rich consoles, made (and rich imported) when a command first prints through them (apps/console.py).
console = lazy_console()
err = lazy_console(stderr=True)


def _version_callback(value: bool) -> None:
    if value:
        from ultra_signals.observability.release import describe

        typer.echo(describe())
        raise typer.Exit(0)


ProfileOpt = Annotated[str | None, typer.Option("--profile", "-p", help="Profile in profiles/ (default: shadow).")]
SecretsOpt = Annotated[str | None, typer.Option("--secrets-file", help="KEY=VALUE file with secrets.")]


LogFormatOpt = Annotated[
    str | None,
    typer.Option(
        "--log-format",
        help="auto (rich on a terminal, plain lines otherwise) | rich | text | json (one object per line).",
    ),
]


@app.callback()
def _global_options(
    log_format: LogFormatOpt = None,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="-v: debug logs; -vv: libraries too.")
    ] = 0,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the release and exit."),
    ] = False,
    settings_file: Annotated[
        str | None,
        typer.Option(
            "--settings",
            help="Base settings file (else ULTRA_SIGNALS_SETTINGS, ./settings.yaml, the packaged defaults).",
        ),
    ] = None,
) -> None:
    """Configure logging once, before any command runs (``log.*`` settings refine it after loading)."""
    if log_format is not None and log_format not in ("auto", "rich", "text", "json"):
        _fail(f"--log-format: {log_format!r} is not one of auto, rich, text, json")
    if settings_file is not None:
        # The composition root hands the choice to every command (and any child process) through the loader's
        # own control variable; ``config show`` still names the flag as the origin.
        global _settings_origin
        os.environ["ULTRA_SIGNALS_SETTINGS"] = settings_file
        _settings_origin = "--settings"
    configure_logging(fmt=log_format, verbose=verbose)  # type: ignore[arg-type]


#: Set when the global ``--settings`` flag chose the settings file (``config show`` names it).
_settings_origin: str | None = None


def _fail(msg: str, code: int = 2) -> None:
    show_error(msg)
    raise typer.Exit(code)


def show_error(msg: str) -> None:
    """One line on stderr (a log record when logs are JSON lines), with any secret that slipped in hidden."""
    msg = " ".join(scrub(msg).split())
    if json_logging():
        log.error(msg)
    else:
        from rich.markup import escape

        # soft_wrap: the error stays one line whatever the terminal width (log scrapers and tests read it whole).
        err.print(f"[bold red]error:[/] {escape(msg)}", markup=True, soft_wrap=True)


def _parse_time(value: str | None, name: str) -> int | None:
    """Epoch ms from ISO 8601 (``2018-01-15``, ``2018-01-15T12:00``) or plain epoch milliseconds."""
    if value is None:
        return None
    if value.isdigit():
        return int(value)
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        _fail(f"{name}: {value!r} is neither ISO 8601 (2018-01-15T12:00) nor epoch milliseconds")
        raise
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def _settings(profile: str | None, secrets_file: str | None, overrides: dict[str, Any]) -> Settings:
    from ultra_signals.core.config import ConfigError, load_settings, secret_values

    try:
        settings = load_settings(profile, secrets_file=secrets_file, overrides=overrides)
    except ConfigError as e:
        _fail(str(e))
        raise
    apply_settings(settings.log.level, settings.log.format, secret_values(settings))
    return settings


def _run(
    settings: Settings,
    *,
    duration: int | None,
    data_dir: str | None,
    start_ms: int | None,
    end_ms: int | None,
    symbols_given: bool,
    decisions_out: str | None,
    speed: float | None,
    namespace: str | None,
    report: bool,
    hold_metrics: float,
    force: bool = False,
    pace_from: float | None = None,
) -> tuple[RunStats, str | None, list[str]]:
    import asyncio

    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from ultra_signals import bootstrap
    from ultra_signals.execution.brokers.base import BrokerError
    from ultra_signals.observability.metrics import Metrics

    metrics = Metrics()
    request = bootstrap.SourceRequest(duration, data_dir, start_ms, end_ms, symbols_given)
    try:
        settings, resolved = bootstrap.resolve_symbols(settings, metrics)
        source = bootstrap.build_source(settings, metrics, request)
        info = source.info
        for notice in [*resolved, *info.notices]:
            console.print(f"[yellow]notice:[/] {notice}")
        journal = bootstrap.open_journal(settings)
    except bootstrap.BootstrapError as e:
        _fail(str(e))
        raise
    progress = Progress(
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        TextColumn("{task.fields[info]}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )
    task: TaskID | None = None
    plain = not console.is_terminal  # piped: a plain line every 5 % instead of a live bar
    next_pct = 0

    def on_progress(st: RunStats, market_now: int) -> None:
        nonlocal task, next_pct
        start, end = source.run_start_ms, source.run_end_ms
        if end is None or market_now < start:
            return
        if plain:
            pct = int(100 * min(market_now - start, end - start) / max(end - start, 1))
            if pct >= next_pct:
                next_pct = (pct // 5 + 1) * 5
                console.print(
                    f"progress {pct:3d}% market time | allowed {sum(st.allowed.values())} "
                    f"blocked {sum(st.blocked.values())}",
                    soft_wrap=True,
                )
            return
        if task is None:
            task = progress.add_task("market time", total=max(end - start, 1), info="")
        allowed = sum(st.allowed.values())
        blocked = sum(st.blocked.values())
        progress.update(
            task, completed=min(market_now - start, end - start), info=f"allowed {allowed} blocked {blocked}"
        )

    label = " [bold magenta]SIMULATED[/]" if info.simulated else ""
    console.print(
        f"[bold]{settings.runtime.mode.upper()}[/] run on [cyan]{info.name}[/]{label}: "
        f"{', '.join(info.symbols)} on {', '.join(info.timeframes)} | profile {settings.profile} | "
        f"counters: redis={'on' if settings.redis.enabled else 'off'}, on_failure={settings.redis.on_failure}"
    )
    try:
        runner = bootstrap.build_runner(
            settings,
            source=source,
            journal=journal,
            metrics=metrics,
            namespace=namespace,
            decisions_out=decisions_out,
            overwrite=force,
            speed=speed,
            pace_from=pace_from,
            on_progress=on_progress,
            console=console,
            tune_gc=True,
        )
    except bootstrap.BootstrapError as e:
        _fail(str(e))
        raise
    from ultra_signals.apps import runfile

    def on_started(st: RunStats) -> None:
        url = f"http://{settings.metrics.host}:{st.metrics_port}/metrics" if st.metrics_port else None
        end, start = source.run_end_ms, source.run_start_ms
        planned = (end - start) / 1000.0 / speed if speed and end is not None else None
        runfile.started(st.run_id, url, planned, web_url=st.web_url)
        if st.web_url:
            console.print(f"web UI: {st.web_url} (docs/web.md)", soft_wrap=True)
        elif st.web_error:
            console.print(f"[yellow]notice:[/] status page not started: {st.web_error}", soft_wrap=True)

    runner.on_started = on_started

    terminated = False

    def on_sigterm(task: asyncio.Task[Any]) -> None:
        nonlocal terminated
        terminated = True
        task.cancel()

    async def main() -> RunStats:
        # SIGTERM (a service manager or `docker stop`) ends the run like Ctrl-C does: the journal is flushed, the run
        # is recorded as interrupted and the report is written.
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        if task is not None:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(signal.SIGTERM, on_sigterm, task)
        try:
            return await runner.run()
        except asyncio.CancelledError:
            return runner.stats
        finally:
            await source.aclose()

    with progress:
        try:
            stats = asyncio.run(main())
        except KeyboardInterrupt:
            stats = runner.stats
        except BrokerError as e:  # account set-up or keys refused before any order: no traceback, exit 2
            _fail(f"{e} (run {runner.run_id} recorded as failed)")
            raise
    if stats.metrics_port:
        console.print(f"metrics were served on http://{settings.metrics.host}:{stats.metrics_port}/metrics")
    paths: list[str] = []
    verdict: str | None = None
    if report:
        from ultra_signals.apps.report import promotion_note, write_report
        from ultra_signals.sources.replay import ReplaySource

        # A replay's parsed candles, so the evaluation does not parse the files again.
        parsed = source.parsed() if isinstance(source, ReplaySource) else None
        result = write_report(stats, settings, journal, metrics, data_dir=data_dir, parsed=parsed)
        paths = [str(p) for p in result.paths]
        verdict = result.verdict
        _print_summary(stats, result.verdict, result.criteria)
        note = promotion_note(stats)
        if note and verdict == "GO":
            console.print(f"[bold magenta]GO on {'simulation' if stats.simulated else stats.source}[/]: {note}")
    else:
        _print_summary(stats, None, [])
    for p in paths:
        console.print(f"report: {p}")
    # A service manager that already asked the run to stop is not kept waiting for the hold.
    if hold_metrics > 0 and stats.metrics_port and not terminated:
        console.print(f"holding the metrics endpoint for {hold_metrics:.0f} s (Ctrl-C or SIGTERM to stop)")
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(_hold(hold_metrics, on_sigterm))
    metrics.stop()
    journal.close()
    return stats, verdict, paths


async def _hold(seconds: float, on_sigterm: Callable[[asyncio.Task[Any]], None]) -> None:
    """Sleep for the metrics hold, ended early by SIGTERM.

    The run's own loop is closed by now, and with it its SIGTERM handler: without this one, `docker stop` during the
    hold would kill the process before the journal is closed.
    """
    import asyncio

    task = asyncio.current_task()
    if task is not None:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, on_sigterm, task)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.sleep(seconds)


def _exit_code(st: RunStats, verdict: str | None) -> int:
    """0 GO (or completed without a report), 1 NO-GO or interrupted, 3 the run failed."""
    if st.crash is not None or st.status == "failed":
        return EXIT_CRASH
    if st.status != "completed":
        return EXIT_NO_GO
    if verdict is not None and verdict != "GO":
        return EXIT_NO_GO
    return EXIT_GO


def _run_and_exit(settings: Settings, **kw: Any) -> None:
    from ultra_signals.apps import runfile

    try:
        st, verdict, paths = _run(settings, **kw)
    except typer.Exit:
        raise
    except Exception as e:  # the run itself failed outside the runner's own guard: say so, exit 3
        if isinstance(e, _loaded(OPERATOR_ERRORS)):
            raise  # an operator error (busy port, bad settings, journal refused…) is one line and exit 2, in main()
        import logging

        logging.getLogger(__name__).error("run failed", exc_info=True)  # the traceback goes to the log, once
        err.print(f"[bold red]run failed:[/] {type(e).__name__}: {e}")
        raise typer.Exit(EXIT_CRASH) from None
    code = _exit_code(st, verdict)
    runfile.ended(st.run_id, st.status, verdict, code, paths)
    if code:
        what = {EXIT_NO_GO: "NO-GO" if st.status == "completed" else f"run {st.status}", EXIT_CRASH: "run failed"}
        console.print(f"exit status {code}: {what[code]}")
    raise typer.Exit(code)


def _print_summary(st: RunStats, verdict: str | None, criteria: list[Any]) -> None:
    from rich.table import Table

    from ultra_signals.apps.report import latency_percentiles

    p = latency_percentiles(st.latencies_ms)
    t = Table(title=f"run {st.run_id} ({'SIMULATED' if st.simulated else st.source})", show_header=False)
    t.add_row(
        "throughput",
        f"{st.input_bars / st.wall_seconds:,.0f} input bars/s ({st.input_bars:,} bars incl. warm-up in {st.wall_seconds:.2f} s)",
    )
    t.add_row("candidates", str(sum(st.candidates.values())))
    t.add_row("allowed", ", ".join(f"{k} {v}" for k, v in sorted(st.allowed.items())) or "0")
    t.add_row("blocked", ", ".join(f"{k} {v}" for k, v in st.blocked.most_common()) or "0")
    t.add_row("tick-to-decision ms", f"p50 {p['p50']:.3f}  p95 {p['p95']:.3f}  p99 {p['p99']:.3f}")
    t.add_row("errors", ", ".join(f"{k} {v}" for k, v in st.errors.items()) or "none")
    t.add_row("counter backend", f"{st.counter_backend_start} → {st.counter_backend_end}")
    if verdict:
        t.add_row("shadow criteria", " ".join(f"{c.name}:{'PASS' if c.passed else 'FAIL'}" for c in criteria))
        t.add_row("verdict", f"[bold]{verdict}[/]")
    console.print(t)


# -- commands ----------------------------------------------------------------------------------------------
@app.command()
def shadow(
    duration: Annotated[
        int,
        typer.Option(
            help="Minutes of market time to run. 120 (the seed's) cannot reach the daily cap; "
            "`make shadow` runs 1440 (one market day) so both cap windows are exercised."
        ),
    ] = 120,
    profile: ProfileOpt = None,
    source: Annotated[str | None, typer.Option(help="sim | replay | binance (default from settings).")] = None,
    symbols: Annotated[str | None, typer.Option(help="Comma-separated symbols.")] = None,
    data: Annotated[str | None, typer.Option(help="Candle folder for --source replay.")] = None,
    speed: Annotated[
        float | None, typer.Option(help="N × real time for sim/replay (default: as fast as possible).")
    ] = None,
    decisions_out: Annotated[str | None, typer.Option(help="Write one JSON line per candidate here.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing --decisions-out file.")] = False,
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus exporter port (0 = any free).")] = None,
    web_port: Annotated[
        int | None, typer.Option(help="Status page / REST API port (0 = any free); web.enabled turns it on.")
    ] = None,
    journal: Annotated[str | None, typer.Option(help="Journal SQLAlchemy URL.")] = None,
    namespace: Annotated[str | None, typer.Option(help="Counter namespace shared with other runners.")] = None,
    seed: Annotated[int | None, typer.Option(help="Simulator seed.")] = None,
    report: Annotated[bool, typer.Option(help="Write the shadow report.")] = True,
    hold_metrics: Annotated[float, typer.Option(help="Keep /metrics up this many seconds after the run.")] = 0.0,
    secrets_file: SecretsOpt = None,
) -> None:
    """A shadow run: signals only, no orders; ends with the shadow report and a GO / NO-GO verdict.

    Exit status: 0 GO, 1 NO-GO or interrupted, 2 usage or configuration error, 3 the run failed (crash).
    A GO on the simulator or on replayed candles validates the software path only: not eligible for promotion.
    """
    overrides: dict[str, Any] = {}
    if source:
        overrides["runtime.source"] = source
    if symbols:
        overrides["runtime.symbols"] = symbols
    if metrics_port is not None:
        overrides["metrics.port"] = metrics_port
    if web_port is not None:
        overrides["web.port"] = web_port
    if journal:
        overrides["journal.url"] = journal
    if seed is not None:
        overrides["sim.seed"] = seed
    settings = _settings(profile, secrets_file, overrides)
    if settings.runtime.mode != "shadow" and profile is None:
        _fail("shadow runs need a shadow-mode profile")
    _duration_notice(settings, duration)
    _run_and_exit(
        settings,
        duration=duration,
        data_dir=data,
        start_ms=None,
        end_ms=None,
        symbols_given=bool(symbols) or settings.runtime.source != "replay",
        decisions_out=decisions_out,
        force=force,
        speed=speed,
        namespace=namespace,
        report=report,
        hold_metrics=hold_metrics,
    )


def _duration_notice(settings: Settings, minutes: int) -> None:
    """Say plainly what a run this long can and cannot show about the caps."""
    sn = settings.sniper
    hours = minutes / 60.0
    most = sn.max_signals_per_hour * max(1, math.ceil(hours))
    if most < sn.daily_signal_cap:
        console.print(
            f"[yellow]notice:[/] {minutes} minutes of market time can allow at most about {most} signals at "
            f"{sn.max_signals_per_hour}/hour, so the daily cap ({sn.daily_signal_cap}) cannot be reached and the "
            f"caps criterion will say so (NO-GO). It can show the hourly cap, MTF blocking, latency and metrics. "
            f"Run --duration {math.ceil(sn.daily_signal_cap / sn.max_signals_per_hour) * 60} or more "
            f"(make shadow runs 1440) to exercise both windows.",
            soft_wrap=True,
        )


@app.command()
def replay(
    data: Annotated[str, typer.Option(help="Folder of <SYMBOL>-<timeframe>.csv candle files.")],
    symbols: Annotated[str | None, typer.Option(help="Comma-separated (default: every symbol in the folder).")] = None,
    from_: Annotated[str | None, typer.Option("--from", help="Run window start (ISO 8601 UTC or epoch ms).")] = None,
    to: Annotated[str | None, typer.Option(help="Run window end (ISO 8601 UTC or epoch ms).")] = None,
    timeframes: Annotated[str | None, typer.Option(help="Comma-separated timeframes (default from settings).")] = None,
    profile: ProfileOpt = None,
    speed: Annotated[float | None, typer.Option(help="N × real time (default: as fast as possible).")] = None,
    pace_from: Annotated[
        float | None,
        typer.Option(
            help="With --speed: pace from this wall-clock instant (epoch seconds), not from this process's start; "
            "replays given the same value stay in step (several runners sharing caps on recorded data)."
        ),
    ] = None,
    decisions_out: Annotated[str | None, typer.Option(help="Write one JSON line per candidate here.")] = None,
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing --decisions-out file.")] = False,
    metrics_port: Annotated[int | None, typer.Option(help="Prometheus exporter port (0 = any free).")] = None,
    web_port: Annotated[
        int | None, typer.Option(help="Status page / REST API port (0 = any free); web.enabled turns it on.")
    ] = None,
    journal: Annotated[str | None, typer.Option(help="Journal SQLAlchemy URL.")] = None,
    namespace: Annotated[str | None, typer.Option(help="Counter namespace shared with other runners.")] = None,
    report: Annotated[bool, typer.Option(help="Write the run report.")] = True,
    secrets_file: SecretsOpt = None,
) -> None:
    """The same pipeline over recorded candles, as fast as the machine allows (or --speed N).

    The status page is served only with --web-port or --speed (a fast replay is a batch job).

    Exit status: 0 GO, 1 NO-GO or interrupted, 2 usage or configuration error, 3 the run failed (crash).
    """
    if pace_from is not None and not speed:
        _fail("--pace-from paces a replay run at --speed N: give --speed too")
    overrides: dict[str, Any] = {"runtime.source": "replay"}
    if symbols:
        overrides["runtime.symbols"] = symbols
    if timeframes:
        overrides["runtime.timeframes"] = timeframes
        tfs = [t.strip() for t in timeframes.split(",") if t.strip()]
        base = _settings(profile, secrets_file, {}) if tfs else None
        if base is not None and base.runtime.primary_timeframe not in tfs:
            from ultra_signals.core.timeframes import sort_timeframes

            overrides["runtime.primary_timeframe"] = sort_timeframes(tfs)[0]
    if metrics_port is not None:
        overrides["metrics.port"] = metrics_port
    if web_port is not None:
        overrides["web.port"] = web_port
    elif speed is None:
        # A replay as fast as the machine allows is a batch job: importing and serving the web stack cost about
        # a tenth of a 30-day replay (issue 13).  --web-port or a paced --speed run serves the page.
        overrides["web.enabled"] = False
    if journal:
        overrides["journal.url"] = journal
    settings = _settings(profile, secrets_file, overrides)
    _run_and_exit(
        settings,
        duration=None,
        data_dir=data,
        start_ms=_parse_time(from_, "--from"),
        end_ms=_parse_time(to, "--to"),
        symbols_given=bool(symbols),
        decisions_out=decisions_out,
        force=force,
        speed=speed,
        pace_from=pace_from,
        namespace=namespace,
        report=report,
        hold_metrics=0.0,
    )


@app.command()
def preflight(
    profile: ProfileOpt = None,
    secrets_file: SecretsOpt = None,
) -> None:
    """Non-destructive go-live checks; exit code 0 only when every check passes.  Never takes a cap slot."""
    from rich.table import Table
    from rich.text import Text

    from ultra_signals.apps.preflight import run_preflight
    from ultra_signals.core.config import ConfigError, load_settings

    try:
        settings = load_settings(profile, secrets_file=secrets_file)
    except ConfigError as e:
        t = Table(title="preflight")
        t.add_column("check")
        t.add_column("result")
        t.add_column("detail")
        t.add_row("config", "[red]FAIL[/]", Text(str(e)))
        console.print(t)
        raise typer.Exit(1) from None
    checks = run_preflight(settings)
    t = Table(title=f"preflight — profile {settings.profile}")
    t.add_column("check")
    t.add_column("result")
    t.add_column("detail")
    for c in checks:
        t.add_row(c.name, "[green]PASS[/]" if c.ok else "[red]FAIL[/]", Text(c.detail))
    console.print(t)
    failed = [c.name for c in checks if not c.ok]
    console.print(
        "[bold green]all checks passed[/]" if not failed else f"[bold red]{len(failed)} failed:[/] {', '.join(failed)}"
    )
    raise typer.Exit(1 if failed else 0)


@config_app.command("show")
def config_show(
    profile: ProfileOpt = None,
    secrets_file: SecretsOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of YAML.")] = False,
) -> None:
    """The effective merged configuration, secrets redacted, after where the settings and profile came from."""
    import yaml

    from ultra_signals.core.config import find_profile, find_settings, redacted_dict

    settings = _settings(profile, secrets_file, {})
    data = redacted_dict(settings)
    path, origin = find_settings()
    prof = find_profile(path, settings.profile)
    origin = _settings_origin or origin
    if as_json:
        doc = {"source": {"settings": str(path), "from": origin, "profile": str(prof)}, **data}
        sys.stdout.write(json.dumps(doc, indent=2, default=str) + "\n")
    else:
        sys.stdout.write(f"# settings: {path} ({origin})\n# profile: {prof}\n")
        sys.stdout.write(yaml.safe_dump(data, sort_keys=False))


@app.command()
def init(
    directory: Annotated[Path, typer.Argument(help="Folder to write settings.yaml and profiles/ into.")] = Path("."),
    force: Annotated[bool, typer.Option("--force", help="Overwrite files that already exist.")] = False,
) -> None:
    """Write an editable copy of the packaged settings.yaml and profiles/ to start from."""
    import shutil

    from ultra_signals.core.config import DEFAULTS_DIR

    targets = [(DEFAULTS_DIR / "settings.yaml", directory / "settings.yaml")]
    targets += [(p, directory / "profiles" / p.name) for p in sorted((DEFAULTS_DIR / "profiles").glob("*.yaml"))]
    existing = [str(dst) for _, dst in targets if dst.exists()]
    if existing and not force:
        more = f" and {len(existing) - 1} more" if len(existing) > 1 else ""
        _fail(f"{existing[0]}{more} already exist; nothing written (--force overwrites)")
    try:
        (directory / "profiles").mkdir(parents=True, exist_ok=True)
        for src, dst in targets:
            shutil.copyfile(src, dst)
    except OSError as e:
        _fail(f"{directory}: cannot write the settings: {e.strerror or e}")
    console.print(f"wrote {directory / 'settings.yaml'} and {len(targets) - 1} profiles in {directory / 'profiles'}")
    console.print("edit them, then run ultra-signals from that folder (or point --settings at the file)")


@sim_app.command("export")
def sim_export(
    days: Annotated[int, typer.Option(help="Days of 1m candles per symbol.")] = 30,
    out: Annotated[str, typer.Option(help="Output folder.")] = "var/sim-candles",
    symbols: Annotated[str | None, typer.Option(help="Comma-separated symbols (default from settings).")] = None,
    seed: Annotated[int | None, typer.Option(help="Simulator seed.")] = None,
    profile: ProfileOpt = None,
) -> None:
    """Write the simulator's candles as replay files (<SYMBOL>-1m.csv), labelled SIMULATED in their folder name."""
    from ultra_signals.sources.sim import export_candles

    overrides: dict[str, Any] = {}
    if symbols:
        overrides["runtime.symbols"] = symbols
    if seed is not None:
        overrides["sim.seed"] = seed
    settings = _settings(profile, None, overrides)
    paths = export_candles(settings.sim, settings.runtime.symbols, days, Path(out), ["1m"])
    for p in paths:
        console.print(f"wrote {p}")
    console.print(f"SIMULATED candles: {days} days × {len(settings.runtime.symbols)} symbols → {out}")


@app.command()
def evaluate(
    data: Annotated[str, typer.Option(help="Folder of <SYMBOL>-<timeframe>.csv candle files.")],
    symbols: Annotated[str | None, typer.Option(help="Comma-separated (default: every symbol in the folder).")] = None,
    timeframes: Annotated[str | None, typer.Option(help="Comma-separated timeframes (default from settings).")] = None,
    horizon: Annotated[
        str, typer.Option(help="How long a trade may run before it is marked to close (30m, 24h, 30d).")
    ] = "24h",
    train_days: Annotated[float, typer.Option(help="Walk-forward training window (days).")] = 5.0,
    test_days: Annotated[float, typer.Option(help="Walk-forward test window and step (days).")] = 2.0,
    final_frac: Annotated[float, typer.Option(help="Last share of the run kept as the final test.")] = 0.2,
    jobs: Annotated[int, typer.Option(help="Processes for labelling (per symbol) and fitting (per fold).")] = 1,
    draws: Annotated[int, typer.Option(help="Bootstrap and random-selection draws.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of every random draw.")] = 7,
    out: Annotated[str, typer.Option(help="Folder for <name>.md, .json and .png.")] = "reports/evaluate",
    name: Annotated[str, typer.Option(help="Base name of the output files.")] = "evaluation",
    ledger: Annotated[
        str, typer.Option(help="Ledger of evaluated configurations (counts configurations tried per dataset).")
    ] = "reports/evaluate/ledger.jsonl",
    funding_dir: Annotated[str | None, typer.Option(help="Folder of <SYMBOL>-*funding.csv files.")] = None,
    journal: Annotated[
        str | None, typer.Option(help="Evaluate a finished run from this journal (URL); --data gives the bars.")
    ] = None,
    run_id: Annotated[str | None, typer.Option(help="The run to evaluate (default: the journal's latest).")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Settings override KEY=VALUE (VALUE may be JSON); repeatable.")
    ] = None,
    profile: ProfileOpt = None,
) -> None:
    """Label every candidate of a replay with its outcome and compare allowed, blocked, random and ranked."""
    from ultra_signals.apps.evaluate import EvalConfig, EvaluationError
    from ultra_signals.apps.evaluate import evaluate as run_evaluation
    from ultra_signals.core.timeframes import sort_timeframes, tf_ms

    overrides: dict[str, Any] = {"execution.broker": "none", "runtime.source": "replay"}
    for item in set_ or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            _fail(f"--set {item!r}: expected KEY=VALUE")
        try:
            overrides[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            overrides[key.strip()] = value
    if timeframes:
        overrides["runtime.timeframes"] = timeframes
        tfs = [t.strip() for t in timeframes.split(",") if t.strip()]
        if tfs and "runtime.primary_timeframe" not in overrides:
            base = _settings(profile, None, {})
            if base.runtime.primary_timeframe not in tfs:
                overrides["runtime.primary_timeframe"] = sort_timeframes(tfs)[0]
    try:
        horizon_ms = tf_ms(horizon)
    except ValueError as e:
        _fail(f"--horizon: {e}")
        raise
    settings = _settings(profile, None, overrides)
    cfg = EvalConfig(
        data=Path(data),
        symbols=tuple(s.strip() for s in symbols.split(",") if s.strip()) if symbols else None,
        horizon_ms=horizon_ms,
        train_days=train_days,
        test_days=test_days,
        final_frac=final_frac,
        jobs=jobs,
        draws=draws,
        seed=seed,
        out=Path(out),
        ledger=Path(ledger) if ledger else None,
        funding_dir=Path(funding_dir) if funding_dir else None,
        name=name,
        overrides=overrides,
        journal=journal,
        run_id=run_id,
    )
    try:
        doc = run_evaluation(settings, cfg)
    except EvaluationError as e:
        _fail(str(e))
        raise
    wf = doc["walk_forward_test"]["groups"]
    for label in ("all candidates", "allowed: first_come", "allowed: ranked"):
        g = wf[label]
        console.print(
            f"{label:>22}: n={g['count']:<6} mean R {g['mean_r']:+.3f}  CI [{g['mean_ci'][0]:+.3f}, {g['mean_ci'][1]:+.3f}]"
        )
    console.print(f"wrote {Path(out) / name}.md, .json, .png")


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def monitor(ctx: typer.Context) -> None:
    """Live table of a running shadow's /metrics (same as scripts/monitor_shadow.py; --help there)."""
    from ultra_signals.apps.monitor import cli as monitor_cli

    monitor_cli(list(ctx.args), prog_name="ultra-signals monitor")


def _register_layers() -> None:
    """Commands contributed by the operator (Telegram) and execution layers, and the journal's ``db`` commands."""
    from ultra_signals.apps import cli_db, cli_execution, cli_force, cli_ledger, cli_operator

    cli_operator.register(app)
    cli_execution.register(app)
    cli_db.register(app)
    cli_force.register(app)
    cli_ledger.register(app)


_register_layers()


#: Errors an operator can fix (bad settings, a busy port, an unreadable journal or candle file): one line, exit 2.
#: By module and name: an error of a module never imported cannot have been raised, so none is imported for this.
OPERATOR_ERRORS: tuple[tuple[str, str], ...] = (
    ("ultra_signals.core.config", "ConfigError"),
    ("ultra_signals.observability.metrics", "MetricsServeError"),
    ("ultra_signals.journal.writer", "JournalError"),
    ("ultra_signals.sources.base", "SourceError"),
)


def _loaded(pairs: tuple[tuple[str, str], ...]) -> tuple[type[BaseException], ...]:
    """The exception classes among ``pairs`` whose module is already imported."""
    out: list[type[BaseException]] = []
    for module, name in pairs:
        mod = sys.modules.get(module)
        if mod is not None:
            out.append(getattr(mod, name))
    return tuple(out)


def main() -> None:
    """Entry point: an operator error that reached the top is one line and exit code 2, never a traceback.

    ``status`` and ``status --json`` exactly are first asked of a running runner (cli_operator.status_from_runner),
    without typer's parsing: the everyday question answered at the cost of the interpreter and typer's import.
    """
    if sys.argv[1:] in (["status"], ["status", "--json"]):
        from ultra_signals.apps.cli_operator import status_from_runner

        if status_from_runner(as_json=len(sys.argv) == 3):
            return
    try:
        app(standalone_mode=True)
    except Exception as e:
        if isinstance(e, _loaded(OPERATOR_ERRORS)):
            show_error(str(e))
            sys.exit(2)
        if isinstance(e, _loaded((("sqlalchemy.exc", "SQLAlchemyError"),))):
            # the journal database went away or refused a statement
            first = str(e).strip().splitlines()[0] if str(e).strip() else ""
            show_error(f"journal database error: {type(e).__name__}: {first}")
            sys.exit(2)
        raise


if __name__ == "__main__":
    main()
