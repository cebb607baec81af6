"""Preflight: every check passes on the embedded default, fails with a clear detail on a real fault, and changes
nothing (journal rows, journal files, Redis keys).  Binance and Telegram are local HTTP servers on 127.0.0.1."""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import redis
from sqlalchemy import func, inspect, select, text

from tests.conftest import PG_URL, free_port, pg_unavailable, require_data
from ultra_signals.apps.preflight import Check, check_caps, run_preflight
from ultra_signals.core.config import Settings, load_settings
from ultra_signals.journal import migrate
from ultra_signals.journal.schema import runs
from ultra_signals.journal.writer import Journal, make_engine

pytestmark = pytest.mark.timeout(60)

TOKEN = "123456:preflight-test-token-SECRET"
API_KEY = "binance-key-SECRET-0001"
API_SECRET = "binance-secret-SECRET-0002"


def settings(
    tmp_path: Path,
    over: dict[str, Any] | None = None,
    *,
    profile: str = "shadow",
    environ: dict[str, str] | None = None,
) -> Settings:
    """Settings isolated from the machine: journal, reports and metrics port of this test only."""
    base: dict[str, Any] = {
        "journal.url": f"sqlite:///{tmp_path}/var/journal.db",
        "report.dir": str(tmp_path / "reports"),
        "metrics.port": free_port(),
    }
    base.update(over or {})
    return load_settings(profile, overrides=base, environ=environ or {})


def by_name(checks: list[Check]) -> dict[str, Check]:
    return {c.name: c for c in checks}


# -- local stand-ins for the internet ------------------------------------------------------------------------
Route = Callable[[str], tuple[int, dict[str, Any]]]


@pytest.fixture
def http_server() -> Iterator[Callable[[Route], str]]:
    """Start a JSON HTTP server on 127.0.0.1 answering GETs with ``route(path)``; returns its base URL."""
    servers: list[ThreadingHTTPServer] = []

    def start(route: Route) -> str:
        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                status, body = route(self.path)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=srv.serve_forever, daemon=True).start()
        servers.append(srv)
        return f"http://127.0.0.1:{srv.server_address[1]}"

    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def binance_route(skew_ms: int = 0) -> Route:
    """Binance USDT-M public endpoints as documented: ping answers ``{}``, time ``{"serverTime": ms}``."""

    def route(path: str) -> tuple[int, dict[str, Any]]:
        if path == "/fapi/v1/ping":
            return 200, {}
        if path == "/fapi/v1/time":
            return 200, {"serverTime": int(time.time() * 1000) + skew_ms}
        return 404, {"code": -5000, "msg": "Path not found"}

    return route


def telegram_route(token: str) -> Route:
    """Bot API getMe: ``{"ok": true, "result": User}``, 401 ``{"ok": false, ...}`` for another token."""

    def route(path: str) -> tuple[int, dict[str, Any]]:
        if path == f"/bot{token}/getMe":
            user = {"id": 123456, "is_bot": True, "first_name": "Ultra", "username": "ultra_signals_test_bot"}
            return 200, {"ok": True, "result": user}
        return 401, {"ok": False, "error_code": 401, "description": "Unauthorized"}

    return route


# -- the embedded default --------------------------------------------------------------------------------------
def test_default_settings_pass_every_check(tmp_path: Path) -> None:
    checks = run_preflight(settings(tmp_path))
    names = [c.name for c in checks]
    assert names == [
        "config",
        "caps",
        "journal",
        "metrics port",
        "counter backend",
        "market source",
        "notifier",
        "secrets",
        "binance account",
        "disk space",
    ]
    failed = [c for c in checks if not c.ok]
    assert failed == []
    got = by_name(checks)
    assert "memory counters" in got["counter backend"].detail
    assert "SIMULATED" in got["market source"].detail
    assert "GiB free" in got["disk space"].detail
    assert got["binance account"].detail == "not needed (mode shadow, broker paper)"
    # nothing left behind: neither the journal file nor its folder, nor a reports folder
    assert not (tmp_path / "var").exists()
    assert not (tmp_path / "reports").exists()


# -- metrics port ------------------------------------------------------------------------------------------------
def test_taken_metrics_port_fails_with_a_clear_detail(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        check = by_name(run_preflight(settings(tmp_path, {"metrics.port": port})))["metrics port"]
    assert not check.ok
    assert f"127.0.0.1:{port} is taken" in check.detail
    assert "metrics.port" in check.detail


# -- journal -------------------------------------------------------------------------------------------------
def test_unwritable_journal_fails(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")  # tests may run as root: permissions alone would not stop a write
    s = settings(tmp_path, {"journal.url": f"sqlite:///{blocker}/sub/journal.db"})
    check = by_name(run_preflight(s))["journal"]
    assert not check.ok
    assert str(blocker) in check.detail


def test_journal_probe_leaves_no_row_and_no_table(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/j.db"
    j = Journal(url)
    j.start_run("r1", mode="shadow", profile="shadow", source="sim", simulated=True, namespace="n", settings={})
    j.close()
    before_tables = set(inspect(make_engine(url)).get_table_names())

    check = by_name(run_preflight(settings(tmp_path, {"journal.url": url})))["journal"]

    assert check.ok, check.detail
    assert "probe row written to runs, rolled back" in check.detail
    assert f"schema {migrate.head()} (current)" in check.detail
    eng = make_engine(url)
    with eng.connect() as c:
        assert c.execute(select(runs.c.run_id)).scalars().all() == ["r1"]
    assert set(inspect(eng).get_table_names()) == before_tables
    eng.dispose()


def test_journal_of_an_older_or_newer_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/j.db"
    Journal(url).close()
    eng = make_engine(url)
    migrate.downgrade(eng, url, migrate.BASELINE)
    check = by_name(run_preflight(settings(tmp_path, {"journal.url": url})))["journal"]
    assert check.ok and f"the run upgrades it to {migrate.head()}" in check.detail, check.detail
    assert migrate.current(eng).current == migrate.BASELINE  # preflight upgrades nothing
    with eng.begin() as c:
        c.execute(text("UPDATE alembic_version SET version_num = '9999'"))
    eng.dispose()
    check = by_name(run_preflight(settings(tmp_path, {"journal.url": url})))["journal"]
    assert not check.ok and "9999 is newer than this release" in check.detail, check.detail


def test_fresh_journal_probe_leaves_no_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/deep/er/journal.db"
    check = by_name(run_preflight(settings(tmp_path, {"journal.url": url})))["journal"]
    assert check.ok, check.detail
    assert "probe table written" in check.detail
    assert list(tmp_path.iterdir()) == []


def test_a_canary_on_a_journal_it_would_have_to_create_fails_until_the_journal_is_created(tmp_path: Path) -> None:
    """A canary (or live) run that has to create its journal starts HALTED (bootstrap.halt_if_journal_lost): the
    journal check says so and how to fix it, instead of passing a run that would trade nothing."""
    url = f"sqlite:///{tmp_path}/var/journal.db"
    over = {"journal.url": url, "runtime.source": "binance", "redis.enabled": False}
    check = by_name(run_preflight(settings(tmp_path, over, profile="canary")))["journal"]
    assert not check.ok and "starts HALTED" in check.detail and "ultra-signals db upgrade" in check.detail
    assert not (tmp_path / "var").exists()  # the probe still leaves nothing behind
    eng = make_engine(url)
    migrate.upgrade(eng, url, "head")
    eng.dispose()
    check = by_name(run_preflight(settings(tmp_path, over, profile="canary")))["journal"]
    assert check.ok and "(current)" in check.detail, check.detail


def _pg_or_skip() -> None:
    why = pg_unavailable()
    if why is not None:
        pytest.skip(f"no PostgreSQL answers at {PG_URL}: {why}")


def test_postgresql_probe_on_an_empty_schema_is_rolled_back(tmp_path: Path) -> None:
    _pg_or_skip()
    schema = f"preflight_{uuid.uuid4().hex[:10]}"
    admin = make_engine(PG_URL)
    with admin.begin() as c:
        c.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        url = f"{PG_URL}?options=-csearch_path%3D{schema}"
        check = by_name(run_preflight(settings(tmp_path, {"journal.url": url})))["journal"]
        assert check.ok, check.detail
        assert "probe table written" in check.detail
        assert inspect(admin).get_table_names(schema=schema) == []
        # once the schema exists the probe is a row in runs, rolled back too
        eng = make_engine(url)
        Journal(url).close()
        check = by_name(run_preflight(settings(tmp_path, {"journal.url": url})))["journal"]
        assert check.ok, check.detail
        assert "probe row written to runs" in check.detail
        with eng.connect() as c:
            assert c.execute(select(func.count()).select_from(runs)).scalar() == 0
        eng.dispose()
    finally:
        with admin.begin() as c:
            c.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


# -- counter backend ---------------------------------------------------------------------------------------------
def test_unreachable_redis_fails_under_block(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    s = settings(tmp_path, {"redis.enabled": True, "redis.port": port, "redis.on_failure": "block"})
    check = by_name(run_preflight(s))["counter backend"]
    assert not check.ok
    assert f"127.0.0.1:{port}" in check.detail
    assert "unreachable" in check.detail and "on_failure=block" in check.detail


def test_unreachable_redis_reports_fallback_ready_under_memory(tmp_path: Path) -> None:
    port = free_port()
    s = settings(tmp_path, {"redis.enabled": True, "redis.port": port, "redis.on_failure": "memory"})
    check = by_name(run_preflight(s))["counter backend"]
    assert check.ok
    assert "unreachable" in check.detail and "fallback ready" in check.detail


def _keys(client: redis.Redis, ns: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key in sorted(client.scan_iter(match=f"ultra_signals:{{{ns}*", count=1000)):
        kind = client.type(key)
        if kind == b"zset":
            out[key.decode()] = client.zrange(key, 0, -1, withscores=True)
        elif kind == b"hash":
            out[key.decode()] = client.hgetall(key)
        else:
            out[key.decode()] = client.dump(key)
    return out


def test_preflight_never_touches_the_counter_keys(tmp_path: Path, redis_url: str, namespace: str) -> None:
    client = redis.Redis.from_url(redis_url)
    prefix = f"ultra_signals:{{{namespace}:shadow}}:sniper"
    now_ms = int(time.time() * 1000)
    client.zadd(f"{prefix}:all", {f"r{i}|BTCUSDT": now_ms - i * 60_000 for i in range(3)})
    client.zadd(f"{prefix}:sym:BTCUSDT", {f"r{i}|BTCUSDT": now_ms - i * 60_000 for i in range(3)})
    client.hset(f"{prefix}:meta", mapping={"latest": now_ms})
    before = _keys(client, namespace)
    assert len(before) == 3

    s = settings(
        tmp_path,
        {"redis.enabled": True, "redis.url": redis_url, "redis.namespace": namespace, "redis.timeout_ms": 1000},
    )
    check = by_name(run_preflight(s))["counter backend"]

    assert check.ok, check.detail
    assert "PING" in check.detail and " ms" in check.detail
    assert _keys(client, namespace) == before
    client.close()


# -- market source -------------------------------------------------------------------------------------------
def test_binance_source_is_pinged(tmp_path: Path, http_server: Callable[[Route], str]) -> None:
    base = http_server(binance_route(skew_ms=40))
    s = settings(tmp_path, {"runtime.source": "binance", "binance.rest_url": base})
    check = by_name(run_preflight(s))["market source"]
    assert check.ok, check.detail
    assert f"{base} ping" in check.detail and "clock skew" in check.detail


def test_binance_clock_skew_beyond_recv_window_fails(tmp_path: Path, http_server: Callable[[Route], str]) -> None:
    base = http_server(binance_route(skew_ms=600_000))
    s = settings(tmp_path, {"runtime.source": "binance", "binance.rest_url": base})
    check = by_name(run_preflight(s))["market source"]
    assert not check.ok
    assert "sync the clock" in check.detail


def test_binance_unreachable_fails(tmp_path: Path) -> None:
    base = f"http://127.0.0.1:{free_port()}"
    s = settings(tmp_path, {"runtime.source": "binance", "binance.rest_url": base})
    check = by_name(run_preflight(s))["market source"]
    assert not check.ok
    assert f"{base} unreachable" in check.detail


def test_replay_source_lists_the_folder(tmp_path: Path) -> None:
    folder = require_data("klines")
    s = settings(tmp_path, {"runtime.source": "replay", "replay.data_dir": str(folder)})
    check = by_name(run_preflight(s))["market source"]
    assert check.ok, check.detail
    assert "XRPUSDT" in check.detail and "ETHBTC" in check.detail


def test_replay_without_a_folder_fails(tmp_path: Path) -> None:
    s = settings(tmp_path, {"runtime.source": "replay", "replay.data_dir": str(tmp_path / "nowhere")})
    check = by_name(run_preflight(s))["market source"]
    assert not check.ok
    assert "nowhere" in check.detail


# -- notifier and secrets ------------------------------------------------------------------------------------
def test_telegram_getme_and_the_token_never_shown(tmp_path: Path, http_server: Callable[[Route], str]) -> None:
    api = http_server(telegram_route(TOKEN))
    env = {"ULTRA_SIGNALS_TELEGRAM__BOT_TOKEN": TOKEN}
    s = settings(
        tmp_path, {"notifier.sink": "telegram", "telegram.api_url": api, "telegram.chat_ids": "42"}, environ=env
    )
    checks = by_name(run_preflight(s))
    assert checks["notifier"].ok, checks["notifier"].detail
    assert "@ultra_signals_test_bot" in checks["notifier"].detail
    assert checks["secrets"].ok and "telegram.bot_token" in checks["secrets"].detail
    assert all(TOKEN not in c.detail for c in checks.values())


def test_telegram_rejected_token_fails(tmp_path: Path, http_server: Callable[[Route], str]) -> None:
    api = http_server(telegram_route("another:token"))
    env = {"ULTRA_SIGNALS_TELEGRAM__BOT_TOKEN": TOKEN}
    s = settings(
        tmp_path, {"notifier.sink": "telegram", "telegram.api_url": api, "telegram.chat_ids": "42"}, environ=env
    )
    check = by_name(run_preflight(s))["notifier"]
    assert not check.ok
    assert "401" in check.detail and TOKEN not in check.detail


def test_telegram_without_token_fails_notifier_and_secrets(tmp_path: Path) -> None:
    s = settings(tmp_path, {"notifier.sink": "telegram", "telegram.chat_ids": "42"})
    checks = by_name(run_preflight(s))
    assert not checks["notifier"].ok and "telegram.bot_token" in checks["notifier"].detail
    assert not checks["secrets"].ok
    assert "ULTRA_SIGNALS_TELEGRAM__BOT_TOKEN" in checks["secrets"].detail


def test_canary_needs_binance_keys_and_never_prints_them(tmp_path: Path, http_server: Callable[[Route], str]) -> None:
    base = http_server(binance_route())
    over = {"binance.rest_url": base, "redis.enabled": False}
    missing = by_name(run_preflight(settings(tmp_path, over, profile="canary")))["secrets"]
    assert not missing.ok
    assert "binance.api_key" in missing.detail and "ULTRA_SIGNALS_BINANCE__API_SECRET" in missing.detail

    env = {"ULTRA_SIGNALS_BINANCE__API_KEY": API_KEY, "ULTRA_SIGNALS_BINANCE__API_SECRET": API_SECRET}
    checks = run_preflight(settings(tmp_path, over, profile="canary", environ=env))
    got = by_name(checks)
    assert got["secrets"].ok, got["secrets"].detail
    assert got["market source"].ok, got["market source"].detail
    assert got["config"].ok and got["config"].detail.startswith("warning:")  # redis disabled in canary
    for c in checks:
        assert API_KEY not in c.detail and API_SECRET not in c.detail


# -- config and caps ---------------------------------------------------------------------------------------------
def test_canary_on_simulated_prices_fails_config(tmp_path: Path) -> None:
    check = by_name(run_preflight(settings(tmp_path, {"runtime.source": "sim"}, profile="canary")))["config"]
    assert not check.ok
    assert "runtime.source: binance" in check.detail


def test_shadow_with_a_real_broker_fails_config(tmp_path: Path) -> None:
    check = by_name(run_preflight(settings(tmp_path, {"execution.broker": "binance"})))["config"]
    assert not check.ok
    assert "mode shadow sends no orders" in check.detail


def test_per_symbol_caps_above_the_global_ones_fail(tmp_path: Path) -> None:
    s = settings(tmp_path, {"sniper.per_symbol_max_per_hour": 3, "sniper.per_symbol_daily_cap": 4})
    check = by_name(run_preflight(s))["caps"]
    assert not check.ok
    assert "per_symbol_max_per_hour 3 exceeds the global max_signals_per_hour 2" in check.detail


def test_caps_check_stands_on_its_own_without_the_config_validator(tmp_path: Path) -> None:
    """Settings built around validation (model_copy) still get hourly > daily and hourly < 1 caught."""
    s = settings(tmp_path)
    bad = s.model_copy(update={"sniper": s.sniper.model_copy(update={"max_signals_per_hour": 0})})
    ok, detail = check_caps(bad)
    assert not ok and "nothing could ever pass" in detail
    bad = s.model_copy(update={"sniper": s.sniper.model_copy(update={"max_signals_per_hour": 9})})
    ok, detail = check_caps(bad)
    assert not ok and "exceeds daily_signal_cap 6" in detail


# -- disk ------------------------------------------------------------------------------------------------------
def test_too_little_disk_space_fails_with_the_figure(tmp_path: Path) -> None:
    check = by_name(run_preflight(settings(tmp_path), min_free_bytes=1 << 60))["disk space"]
    assert not check.ok
    assert "(LOW)" in check.detail and "GiB free" in check.detail


def test_probe_table_in_an_existing_sqlite_file_is_rolled_back(tmp_path: Path) -> None:
    """pysqlite would commit a CREATE TABLE on its own; the probe must still leave the schema as it found it."""
    import sqlite3

    db = tmp_path / "other.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE other (x INTEGER)")
    url = f"sqlite:///{db}"
    check = by_name(run_preflight(settings(tmp_path, {"journal.url": url})))["journal"]
    assert check.ok, check.detail
    assert "probe table written" in check.detail
    with sqlite3.connect(db) as conn:
        names = [r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
    assert names == ["other"]


# -- binance account: the keys proven against the strict fake ----------------------------------------------------
@pytest.fixture
def futures_fake() -> Iterator[Any]:
    """The strict USDⓈ-M fake on its own event loop thread (preflight is synchronous)."""
    import asyncio

    from tests.fakes.binance_futures_server import FakeFuturesExchange, load_recorded_exchange_info_text

    path = require_data("ws", "binance-futures-exchangeinfo-20210722.txt")
    ex = FakeFuturesExchange(load_recorded_exchange_info_text(str(path)), API_KEY, API_SECRET)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(ex.start(), loop).result(10)
    yield ex
    asyncio.run_coroutine_threadsafe(ex.stop(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def account_check(tmp_path: Path, ex: Any, secret: str = API_SECRET, **over: Any) -> Check:
    env = {"ULTRA_SIGNALS_BINANCE__API_KEY": API_KEY, "ULTRA_SIGNALS_BINANCE__API_SECRET": secret}
    o = {"binance.rest_url": ex.rest_url, "binance.spot_rest_url": ex.rest_url, "redis.enabled": False, **over}
    checks = run_preflight(settings(tmp_path, o, profile="canary", environ=env))
    for c in checks:
        assert API_KEY not in c.detail and API_SECRET not in c.detail
    return by_name(checks)["binance account"]


def test_binance_keys_are_proven_read_only(tmp_path: Path, futures_fake: Any) -> None:
    got = account_check(tmp_path, futures_fake)
    assert got.ok and got.detail.startswith("keys accepted; clock offset"), got.detail
    assert "one-way, single-asset" in got.detail and "available 10000.00 USDT" in got.detail
    assert futures_fake.orders == {} and futures_fake.algo_orders == {}  # nothing placed, nothing changed
    assert {m for m, _, _ in futures_fake.requests} == {"GET"}
    assert ("GET", "/sapi/v1/account/apiRestrictions") in [(m, p) for m, p, _ in futures_fake.requests]


def test_a_key_that_can_withdraw_is_refused(tmp_path: Path, futures_fake: Any) -> None:
    futures_fake.api_restrictions["enableWithdrawals"] = True
    got = account_check(tmp_path, futures_fake)
    assert not got.ok and "can WITHDRAW" in got.detail


def test_a_key_without_ip_restriction_is_a_warning(tmp_path: Path, futures_fake: Any) -> None:
    futures_fake.api_restrictions["ipRestrict"] = False
    got = account_check(tmp_path, futures_fake)
    assert got.ok and got.detail.startswith("warning:") and "no IP restriction" in got.detail


def test_wrong_secret_hedge_mode_and_thin_balance_fail_clearly(tmp_path: Path, futures_fake: Any) -> None:
    bad = account_check(tmp_path, futures_fake, secret="not-the-secret")
    assert not bad.ok and "-1022" in bad.detail and "wrong key or secret" in bad.detail
    futures_fake.dual_side = True
    assert "Hedge Mode" in account_check(tmp_path, futures_fake).detail
    futures_fake.dual_side = False
    futures_fake.balance = type(futures_fake.balance)("50")
    thin = account_check(tmp_path, futures_fake)
    assert not thin.ok and "available balance 50.00 USDT < 100.00 USDT" in thin.detail
