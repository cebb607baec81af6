"""Go-live checks that touch every dependency of a run without changing anything it depends on.

An operator runs ``ultra-signals preflight`` minutes before money is at stake, often against the very Redis and
journal a running deployment uses.  So every probe is read-only or undone: the journal write is rolled back
(and a journal file the probe had to create is removed again), the metrics port is bound and released, Redis
only gets a PING (never a reservation: preflight must not take a cap slot), the exchange only gets its public
ping.  Each check reports its own figures (latency, free space) so the table is evidence, not a green tick.

Rule for the counter backend (``redis.enabled``): an unreachable Redis FAILS under ``redis.on_failure=block``,
because that run would let no signal through until Redis answers; under ``on_failure=memory`` it PASSES with
"fallback ready", because the run then starts on in-process counters rebuilt from the journal, exactly as
configured (the config check separately warns when a canary/live profile chose ``memory``).

Warnings (a setting that works but is not recommended) keep a check passing and start its detail with
``warning:``.  Secret values never reach a detail: every detail is scrubbed of them before it is returned.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Column, Engine, Integer, MetaData, Table, event, insert, inspect
from sqlalchemy.engine import make_url

from ultra_signals.core.config import Settings, secret_values
from ultra_signals.core.redaction import redact
from ultra_signals.journal.db import make_engine
from ultra_signals.venues.binance.endpoints import endpoints_from_settings

GIB = 1 << 30
NO_TABLES = "no journal tables yet"
#: Free space below this on the journal's or the reports' filesystem fails the disk check.
MIN_FREE_BYTES = GIB
#: Public endpoints get this long: preflight answers in seconds even when a dependency hangs.
HTTP_TIMEOUT_S = 3.0
TELEGRAM_TIMEOUT_S = 2.0
#: Simulator probe: building it and drawing its first event must finish within this.
SIM_TIMEOUT_S = 20.0
#: Dialects whose DDL is transactional, so a probe table created inside a rolled-back transaction never existed.
_TRANSACTIONAL_DDL = {"sqlite", "postgresql"}


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    ok: bool
    detail: str


def run_preflight(settings: Settings, *, min_free_bytes: int = MIN_FREE_BYTES) -> list[Check]:
    """Every go-live check in a fixed order; a check that raises is reported as failed, never crashes the rest."""
    steps: list[tuple[str, Callable[[Settings], tuple[bool, str]]]] = [
        ("config", check_config),
        ("caps", check_caps),
        ("journal", check_journal),
        ("metrics port", check_metrics_port),
        ("counter backend", check_counter_backend),
        ("market source", check_market_source),
        ("notifier", check_notifier),
        ("secrets", check_secrets),
        ("binance account", check_binance_account),
        ("disk space", lambda s: check_disk_space(s, min_free_bytes)),
    ]
    secrets = _secret_values(settings)
    out: list[Check] = []
    for name, fn in steps:
        try:
            ok, detail = fn(settings)
        except Exception as e:  # a probe bug must show as a failed check, not hide the other checks
            ok, detail = False, f"the check itself failed: {_err(e)}"
        out.append(Check(name, ok, _scrub(detail, secrets)))
    return out


# -- configuration ------------------------------------------------------------------------------------------
def check_config(s: Settings) -> tuple[bool, str]:
    """The profile's parts must fit together: real money needs real prices, shadow must never place orders."""
    rt, ex = s.runtime, s.execution
    problems: list[str] = []
    warnings: list[str] = []
    trading = rt.mode in ("canary", "live")
    if trading and rt.source != "binance":
        problems.append(f"mode {rt.mode} needs the live market source (runtime.source: binance), not {rt.source}")
    if rt.mode == "shadow" and ex.broker == "binance":
        problems.append("mode shadow sends no orders but execution.broker is binance (use paper or none)")
    if trading:
        if not s.redis.enabled:
            warnings.append("redis disabled: caps are per process, not shared across runners")
        elif s.redis.on_failure != "block":
            warnings.append(
                "redis.on_failure=memory: on a Redis outage each runner keeps its own caps (block recommended)"
            )
        if ex.broker != "binance":
            warnings.append(f"execution.broker is {ex.broker}: no real orders in mode {rt.mode}")
        if s.binance.testnet:
            warnings.append("binance.testnet is on: demo exchange, not the real market")
    if not s.metrics.enabled:
        warnings.append("metrics disabled: the monitor and the shadow criteria have nothing to read")
    head = f"profile {s.profile}: mode {rt.mode}, source {rt.source}, broker {ex.broker}"
    if problems:
        return False, f"{head}; " + "; ".join(problems)
    if warnings:
        return True, f"warning: {'; '.join(warnings)} ({head})"
    return True, head


def check_caps(s: Settings) -> tuple[bool, str]:
    """Caps are the last line of defence; a cap that can never bind (or binds nothing) is a configuration bug."""
    sn = s.sniper
    hour, day = sn.max_signals_per_hour, sn.daily_signal_cap
    sym_hour, sym_day = sn.per_symbol_max_per_hour, sn.per_symbol_daily_cap
    problems: list[str] = []
    if not sn.enabled and s.runtime.mode in ("canary", "live"):
        problems.append(f"sniper.enabled is false in mode {s.runtime.mode}: no cap, cooldown or MTF check")
    if hour < 1:
        problems.append(f"max_signals_per_hour {hour} < 1: nothing could ever pass")
    if hour > day:
        problems.append(f"max_signals_per_hour {hour} exceeds daily_signal_cap {day}")
    if sym_hour is not None and sym_hour > hour:
        problems.append(f"per_symbol_max_per_hour {sym_hour} exceeds the global max_signals_per_hour {hour}")
    if sym_day is not None and sym_day > day:
        problems.append(f"per_symbol_daily_cap {sym_day} exceeds the global daily_signal_cap {day}")
    if sym_hour is not None and sym_day is not None and sym_hour > sym_day:
        problems.append(f"per_symbol_max_per_hour {sym_hour} exceeds per_symbol_daily_cap {sym_day}")
    per_symbol = (
        f"per symbol {sym_hour if sym_hour is not None else '-'}/h, {sym_day if sym_day is not None else '-'}/day"
        if sym_hour is not None or sym_day is not None
        else "no per-symbol caps"
    )
    head = f"global {hour}/h, {day}/day; {per_symbol}; cooldown {sn.cooldown_bars} bars"
    if problems:
        return False, "; ".join(problems)
    if not sn.enabled:
        return True, f"warning: sniper disabled (caps not enforced) ({head})"
    return True, head


# -- journal ------------------------------------------------------------------------------------------------
def check_journal(s: Settings) -> tuple[bool, str]:
    """Prove the journal takes writes with one the database then forgets: a rolled-back transaction.

    With the journal's tables present the probe is a row in ``runs`` (the real table, its real permissions);
    on a fresh journal it is a probe table, created only where DDL is transactional so the rollback removes it.
    A SQLite file (or folder) the probe had to create is deleted again: preflight leaves the disk as it was.
    """
    url = make_url(s.journal.url)
    shown = url.render_as_string(hide_password=True)
    backend = url.get_backend_name()
    db_file: Path | None = None
    new_dirs: list[Path] = []
    existed = True
    if backend == "sqlite" and url.database and url.database != ":memory:":
        db_file = Path(url.database)
        parent = db_file.parent.absolute()
        new_dirs = [p for p in (parent, *parent.parents) if not p.exists()]
        existed = db_file.exists()
    try:
        try:
            engine = make_engine(s.journal.url)
        except OSError as e:
            return False, f"{shown}: cannot prepare the journal folder: {_err(e)}"
        try:
            schema = _schema_note(engine)
            if schema.startswith("refused"):
                return False, f"{shown}: {schema}"
            if backend == "sqlite":
                _explicit_sqlite_transactions(engine)
            how = _probe_write(engine, backend)
        except Exception as e:
            return False, f"{shown}: not writable: {_err(e)}"
        finally:
            engine.dispose()
        if how is None:
            return False, (
                f"{shown}: the journal tables do not exist yet and {backend} cannot create a probe table "
                "without committing it; create the schema once (start a run) and re-check"
            )
        fresh = " (new journal: its file was removed again)" if not existed else ""
        if schema.startswith(NO_TABLES) and s.runtime.mode in ("canary", "live") and s.runtime.source == "binance":
            # bootstrap.halt_if_journal_lost: a trading run that has to create its journal starts HALTED (its caps
            # windows and trading state may be lost), so passing here would promise a run that trades nothing.
            return False, (
                f"{shown}: no journal tables yet, and a {s.runtime.mode} run that has to create its journal starts "
                "HALTED (journal_missing); restore a backup (`ultra-signals db restore`) or, for a first run, "
                "create it on purpose with `ultra-signals db upgrade`"
            )
        return True, f"{shown}: {how}, rolled back{fresh}; {schema}"
    finally:
        if db_file is not None and not existed:
            for suffix in ("", "-wal", "-shm", "-journal"):
                with contextlib.suppress(FileNotFoundError):
                    Path(f"{db_file}{suffix}").unlink()
            for d in new_dirs:  # deepest first
                with contextlib.suppress(OSError):
                    d.rmdir()


def _schema_note(engine: Engine) -> str:
    """The journal's schema revision as the run will find it (read only: the run itself does the upgrade)."""
    from ultra_signals.journal import migrate

    rev = migrate.current(engine)
    if not rev.known:
        return (
            f"refused: schema revision {rev.current} is newer than this release (its newest is {rev.head});"
            " a run would not start on it"
        )
    if rev.at_head:
        return f"schema {rev.head} (current)"
    if rev.unversioned:
        return f"0.1.0 journal without a schema revision: the run adopts and upgrades it to {rev.head}"
    if rev.current is None:
        return f"{NO_TABLES}: the run creates them (schema {rev.head})"
    return f"schema {rev.current}: the run upgrades it to {rev.head} at start"


def _explicit_sqlite_transactions(engine: Engine) -> None:
    """pysqlite commits DDL issued outside a transaction it opened itself; take BEGIN/ROLLBACK into our hands.

    ``BEGIN IMMEDIATE`` also takes the write lock at once, so a database that cannot be written fails here.
    """

    @event.listens_for(engine, "connect")
    def _manual(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None

    @event.listens_for(engine, "begin")
    def _begin(conn: Any) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _probe_write(engine: Engine, backend: str) -> str | None:
    """One write inside a transaction that is always rolled back; what was written, or None if nothing could be."""
    from ultra_signals.journal.schema import runs

    tag = f"preflight-{uuid.uuid4().hex[:12]}"
    with engine.connect() as conn:
        tx = conn.begin()
        try:
            if inspect(conn).has_table(runs.name):
                conn.execute(
                    insert(runs).values(
                        run_id=tag,
                        started_at=time.time(),
                        status="preflight",
                        mode="preflight",
                        profile="preflight",
                        source="preflight",
                        simulated=True,
                        namespace="preflight",
                        settings_json="{}",
                    )
                )
                return "probe row written to runs"
            if backend not in _TRANSACTIONAL_DDL:
                return None
            probe = Table(tag.replace("-", "_"), MetaData(), Column("x", Integer))
            probe.create(conn)
            conn.execute(insert(probe).values(x=1))
            return "probe table written (journal schema not created yet)"
        finally:
            tx.rollback()


# -- metrics ------------------------------------------------------------------------------------------------
def check_metrics_port(s: Settings) -> tuple[bool, str]:
    """Bind the exporter's address the way the exporter will (SO_REUSEADDR), then let it go at once."""
    m = s.metrics
    if not m.enabled:
        return True, "warning: metrics disabled (metrics.enabled false): nothing to scrape"
    if m.port == 0:
        return True, f"{m.host}:0: the run picks a free port and prints it"
    try:
        infos = socket.getaddrinfo(m.host, m.port, type=socket.SOCK_STREAM)
    except OSError as e:
        return False, f"metrics.host {m.host!r} does not resolve: {_err(e)}"
    family, socktype, proto, _, addr = infos[0]
    with socket.socket(family, socktype, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(addr)
        except OSError as e:
            return False, (
                f"{m.host}:{m.port} is taken ({e.strerror or e}): another run or program listens there; "
                "stop it or set metrics.port"
            )
    return True, f"{m.host}:{m.port} is free"


# -- counters -----------------------------------------------------------------------------------------------
def check_counter_backend(s: Settings) -> tuple[bool, str]:
    """PING only: a reservation (even one undone) could be counted by a live runner in between."""
    r = s.redis
    if not r.enabled:
        return True, "memory counters (this process only; rebuilt from the journal at start)"
    from ultra_signals.counters.redis_backend import connect, describe_target

    target = describe_target(r)
    client = None
    try:
        client = connect(r)
        t0 = time.perf_counter()
        client.ping()
        ms = (time.perf_counter() - t0) * 1000.0
    except Exception as e:
        reason = _err(e)
        if r.on_failure == "block":
            return False, (
                f"redis {target} unreachable ({reason}); on_failure=block: no signal passes until it answers"
            )
        return True, (
            f"warning: redis {target} unreachable ({reason}); fallback ready: on_failure=memory, the run starts "
            "on in-process counters rebuilt from the journal"
        )
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
    return True, (
        f"redis {target} PING {ms:.1f} ms (timeout {r.timeout_ms:g} ms), namespace {r.namespace}, "
        f"on_failure={r.on_failure}"
    )


# -- market source ------------------------------------------------------------------------------------------
def check_market_source(s: Settings) -> tuple[bool, str]:
    src = s.runtime.source
    if src == "sim":
        return _check_sim(s)
    if src == "replay":
        return _check_replay(s)
    return _check_binance(s)


def _check_sim(s: Settings) -> tuple[bool, str]:
    """Build the simulator the run would build and draw its first event: proves it generates, not just imports."""
    from ultra_signals.observability.metrics import Metrics
    from ultra_signals.sources.factory import build_source

    source = build_source(s, Metrics(), duration_minutes=1)

    async def first() -> object:
        try:
            return await asyncio.wait_for(anext(aiter(source.events())), SIM_TIMEOUT_S)
        finally:
            await source.aclose()

    asyncio.run(first())
    info = source.info
    return True, (
        f"simulator ready (seed {s.sim.seed}): {', '.join(info.symbols)} on {', '.join(info.timeframes)}; "
        "everything it produces is SIMULATED"
    )


def _check_replay(s: Settings) -> tuple[bool, str]:
    from ultra_signals.sources.candles_csv import scan_folder

    folder = s.replay.data_dir
    if not folder:
        return False, "replay needs replay.data_dir (or --data when the run starts)"
    scan = scan_folder(folder)  # raises SourceError naming the folder when it is missing
    if not scan.sets:
        return False, f"{folder}: no <SYMBOL>-<timeframe>.csv candle files"
    found = sorted(scan.sets)
    missing = [sym for sym in s.runtime.symbols if sym not in scan.sets]
    note = f"; configured symbols not in the folder: {', '.join(missing)}" if missing else ""
    return True, f"{folder}: candle files for {len(found)} symbols ({', '.join(found)}){note}"


def _check_binance(s: Settings) -> tuple[bool, str]:
    """Public ping plus server time: an exchange we cannot reach or a skewed clock both stop signed orders."""
    base = endpoints_from_settings(s.binance).rest
    try:
        with httpx.Client(timeout=HTTP_TIMEOUT_S) as http:
            t0 = time.perf_counter()
            ping = http.get(f"{base}/fapi/v1/ping")
            ms = (time.perf_counter() - t0) * 1000.0
            if ping.status_code != 200:
                return False, f"{base}/fapi/v1/ping answered HTTP {ping.status_code}"
            before = time.time()
            resp = http.get(f"{base}/fapi/v1/time")
            after = time.time()
    except httpx.HTTPError as e:
        return False, f"{base} unreachable: {_err(e)}"
    detail = f"{base} ping {ms:.0f} ms"
    server_ms = _json_field(resp, "serverTime") if resp.status_code == 200 else None
    if not isinstance(server_ms, int):
        return True, f"warning: {detail}; server time unavailable (HTTP {resp.status_code}), clock skew unknown"
    skew_ms = server_ms - (before + after) * 500.0
    window = s.execution.recv_window_ms
    if abs(skew_ms) >= window:
        return False, f"{detail}; local clock off by {skew_ms:+.0f} ms (recv_window {window} ms): sync the clock"
    return True, f"{detail}; clock skew {skew_ms:+.0f} ms"


def check_binance_account(s: Settings) -> tuple[bool, str]:
    """Prove the keys work, read-only: one signed account call, the key's permissions, the account's modes.

    Never places an order, never changes a setting (the runner's start does that), never takes a cap slot.
    A key that may withdraw is refused (a leaked trading key must not be able to empty the account); one without
    an IP restriction is a warning.  The permission probe (``GET /sapi/v1/account/apiRestrictions``,
    https://developers.binance.com/docs/wallet/account/api-key-permission) lives on the spot host, which has no
    testnet: skipped there, and said so.
    """
    if s.runtime.mode not in ("canary", "live") or s.execution.broker != "binance":
        return True, f"not needed (mode {s.runtime.mode}, broker {s.execution.broker})"
    b = s.binance
    if b.api_key is None or b.api_secret is None:
        return False, "binance.api_key / binance.api_secret not set: see the secrets check"
    return asyncio.run(_probe_account(s))


async def _probe_account(s: Settings) -> tuple[bool, str]:
    from ultra_signals.venues.binance.account import read_position_mode
    from ultra_signals.venues.binance.client import BinanceFuturesClient, client_from_settings
    from ultra_signals.venues.binance.endpoints import Endpoints
    from ultra_signals.venues.binance.errors import VenueError

    b, e = s.binance, s.execution
    client = client_from_settings(s, name="preflight", trading=True)
    client.timeout_s = HTTP_TIMEOUT_S
    warnings: list[str] = []
    try:
        try:
            offset = await client.sync_time()
            if abs(offset) >= e.recv_window_ms:
                return False, f"clock off by {offset:+d} ms, beyond recv_window {e.recv_window_ms} ms: sync the clock"
            acct = await client.signed("GET", "/fapi/v2/account")
        except VenueError as err:
            hint = " (wrong key or secret, or this IP is not allowed)" if err.code in (-2015, -1022, -2014) else ""
            return False, f"signed account call refused: {err}{hint}"
        if acct.get("canTrade") is False:
            return False, "the futures account cannot trade (canTrade=false)"
        available = float(acct.get("availableBalance", 0.0))
        need = e.max_notional_usdt / max(e.max_leverage, 1.0)
        if available < need:
            return False, (
                f"available balance {available:.2f} USDT < {need:.2f} USDT, the margin of one position at the"
                f" profile's cap ({e.max_notional_usdt:g} USDT at {e.max_leverage:g}x)"
            )
        try:
            hedge, multi = await read_position_mode(client)
        except VenueError as err:
            return False, f"cannot read the position mode: {err}"
        if hedge:
            return (
                False,
                "the account is in Hedge Mode; ultra-signals trades One-way Mode only (Preferences > Position Mode)",
            )
        if multi and e.margin_type == "ISOLATED":
            if e.multi_assets_fallback != "crossed":
                return False, "Multi-Assets mode forbids ISOLATED: turn it off or set execution.margin_type: CROSSED"
            warnings.append("Multi-Assets mode: the run will use CROSSED margin")
        if b.testnet:
            warnings.append("key permissions not checked: the wallet API has no testnet")
        else:
            spot = BinanceFuturesClient(
                Endpoints(b.spot_rest_url.rstrip("/"), ""), api_key=b.api_key, api_secret=b.api_secret,
                recv_window_ms=e.recv_window_ms, timeout_s=HTTP_TIMEOUT_S, name="preflight-wallet",
            )  # fmt: skip
            spot.clock.offset_ms, spot.clock.measured_at_ms = client.clock.offset_ms, client.clock.measured_at_ms
            try:
                perms = await spot.signed("GET", "/sapi/v1/account/apiRestrictions")
            except VenueError as err:
                return False, f"cannot read the key's permissions (/sapi/v1/account/apiRestrictions): {err}"
            finally:
                await spot.aclose()
            if perms.get("enableWithdrawals"):
                return False, "this API key can WITHDRAW: create a key without withdrawals for the runner"
            if not perms.get("enableFutures"):
                return False, "this API key has no futures permission (enableFutures=false)"
            if not perms.get("ipRestrict"):
                warnings.append("the key has no IP restriction: restrict it to this host's IP")
        mode = "multi-assets" if multi else "single-asset"
        detail = (
            f"keys accepted; clock offset {offset:+d} ms; one-way, {mode}; available {available:.2f} USDT"
            f" (one position at the cap needs {need:.2f})"
        )
        return True, ("warning: " + "; ".join(warnings) + "; " + detail) if warnings else detail
    finally:
        await client.aclose()


# -- notifier -----------------------------------------------------------------------------------------------
def check_notifier(s: Settings) -> tuple[bool, str]:
    sink = s.notifier.sink
    if sink == "console":
        return True, "console (standard output)"
    if sink == "none":
        if s.runtime.mode in ("canary", "live"):
            return True, f"warning: notifier.sink none in mode {s.runtime.mode}: nobody is told about signals"
        return True, "none: no notifications are sent"
    t = s.telegram
    token = t.bot_token.get_secret_value() if t.bot_token is not None else ""
    if not token:
        return False, "telegram: telegram.bot_token is not set (env ULTRA_SIGNALS_TELEGRAM__BOT_TOKEN or secrets file)"
    if not t.chat_ids:
        return False, "telegram: telegram.chat_ids is empty: nobody would receive the signals"
    api = t.api_url.rstrip("/")
    try:
        t0 = time.perf_counter()
        resp = httpx.get(f"{api}/bot{token}/getMe", timeout=TELEGRAM_TIMEOUT_S)
        ms = (time.perf_counter() - t0) * 1000.0
    except httpx.HTTPError as e:
        return False, f"telegram {api} unreachable within {TELEGRAM_TIMEOUT_S:g} s: {_err(e)}"
    if resp.status_code == 401:
        return False, f"telegram {api}: the bot token was rejected (HTTP 401 Unauthorized)"
    result = _json_field(resp, "result")
    if resp.status_code != 200 or _json_field(resp, "ok") is not True or not isinstance(result, dict):
        return False, f"telegram {api}: getMe answered HTTP {resp.status_code} without ok=true"
    name = result.get("username") or result.get("first_name") or "?"
    return True, f"telegram bot @{name} answers (getMe {ms:.0f} ms); {len(t.chat_ids)} chat(s) configured"


# -- secrets ------------------------------------------------------------------------------------------------
def check_secrets(s: Settings) -> tuple[bool, str]:
    """Names what the mode needs and whether each is set; values never leave the settings object."""
    needed: dict[str, Any] = {}
    if s.runtime.mode in ("canary", "live") and s.execution.broker == "binance":
        needed["binance.api_key"] = s.binance.api_key
        needed["binance.api_secret"] = s.binance.api_secret
    if s.notifier.sink == "telegram":
        needed["telegram.bot_token"] = s.telegram.bot_token
    if not needed:
        return True, f"none needed (mode {s.runtime.mode}, broker {s.execution.broker}, notifier {s.notifier.sink})"
    missing = [k for k, v in needed.items() if v is None or not v.get_secret_value()]
    present = [k for k in needed if k not in missing]
    if missing:
        envs = ", ".join("ULTRA_SIGNALS_" + k.upper().replace(".", "__") for k in missing)
        have = f"; set: {', '.join(present)}" if present else ""
        return False, f"missing: {', '.join(missing)} (env {envs} or a secrets file){have}"
    return True, f"set: {', '.join(present)}"


# -- disk ---------------------------------------------------------------------------------------------------
def check_disk_space(s: Settings, min_free_bytes: int = MIN_FREE_BYTES) -> tuple[bool, str]:
    """Free space where the run writes: the SQLite journal's folder and the reports folder (which may not exist yet)."""
    places: list[tuple[str, Path]] = []
    url = make_url(s.journal.url)
    if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
        places.append(("journal", Path(url.database).absolute().parent))
    places.append(("reports", Path(s.report.dir).absolute()))
    parts: list[str] = []
    ok = True
    seen: dict[int, str] = {}
    for label, path in places:
        existing = next(p for p in (path, *path.parents) if p.exists())
        dev = existing.stat().st_dev
        free = shutil.disk_usage(existing).free
        same = f", same filesystem as {seen[dev]}" if dev in seen else ""
        seen.setdefault(dev, label)
        low = free < min_free_bytes
        ok = ok and not low
        parts.append(f"{label} {path}: {free / GIB:.1f} GiB free{' (LOW)' if low else ''}{same}")
    if url.get_backend_name() != "sqlite":
        parts.append("journal is a server database: its disk is not checked here")
    return ok, f"need ≥ {min_free_bytes / GIB:.1f} GiB; " + "; ".join(parts)


# -- helpers ------------------------------------------------------------------------------------------------
def _json_field(resp: httpx.Response, key: str) -> Any:
    try:
        data = resp.json()
    except ValueError:
        return None
    return data.get(key) if isinstance(data, dict) else None


def _err(e: BaseException) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _secret_values(s: Settings) -> list[str]:
    return sorted(secret_values(s))


def _scrub(detail: str, secrets: list[str]) -> str:
    return redact(detail, secrets)
