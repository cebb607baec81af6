"""Watch a running ``ultra-signals`` process from a second terminal, through its Prometheus ``/metrics`` only.

Why only ``/metrics``: it is what Prometheus and Grafana see, so the operator's table and the dashboard can
never disagree, and the monitor needs no access to the journal, Redis or the run's settings.  Counters and the
latency histogram are cumulative over the run; the table also shows what changed since the previous scrape
(the same run only: a new ``run_info`` id resets the deltas).  Latency quantiles are interpolated from the
histogram buckets the way Prometheus' ``histogram_quantile`` does, so they are bucket-resolution estimates,
not exact sample percentiles (the shadow report has those).

The loop is bounded by wall time (``duration`` minutes) and keeps retrying when no run is listening; the exit
code says whether at least one scrape succeeded.  Without ``--url`` it finds the run through the run file
``var/run/current.json`` that ``shadow``/``replay`` write (so it may be started before or after the run, and
follows a run on any port); when that file says the run ended, the monitor shows the verdict and the report path
and exits instead of retrying.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.table import Table
from rich.text import Text

DEFAULT_URL = "http://127.0.0.1:9108/metrics"
SCRAPE_TIMEOUT_S = 2.0
#: A symbol whose latest event is older than this (market time) is shown as stale.
STALE_AFTER_S = 120.0


# -- histogram quantile (pure) -------------------------------------------------------------------------------
def histogram_quantile(buckets: Iterable[tuple[float, float]], q: float) -> float:
    """The q-quantile of a cumulative histogram, estimated as Prometheus' ``histogram_quantile`` does.

    ``buckets`` are ``(upper_bound, cumulative_count)`` pairs, in any order, and must include ``+Inf``.
    The value is interpolated linearly inside the bucket where the rank falls; the first bucket starts at 0
    (when its bound is positive); a rank in the ``+Inf`` bucket returns the highest finite bound.  NaN when the
    histogram is empty or malformed (no ``+Inf``, fewer than two buckets); ``-Inf``/``+Inf`` for q < 0 / q > 1.
    """
    if math.isnan(q):
        return math.nan
    if q < 0:
        return -math.inf
    if q > 1:
        return math.inf
    merged: dict[float, float] = {}
    for bound, count in buckets:  # same bound twice (e.g. two series summed): add them up
        merged[float(bound)] = merged.get(float(bound), 0.0) + float(count)
    bs = sorted(merged.items())
    if len(bs) < 2 or not math.isinf(bs[-1][0]):
        return math.nan
    # Scrapes race with observations, so counts may dip between buckets; a cumulative count never decreases.
    running = 0.0
    bs = [(b, running := max(running, c)) for b, c in bs]
    total = bs[-1][1]
    if total <= 0:
        return math.nan
    rank = q * total
    idx = next(i for i, (_, c) in enumerate(bs) if c >= rank)
    if idx == len(bs) - 1:
        return bs[-2][0]
    upper, count = bs[idx]
    if idx == 0:
        if upper <= 0:
            return upper
        lower, below = 0.0, 0.0
    else:
        lower, below = bs[idx - 1]
    in_bucket = count - below
    if in_bucket <= 0:
        return upper
    # fraction first (as Prometheus does), clamped: float rounding must not leave the bucket
    return min(upper, lower + (upper - lower) * ((rank - below) / in_bucket))


# -- one scrape, parsed (pure) ----------------------------------------------------------------------------
@dataclass(slots=True)
class RunInfo:
    run_id: str
    mode: str
    source: str
    simulated: bool


@dataclass(slots=True)
class Snapshot:
    """What one scrape of a runner's ``/metrics`` says, in the units the table shows."""

    candidates: dict[str, float] = field(default_factory=dict)  # symbol -> total
    allowed: dict[tuple[str, str], float] = field(default_factory=dict)  # (symbol, side) -> total
    blocked: dict[str, float] = field(default_factory=dict)  # reason -> total
    sniper_rejections: dict[str, float] = field(default_factory=dict)  # reason -> total
    latency_buckets: list[tuple[float, float]] = field(default_factory=list)  # (le, cumulative count), ms
    latency_count: float = 0.0
    feed_age_s: dict[str, float] = field(default_factory=dict)  # symbol -> market-time age
    counter_backend: str | None = None
    backends: dict[str, float] = field(default_factory=dict)
    window_count: dict[str, float] = field(default_factory=dict)  # "hour" / "day"
    window_cap: dict[str, float] = field(default_factory=dict)
    run: RunInfo | None = None
    market_time_s: float | None = None
    last_update_s: float | None = None  # wall time of the runner's latest metrics refresh
    errors: dict[str, float] = field(default_factory=dict)
    failovers: float = 0.0
    families: int = 0

    @property
    def candidates_total(self) -> float:
        return sum(self.candidates.values())

    @property
    def allowed_total(self) -> float:
        return sum(self.allowed.values())

    @property
    def blocked_total(self) -> float:
        return sum(self.blocked.values())

    def latency_quantile(self, q: float) -> float:
        return histogram_quantile(self.latency_buckets, q)


def parse_metrics(text: str) -> Snapshot:
    """Parse the Prometheus text exposition of a runner; metrics it does not export simply stay empty."""
    snap = Snapshot()
    for fam in text_string_to_metric_families(text):
        snap.families += 1
        for s in fam.samples:
            name, lab, v = s.name, s.labels, float(s.value)
            if name == "signals_candidates_total":
                snap.candidates[lab.get("symbol", "")] = v
            elif name == "signals_allowed_total":
                snap.allowed[(lab.get("symbol", ""), lab.get("side", ""))] = v
            elif name == "signals_blocked_total":
                snap.blocked[lab.get("reason", "")] = v
            elif name == "sniper_rejections_total":
                snap.sniper_rejections[lab.get("reason", "")] = v
            elif name == "latency_tick_to_decision_ms_bucket":
                snap.latency_buckets.append((float(lab["le"]), v))
            elif name == "latency_tick_to_decision_ms_count":
                snap.latency_count = v
            elif name == "feed_last_event_age_seconds":
                snap.feed_age_s[lab.get("symbol", "")] = v
            elif name == "sniper_counter_backend":
                snap.backends[lab.get("backend", "")] = v
                if v == 1:
                    snap.counter_backend = lab.get("backend")
            elif name == "sniper_window_count":
                snap.window_count[lab.get("window", "")] = v
            elif name == "sniper_window_cap":
                snap.window_cap[lab.get("window", "")] = v
            elif name == "run_info" and v == 1:
                snap.run = RunInfo(
                    run_id=lab.get("run_id", "?"),
                    mode=lab.get("mode", "?"),
                    source=lab.get("source", "?"),
                    simulated=lab.get("simulated", "").lower() in ("true", "1", "yes"),
                )
            elif name == "market_time_seconds":
                snap.market_time_s = v
            elif name == "metrics_last_update_timestamp_seconds":
                snap.last_update_s = v
            elif name == "runner_errors_total":
                snap.errors[lab.get("kind", "")] = v
            elif name == "sniper_failovers_total":
                snap.failovers = v
    return snap


class ScrapeError(RuntimeError):
    """The scrape failed; the message is what the operator should read (and do)."""


def not_listening_message(url: str) -> str:
    return (
        f"no ultra-signals run is listening on {url}: start one with `ultra-signals shadow` "
        "(or `python scripts/run_shadow_test.py`), or point --url at the port the run printed"
    )


def scrape(url: str, timeout_s: float = SCRAPE_TIMEOUT_S, client: httpx.Client | None = None) -> Snapshot:
    """GET and parse ``url``; every failure becomes a :class:`ScrapeError` with a message for the operator."""
    try:
        resp = httpx.get(url, timeout=timeout_s) if client is None else client.get(url, timeout=timeout_s)
    except httpx.ConnectError:
        raise ScrapeError(not_listening_message(url)) from None
    except httpx.TimeoutException:
        raise ScrapeError(f"{url} did not answer within {timeout_s:g} s (run overloaded or stuck?)") from None
    except httpx.HTTPError as e:
        raise ScrapeError(f"{url}: {type(e).__name__}: {e}") from None
    if resp.status_code != 200:
        raise ScrapeError(f"{url} answered HTTP {resp.status_code}: is this the run's /metrics endpoint?")
    try:
        snap = parse_metrics(resp.text)
    except ValueError as e:
        raise ScrapeError(f"{url} answered something that is not Prometheus text: {e}") from None
    if snap.run is None and not snap.latency_buckets:
        raise ScrapeError(f"{url} serves metrics, but not an ultra-signals run's (no run_info, no latency histogram)")
    return snap


# -- rendering ------------------------------------------------------------------------------------------------
def _n(x: float) -> str:
    return f"{x:,.0f}"


def _delta(now: float, before: float | None) -> str:
    if before is None:
        return ""
    d = now - before
    return f" (+{d:,.0f})" if d > 0 else ""


def _ms(x: float) -> str:
    return "n/a" if math.isnan(x) else f"{x:.2f} ms"


def _interval_buckets(now: Snapshot, prev: Snapshot) -> list[tuple[float, float]]:
    before = dict(prev.latency_buckets)
    return [(le, c - before.get(le, 0.0)) for le, c in now.latency_buckets]


def render(
    snap: Snapshot,
    prev: Snapshot | None,
    *,
    url: str,
    scrape_no: int,
    wall_now: float,
    stale_after_s: float = STALE_AFTER_S,
) -> Table:
    """The operator's table for one scrape; ``prev`` (same run) adds what changed since the last scrape."""
    same = prev is not None and prev.run is not None and snap.run is not None and prev.run.run_id == snap.run.run_id
    p = prev if same else None
    run = snap.run
    title = f"ultra-signals monitor · {url} · scrape #{scrape_no} at {datetime.fromtimestamp(wall_now):%H:%M:%S}"
    t = Table(title=title, show_header=False, expand=False)
    t.add_column("what", style="bold")
    t.add_column("value")
    if run is not None:
        sim = Text(" SIMULATED", style="bold magenta") if run.simulated else Text("")
        t.add_row("run", Text.assemble(f"{run.run_id} · {run.mode.upper()} · source {run.source}", sim))
    else:
        t.add_row("run", Text("no run_info exported", style="yellow"))
    if snap.market_time_s is not None and snap.market_time_s > 0:
        t.add_row("market time", f"{datetime.fromtimestamp(snap.market_time_s, tz=UTC):%Y-%m-%d %H:%M:%S} UTC")
    if snap.last_update_s is not None and snap.last_update_s > 0:
        age = wall_now - snap.last_update_s
        t.add_row("metrics refreshed", Text(f"{age:.0f} s ago", style="red" if age > 30 else ""))
    t.add_row(
        "candidates", _n(snap.candidates_total) + _delta(snap.candidates_total, p.candidates_total if p else None)
    )
    by_sym = ", ".join(f"{sym} {side} {_n(v)}" for (sym, side), v in sorted(snap.allowed.items()) if v)
    t.add_row(
        "allowed",
        _n(snap.allowed_total)
        + _delta(snap.allowed_total, p.allowed_total if p else None)
        + (f" · {by_sym}" if by_sym else ""),
    )
    blocked = ", ".join(
        f"{r} {_n(v)}{_delta(v, p.blocked.get(r, 0.0) if p else None)}"
        for r, v in sorted(snap.blocked.items(), key=lambda kv: -kv[1])
        if v
    )
    blocked_all = _n(snap.blocked_total) + _delta(snap.blocked_total, p.blocked_total if p else None)
    t.add_row("blocked", blocked_all + (f" · {blocked}" if blocked else ""))
    sniper = ", ".join(f"{r} {_n(v)}" for r, v in sorted(snap.sniper_rejections.items(), key=lambda kv: -kv[1]) if v)
    t.add_row("sniper rejections", sniper or "0")
    lat = f"p50 {_ms(snap.latency_quantile(0.5))} · p95 {_ms(snap.latency_quantile(0.95))} ({_n(snap.latency_count)} decisions)"
    if p is not None and snap.latency_count > p.latency_count:
        recent = _interval_buckets(snap, p)
        lat += f" · since last scrape p95 {_ms(histogram_quantile(recent, 0.95))}"
    t.add_row("tick→decision", lat)
    fresh = Text()
    for i, (sym, age) in enumerate(sorted(snap.feed_age_s.items())):
        fresh.append(("  " if i else "") + f"{sym} {age:.0f} s", style="red" if age > stale_after_s else "green")
    t.add_row("data age (market)", fresh if snap.feed_age_s else Text("no feed ages exported", style="yellow"))
    backend = snap.counter_backend or "unknown"
    extra = f" · failovers {_n(snap.failovers)}" if snap.failovers else ""
    t.add_row("counter backend", Text(backend + extra, style="yellow" if snap.failovers else ""))
    windows = Text()
    for w in ("hour", "day"):
        if w in snap.window_count or w in snap.window_cap:
            cnt = snap.window_count.get(w, math.nan)
            cap = snap.window_cap.get(w)
            full = cap is not None and cnt >= cap
            windows.append(" · " if windows.plain else "")
            windows.append(
                f"{w} {cnt:.0f}/{cap:.0f}" if cap is not None else f"{w} {cnt:.0f}", "yellow" if full else ""
            )
    t.add_row("cap windows", windows if windows.plain else Text("n/a"))
    if any(snap.errors.values()):
        t.add_row("errors", Text(", ".join(f"{k} {_n(v)}" for k, v in snap.errors.items() if v), style="red"))
    return t


# -- the loop -------------------------------------------------------------------------------------------------
def _run_of_interest(path: Path | None, since: float) -> dict[str, Any] | None:
    """The run file's run if it is running now (its process alive) or ended after the monitor started."""
    if path is None:
        return None
    from ultra_signals.apps import runfile

    info = runfile.read(path)
    if info is None:
        return None
    if info.get("status") == "running":
        return info if runfile.pid_alive(info.get("pid")) else None
    return info if float(info.get("ended_at") or 0.0) >= since - 1.0 else None


def final_lines(info: dict[str, Any]) -> list[str]:
    """What the monitor prints when the run it watched has ended."""
    verdict = info.get("verdict") or "no verdict (run made without a report)"
    lines = [f"run {info.get('run_id')} {info.get('status')}: verdict {verdict} (exit status {info.get('exit_code')})"]
    reports = [r for r in info.get("reports") or [] if str(r).endswith(".md")]
    lines += [f"report: {r}" for r in reports]
    return lines


def run_monitor(
    url: str,
    duration_minutes: float,
    interval_s: float,
    console: Console | None = None,
    *,
    timeout_s: float = SCRAPE_TIMEOUT_S,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
    run_file: Path | None = None,
    follow_run_file: bool = False,
) -> int:
    """Scrape every ``interval_s`` until ``duration_minutes`` of wall time have passed; 0 if any scrape worked.

    With ``run_file``, also stop as soon as it says the watched run ended (printing its verdict and report), and
    with ``follow_run_file`` take the run's metrics URL from it.
    """
    if interval_s <= 0:
        raise ValueError("interval must be positive")
    console = console or Console()
    deadline = clock() + max(0.0, duration_minutes) * 60.0
    since = time.time()
    timeout = min(timeout_s, interval_s)
    succeeded = 0
    attempts = 0
    prev: Snapshot | None = None
    last_error: str | None = None
    final: dict[str, Any] | None = None
    live = Live(console=console, auto_refresh=False) if console.is_terminal else None

    def show(what: RenderableType) -> None:
        if live is not None:
            live.update(what, refresh=True)
        else:
            console.print(what)

    try:
        if live is not None:
            live.start()
        with httpx.Client() as client:
            while True:
                info = _run_of_interest(run_file, since)
                if info is not None:
                    if follow_run_file and info.get("metrics_url") and info["metrics_url"] != url:
                        url = str(info["metrics_url"])
                        console.print(f"found run {info.get('run_id')} in {run_file}: watching {url}")
                    if info.get("status") != "running":
                        final = info
                        break
                attempts += 1
                try:
                    snap = scrape(url, timeout, client)
                except ScrapeError as e:
                    left = max(0.0, deadline - clock())
                    stamp = f"{datetime.now():%H:%M:%S}"
                    hint = Text(f"retrying every {interval_s:g} s for {left / 60:.1f} more min", style="dim")
                    if live is not None:
                        show(Group(Text(f"{stamp} {e}", style="yellow"), hint))
                    elif str(e) == last_error:  # a log file gets the full message once per outage
                        show(Text(f"{stamp} same again (attempt {attempts}); {hint.plain}", style="dim"))
                    else:
                        show(Text(f"{stamp} {e}", style="yellow"))
                    last_error = str(e)
                else:
                    last_error = None
                    succeeded += 1
                    show(render(snap, prev, url=url, scrape_no=succeeded, wall_now=time.time()))
                    prev = snap
                remaining = deadline - clock()
                if remaining <= 0:
                    break
                sleep(min(interval_s, remaining))
    except KeyboardInterrupt:
        pass
    finally:
        if live is not None:
            live.stop()
    if final is None and run_file is not None:
        final = _run_of_interest(run_file, since)
        final = final if final is not None and final.get("status") != "running" else None
    if final is not None:
        if prev is not None and live is not None:  # keep the last table on screen above the verdict
            console.print(render(prev, None, url=url, scrape_no=succeeded, wall_now=time.time()))
        for line in final_lines(final):
            console.print(line, soft_wrap=True)
    console.print(f"monitor stopped: {succeeded} of {attempts} scrapes succeeded")
    return 0 if succeeded else 1


def default_url(profile: str | None = None) -> tuple[str, str | None]:
    """The run's /metrics URL from settings (host and port), and a notice when settings could not say."""
    from ultra_signals.core.config import ConfigError, load_settings

    try:
        m = load_settings(profile).metrics
    except ConfigError as e:
        return DEFAULT_URL, f"settings not loaded ({str(e).splitlines()[0]}); using {DEFAULT_URL}"
    if m.port == 0:
        return DEFAULT_URL, "metrics.port is 0 (the run picks a port and prints it): pass --url"
    host = "127.0.0.1" if m.host in ("0.0.0.0", "", "::") else m.host
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{m.port}/metrics", None


def main(
    duration: Annotated[float, typer.Option(help="Minutes of wall time to keep watching.")] = 120.0,
    interval: Annotated[float, typer.Option(help="Seconds between scrapes.")] = 30.0,
    url: Annotated[
        str | None, typer.Option(help="The run's /metrics URL (default: metrics.host/port from settings).")
    ] = None,
    profile: Annotated[str | None, typer.Option("--profile", "-p", help="Profile whose metrics port to use.")] = None,
) -> None:
    """Live table of a running ultra-signals process, from its Prometheus /metrics.

    Without --url the run is found through var/run/current.json (written by shadow/replay started from the same
    folder), else metrics.host/port from settings; start it before or after the run.  It exits when the run ends,
    showing the verdict and the report path.
    """
    import os
    import sys

    from ultra_signals.apps import runfile

    width = None if os.environ.get("COLUMNS") or sys.stdout.isatty() else 200
    console = Console(highlight=False, width=width)
    if interval <= 0:
        console.print("[red]error:[/] --interval must be positive")
        raise typer.Exit(2)
    follow = url is None
    if url is None:
        url, notice = default_url(profile)
        info = runfile.read()
        if info is not None and info.get("status") == "running" and runfile.pid_alive(info.get("pid")):
            url, notice = str(info.get("metrics_url") or url), None
        if notice:
            console.print(f"[yellow]notice:[/] {notice}")
    console.print(f"watching {url} every {interval:g} s for {duration:g} min (Ctrl-C to stop)")
    code = run_monitor(url, duration, interval, console, run_file=runfile.RUN_FILE, follow_run_file=follow)
    raise typer.Exit(code)


def cli(argv: Sequence[str] | None = None, prog_name: str = "monitor_shadow.py") -> None:
    """Entry point of ``scripts/monitor_shadow.py`` (exits with the monitor's code)."""
    app = typer.Typer(add_completion=False)
    app.command()(main)
    app(args=list(argv) if argv is not None else None, prog_name=prog_name)
