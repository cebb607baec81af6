"""Monitor: histogram quantiles as Prometheus computes them, a scrape of a real exporter, the message when no run
is listening; and the two operator scripts (``scripts/monitor_shadow.py``, ``scripts/run_shadow_test.py``)
working from a checkout with and without ``ultra_signals`` importable."""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys
import sysconfig
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Histogram
from rich.console import Console

from tests.conftest import REPO, free_port
from ultra_signals.apps.monitor import (
    ScrapeError,
    histogram_quantile,
    not_listening_message,
    render,
    run_monitor,
    scrape,
)
from ultra_signals.observability.metrics import LATENCY_BUCKETS_MS, Metrics

pytestmark = pytest.mark.timeout(60)
INF = math.inf


# -- histogram_quantile ----------------------------------------------------------------------------------------
def test_quantile_interpolates_inside_the_bucket() -> None:
    buckets = [(1.0, 10.0), (2.0, 20.0), (4.0, 30.0), (INF, 30.0)]
    assert histogram_quantile(buckets, 0.5) == pytest.approx(1.5)  # rank 15 → 1 + (2-1)·(15-10)/10
    assert histogram_quantile(buckets, 0.25) == pytest.approx(0.75)  # rank 7.5 in [0, 1]
    assert histogram_quantile(buckets, 0.9) == pytest.approx(2.0 + 2.0 * (27 - 20) / 10)
    assert histogram_quantile(buckets, 1.0) == pytest.approx(4.0)


def test_quantile_in_the_inf_bucket_is_the_highest_finite_bound() -> None:
    assert histogram_quantile([(1.0, 1.0), (2.0, 2.0), (INF, 10.0)], 0.95) == 2.0


def test_quantile_edge_cases_follow_prometheus() -> None:
    assert math.isnan(histogram_quantile([(1.0, 0.0), (INF, 0.0)], 0.5))  # no observations
    assert math.isnan(histogram_quantile([(1.0, 3.0), (2.0, 5.0)], 0.5))  # no +Inf bucket
    assert math.isnan(histogram_quantile([(INF, 5.0)], 0.5))  # fewer than two buckets
    assert histogram_quantile([(1.0, 1.0), (INF, 1.0)], -0.1) == -INF
    assert histogram_quantile([(1.0, 1.0), (INF, 1.0)], 1.1) == INF
    # order does not matter, and a dip from a racing scrape is treated as monotonic
    assert histogram_quantile([(INF, 30.0), (2.0, 20.0), (1.0, 10.0)], 0.5) == pytest.approx(1.5)
    assert histogram_quantile([(1.0, 10.0), (2.0, 9.0), (INF, 20.0)], 0.5) == pytest.approx(1.0)


@settings(max_examples=150, deadline=None)
@given(
    values=st.lists(st.floats(min_value=0.0, max_value=5000.0), min_size=1, max_size=200),
    q=st.floats(min_value=0.01, max_value=1.0),
)
def test_quantile_falls_in_the_bucket_of_the_true_quantile(values: list[float], q: float) -> None:
    """Against prometheus_client's own Histogram: the estimate lies in the bucket holding the exact sample."""
    reg = CollectorRegistry()
    h = Histogram("lat_ms", "x", buckets=LATENCY_BUCKETS_MS, registry=reg)
    for v in values:
        h.observe(v)
    buckets = [(float(s.labels["le"]), s.value) for m in reg.collect() for s in m.samples if s.name == "lat_ms_bucket"]
    est = histogram_quantile(buckets, q)
    k = math.ceil(q * len(values))  # the rank Prometheus looks for, 1-based
    exact = sorted(values)[k - 1]
    bounds = [0.0, *LATENCY_BUCKETS_MS]
    i = next(i for i in range(1, len(bounds)) if exact <= bounds[i])
    assert bounds[i - 1] <= est <= bounds[i]
    assert histogram_quantile(buckets, q / 2) <= est  # monotone in q


# -- scraping a real exporter ------------------------------------------------------------------------------------
@pytest.fixture
def exporter() -> Iterator[tuple[Metrics, str]]:
    m = Metrics()
    port = m.serve("127.0.0.1", 0)
    yield m, f"http://127.0.0.1:{port}/metrics"
    m.stop()


def _feed(m: Metrics) -> None:
    m.run_info.labels(run_id="run-abc", mode="shadow", source="sim", simulated="true").set(1)
    for sym, n in (("BTCUSDT", 7), ("ETHUSDT", 5)):
        m.candidates.labels(symbol=sym).inc(n)
    m.allowed.labels(symbol="BTCUSDT", side="LONG").inc(2)
    m.blocked.labels(reason="mtf_required").inc(6)
    m.blocked.labels(reason="hourly_cap").inc(2)
    m.sniper_rejections.labels(reason="mtf_required").inc(6)
    m.sniper_rejections.labels(reason="hourly_cap").inc(2)
    for v in [0.2] * 50 + [0.7] * 40 + [3.0] * 10:
        m.latency.observe(v)
    m.feed_age.labels(symbol="BTCUSDT").set(0.0)
    m.feed_age.labels(symbol="ETHUSDT").set(300.0)
    m.set_backend("memory")
    m.window_count.labels(window="hour").set(2)
    m.window_cap.labels(window="hour").set(2)
    m.window_count.labels(window="day").set(2)
    m.window_cap.labels(window="day").set(6)


def test_scrape_parses_a_real_exporter(exporter: tuple[Metrics, str]) -> None:
    m, url = exporter
    _feed(m)
    snap = scrape(url)
    assert snap.run is not None
    assert (snap.run.run_id, snap.run.mode, snap.run.source, snap.run.simulated) == ("run-abc", "shadow", "sim", True)
    assert snap.candidates == {"BTCUSDT": 7.0, "ETHUSDT": 5.0}
    assert snap.allowed == {("BTCUSDT", "LONG"): 2.0}
    assert snap.blocked == {"mtf_required": 6.0, "hourly_cap": 2.0}
    assert snap.sniper_rejections == {"mtf_required": 6.0, "hourly_cap": 2.0}
    assert snap.latency_count == 100
    # 50 in (0.1, 0.25], 40 in (0.5, 1]: p50 is the top of the first bucket, p95 interpolated in (2, 5]
    assert snap.latency_quantile(0.5) == pytest.approx(0.25)
    assert snap.latency_quantile(0.95) == pytest.approx(2.0 + 3.0 * 5 / 10)
    assert snap.feed_age_s == {"BTCUSDT": 0.0, "ETHUSDT": 300.0}
    assert snap.counter_backend == "memory"
    assert snap.window_count == {"hour": 2.0, "day": 2.0}
    assert snap.window_cap == {"hour": 2.0, "day": 6.0}

    out = io.StringIO()
    Console(file=out, width=220, color_system=None).print(render(snap, None, url=url, scrape_no=1, wall_now=0.0))
    text = out.getvalue()
    for needle in ("run-abc", "SIMULATED", "mtf_required 6", "hour 2/2", "day 2/6", "memory", "ETHUSDT 300 s"):
        assert needle in text


def test_second_scrape_shows_what_changed(exporter: tuple[Metrics, str]) -> None:
    m, url = exporter
    _feed(m)
    first = scrape(url)
    m.candidates.labels(symbol="BTCUSDT").inc(3)
    m.latency.observe(40.0)
    second = scrape(url)
    out = io.StringIO()
    Console(file=out, width=220, color_system=None).print(render(second, first, url=url, scrape_no=2, wall_now=0.0))
    text = out.getvalue()
    assert "15 (+3)" in text
    assert "since last scrape p95 48.75 ms" in text  # the one new observation: 25 + 25 × 0.95 in (25, 50]


def test_run_monitor_against_a_live_exporter_exits_zero(exporter: tuple[Metrics, str]) -> None:
    m, url = exporter
    _feed(m)
    out = io.StringIO()
    code = run_monitor(url, duration_minutes=0, interval_s=1, console=Console(file=out, width=200))
    assert code == 0
    assert "1 of 1 scrapes succeeded" in out.getvalue()


# -- nobody listening ----------------------------------------------------------------------------------------
def test_no_run_listening_says_so_and_keeps_retrying() -> None:
    url = f"http://127.0.0.1:{free_port()}/metrics"
    with pytest.raises(ScrapeError) as e:
        scrape(url)
    assert str(e.value) == not_listening_message(url)
    assert "no ultra-signals run is listening on" in str(e.value) and "ultra-signals shadow" in str(e.value)

    # a fake clock: three intervals of 30 s in a 1.5-minute window, without waiting
    now = [0.0]
    slept: list[float] = []

    def sleep(s: float) -> None:
        slept.append(s)
        now[0] += s

    out = io.StringIO()
    code = run_monitor(url, 1.5, 30.0, Console(file=out, width=300), clock=lambda: now[0], sleep=sleep, timeout_s=1.0)
    assert code == 1
    assert slept == [30.0, 30.0, 30.0]
    text = out.getvalue()
    assert f"no ultra-signals run is listening on {url}" in text
    assert "0 of 4 scrapes succeeded" in text


def test_something_else_on_the_port_is_not_mistaken_for_a_run() -> None:
    from prometheus_client import Counter, start_http_server

    reg = CollectorRegistry()
    Counter("other_app_requests", "x", registry=reg).inc()
    server, _thread = start_http_server(0, addr="127.0.0.1", registry=reg)
    try:
        url = f"http://127.0.0.1:{server.server_port}/metrics"
        with pytest.raises(ScrapeError, match="not an ultra-signals run"):
            scrape(url)
    finally:
        server.shutdown()
        server.server_close()


# -- operator scripts ----------------------------------------------------------------------------------------
def _script_env(importable: bool) -> tuple[list[str], dict[str, str]]:
    """Interpreter flags and env: with ``ultra_signals`` importable (as if installed) or only the dependencies.

    ``python -S`` skips site processing, so no .pth file (an editable install) can make the package importable;
    the venv's site-packages on PYTHONPATH then provides only the dependencies.
    """
    site = sysconfig.get_paths()["purelib"]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ULTRA_SIGNALS_", "PYTHON"))}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), site] if importable else [site])
    env["COLUMNS"] = "200"
    return [sys.executable, "-S"], env


@pytest.mark.parametrize("importable", [True, False])
def test_monitor_script_runs_from_anywhere(tmp_path: Path, importable: bool) -> None:
    py, env = _script_env(importable)
    url = f"http://127.0.0.1:{free_port()}/metrics"
    args = [*py, str(REPO / "scripts" / "monitor_shadow.py"), "--duration", "0", "--interval", "1", "--url", url]
    proc = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 1, proc.stderr
    assert "no ultra-signals run is listening on" in proc.stdout


@pytest.mark.parametrize("importable", [True, False])
def test_run_shadow_script_is_the_shadow_command(tmp_path: Path, importable: bool) -> None:
    py, env = _script_env(importable)
    script = [*py, str(REPO / "scripts" / "run_shadow_test.py"), "--help"]
    cli = [*py, "-m", "ultra_signals", "shadow", "--help"]
    env_cli = {**env, "PYTHONPATH": os.pathsep.join([str(REPO), env["PYTHONPATH"]])}
    a = subprocess.run(script, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    b = subprocess.run(cli, cwd=tmp_path, env=env_cli, capture_output=True, text=True, timeout=30)
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert "--duration" in a.stdout
    norm_a = a.stdout.replace("run_shadow_test.py shadow", "PROG")
    norm_b = b.stdout.replace("python -m ultra_signals shadow", "PROG")
    assert norm_a.split() == norm_b.split()


@pytest.mark.timeout(180)
def test_the_seeds_two_terminal_workflow(tmp_path: Path) -> None:
    """Issue 10: the seed's two commands, in two processes, monitor first: it finds the run, shows the table
    for the whole run, then the verdict and the report path, and exits.  ``--speed 600`` (120 market minutes in
    12 s) and ``--interval 1`` only make it short; the default pacing is real time."""
    py, env = _script_env(True)
    env["ULTRA_SIGNALS_METRICS__PORT"] = str(free_port())  # the "same default port" of both, away from 9108
    mon = subprocess.Popen(
        [*py, str(REPO / "scripts" / "monitor_shadow.py"), "--duration", "120", "--interval", "1"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        time.sleep(1.5)  # the monitor is up and finds nothing yet
        run = subprocess.run(
            [*py, str(REPO / "scripts" / "run_shadow_test.py"), "--duration", "120", "--speed", "600"],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=150,
        )  # fmt: skip
        out, err = mon.communicate(timeout=30)
    finally:
        if mon.poll() is None:
            mon.kill()
            mon.wait(timeout=10)
    assert run.returncode == 1, run.stderr[-2000:]  # 120 minutes cannot reach the daily cap: NO-GO
    assert "progress" in run.stdout and "% market time" in run.stdout  # plain progress lines when piped
    assert mon.returncode == 0, err[-2000:]
    [md] = (tmp_path / "reports").glob("shadow_results_*.md")
    run_id = md.stem.removeprefix("shadow_results_")
    tables = out.count(f"{run_id} · SHADOW · source sim")
    assert tables >= 5, out[-3000:]  # the live table, scrape after scrape, through the run
    tail = out.strip().splitlines()[-3:]
    assert tail[0] == f"run {run_id} completed: verdict NO-GO (exit status 1)", out[-3000:]
    assert tail[1] == f"report: reports/shadow_results_{run_id}.md"
    assert tail[2].startswith("monitor stopped:")
    assert "…" not in out  # piped tables are not cut at 80 columns
