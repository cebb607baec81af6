"""The web API (ultra_signals/web): answers from a real run's journal, its guards, its schema, its server's life.

The app is exercised over a finished simulated shadow run with a real SQLite journal (``tests/web_run.py``): through
Starlette's in-process client for the guards, through a real uvicorn on 127.0.0.1:0 inside a running runner, and
by schemathesis against the app's own OpenAPI schema.
"""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import REPO
from tests.web_run import READ, WRITE, FinishedRun, finished_run
from ultra_signals import bootstrap
from ultra_signals.control.state import is_paused
from ultra_signals.core.config import ConfigError, load_settings
from ultra_signals.execution.breakers import TradingState, load_state
from ultra_signals.journal.trading import ExecStore
from ultra_signals.live.view import RunnerView
from ultra_signals.transport.notifier import NullNotifier
from ultra_signals.web.security import TokenBucket

LOCAL = ("127.0.0.1", 50000)
REMOTE = ("203.0.113.7", 50000)  # TEST-NET-3: never a real client, never loopback
W = {"X-Write-Token": WRITE}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> FinishedRun:
    return finished_run(tmp_path_factory.mktemp("webrun"))


@pytest.fixture
def fresh(tmp_path: Path) -> FinishedRun:
    """A run of its own, for tests that change the journal's operator state."""
    return finished_run(tmp_path, minutes=120)


class Client:
    """Synchronous calls into the ASGI app through httpx's ASGI transport, as a client at ``peer``."""

    def __init__(self, app: Any, peer: tuple[str, int]) -> None:
        self.app, self.peer = app, peer

    def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            # As a server would: an unexpected error is the app's 503 answer, not an exception in the client.
            transport = httpx.ASGITransport(app=self.app, client=self.peer, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8108") as c:
                return await c.request(method, url, **kw)

        return asyncio.run(go())

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("POST", url, **kw)

    def options(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("OPTIONS", url, **kw)


def client(app: Any, peer: tuple[str, int] = LOCAL) -> Client:
    return Client(app, peer)


# -- reads ---------------------------------------------------------------------------------------------------
def test_reads_say_what_the_journal_holds(run: FinishedRun) -> None:
    c = client(run.app())
    j, rid = run.journal, run.runner.run_id
    rows = j.decisions(rid)
    allowed = [r for r in rows if r["allowed"]]
    blocked = [r for r in rows if not r["allowed"]]
    assert allowed and blocked, "the 360-minute sim run should both allow and block"

    s = c.get("/api/v1/status").json()
    assert s["run"]["run_id"] == rid and s["run"]["mode"] == "shadow" and s["run"]["simulated"] is True
    assert s["run"]["source"] == run.runner.stats.source and s["run"]["status"] == "completed"
    assert s["trading"]["state"] == "ACTIVE" and s["paused"] is False and s["version"]
    assert s["counter_backend"] == "memory" and set(s["data_age_s"]) == set(run.runner.stats.symbols)

    caps = c.get("/api/v1/caps").json()
    by_name = {w["name"]: w for w in caps["windows"]}
    assert by_name["hour"]["cap"] == run.settings.sniper.max_signals_per_hour
    assert by_name["day"]["cap"] == run.settings.sniper.daily_signal_cap
    assert 0 < by_name["day"]["used"] <= by_name["day"]["cap"] and caps["per_symbol"] == {}

    d = c.get("/api/v1/decisions", params={"limit": 200}).json()["decisions"]
    assert len(d) == min(200, len(rows))
    assert [x["ts"] for x in d] == sorted((x["ts"] for x in d), reverse=True)
    assert all((x["reason"] is None) == x["allowed"] for x in d)
    newest = sorted(rows, key=lambda r: (r["ts"], r["id"]))[-1]
    assert (d[0]["ts"], d[0]["symbol"], d[0]["reason"]) == (
        newest["ts"],
        newest["symbol"],
        None if newest["allowed"] else newest["reason"],
    )
    assert len(c.get("/api/v1/decisions", params={"limit": 3}).json()["decisions"]) == 3

    sig = c.get("/api/v1/signals", params={"limit": 50}).json()["signals"]
    last = sorted(allowed, key=lambda r: (r["ts"], r["id"]))[-len(sig) :][::-1]
    assert len(sig) == min(50, len(allowed))
    assert [(x["ts"], x["symbol"], x["side"], x["entry"]) for x in sig] == [
        (r["ts"], r["symbol"], r["side"], r["entry"]) for r in last
    ]
    assert c.get("/api/v1/signals", params={"limit": 51}).status_code == 422

    b = c.get("/api/v1/blocked").json()
    assert b["total"] == len(blocked)
    assert b["by_reason"] == {k: sum(1 for r in blocked if r["reason"] == k) for k in {r["reason"] for r in blocked}}

    p = c.get("/api/v1/prices").json()
    assert set(p["prices"]) == set(run.runner.stats.symbols)
    assert all(len(v) >= 2 for v in p["prices"].values())
    assert {(m["ts"], m["symbol"]) for m in p["signals"]} <= {(r["ts"], r["symbol"]) for r in allowed}

    lat = c.get("/api/v1/latency").json()
    assert lat["samples"] == len(run.runner.stats.latencies_ms) > 0 and 0 < lat["p50_ms"] <= lat["p99_ms"]

    m = c.get("/api/v1/market").json()
    assert [x["symbol"] for x in m["symbols"]] == sorted(run.runner.stats.symbols)
    assert m["counter_backend"] == "memory"
    assert c.get("/api/v1/positions").json()["positions"] == []


def test_caps_per_symbol_when_set(tmp_path: Path) -> None:
    run = finished_run(tmp_path, minutes=240, **{"sniper.per_symbol_daily_cap": 1})
    caps = client(run.app()).get("/api/v1/caps").json()
    assert sorted(caps["per_symbol"]) == sorted(run.runner.stats.symbols)
    allowed = run.runner.stats.allowed
    for sym, windows in caps["per_symbol"].items():
        day = next(w for w in windows if w["name"] == "day")
        assert day["cap"] == 1 and day["used"] == allowed.get(sym, 0) <= 1, (sym, windows)
    assert sum(next(w["used"] for w in ws if w["name"] == "day") for ws in caps["per_symbol"].values()) == next(
        w["used"] for w in caps["windows"] if w["name"] == "day"
    )


@pytest.mark.parametrize("limit", ["0", "201", "-1", "x", "1e9"])
def test_decisions_limit_is_bounded(run: FinishedRun, limit: str) -> None:
    r = client(run.app()).get("/api/v1/decisions", params={"limit": limit})
    assert r.status_code == 422


def test_read_token_when_set(run: FinishedRun) -> None:
    c = client(run.app(read_token=READ), REMOTE)
    r = c.get("/api/v1/status")
    assert r.status_code == 401 and r.json()["error"] == "unauthorized" and r.headers["www-authenticate"] == "Bearer"
    r = c.get("/api/v1/status", headers={"Authorization": "Bearer " + "x" * 24})
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    r = c.get("/api/v1/status", headers={"Authorization": f"Bearer {READ}"})
    assert r.status_code == 200 and r.json()["run"]["run_id"] == run.runner.run_id
    # the write token is not a read token
    assert c.get("/api/v1/caps", headers={"Authorization": f"Bearer {WRITE}"}).status_code == 403
    # the page itself holds no data: it loads without a token and asks the API with the one typed in
    page = c.get("/")
    assert page.status_code == 200 and run.runner.run_id not in page.text
    assert 'name="viewport"' in page.text and "script-src 'self'" in page.headers["content-security-policy"]


def test_without_read_token_reads_are_loopback_only(run: FinishedRun) -> None:
    app = run.app()
    r = client(app, REMOTE).get("/api/v1/status")
    assert r.status_code == 403 and "loopback" in r.json()["detail"]
    assert client(app, ("::1", 5)).get("/api/v1/status").status_code == 200


def test_dns_rebinding_a_foreign_host_name_is_refused_without_read_token(run: FinishedRun) -> None:
    r = client(run.app()).get("/api/v1/status", headers={"Host": "evil.example:8108"})
    assert r.status_code == 403 and "DNS rebinding" in r.json()["detail"]
    for host in ("localhost:8108", "[::1]:8108", "127.0.0.1"):
        assert client(run.app()).get("/api/v1/status", headers={"Host": host}).status_code == 200, host
    # with a read token the token decides (a reverse proxy forwards its own DNS name)
    ok = client(run.app(read_token=READ)).get(
        "/api/v1/status", headers={"Host": "signals.example.com", "Authorization": f"Bearer {READ}"}
    )
    assert ok.status_code == 200


def test_a_journal_failure_is_a_json_503_without_secrets(fresh: FinishedRun) -> None:
    app = fresh.app()
    path = fresh.journal.sqlite_path()
    assert path is not None
    fresh.journal.engine.dispose()
    for p in path.parent.glob(path.name + "*"):
        p.unlink()
    r = client(app).get("/api/v1/decisions")
    assert r.status_code == 503 and r.json()["error"] == "unavailable" and "Traceback" not in r.text
    assert r.headers["content-type"] == "application/json"


def test_settings_refuse_a_public_host_without_read_token(tmp_path: Path) -> None:
    env = {"ULTRA_SIGNALS_WEB__HOST": "0.0.0.0", "ULTRA_SIGNALS_WEB__ENABLED": "true"}
    with pytest.raises(ConfigError, match=r"web.host '0.0.0.0' is not loopback and web.read_token is not set"):
        load_settings(env=env)
    s = load_settings(env={**env, "ULTRA_SIGNALS_WEB__READ_TOKEN": READ})
    assert s.web.host == "0.0.0.0" and s.web.read_token is not None


def test_tokens_are_secrets(tmp_path: Path) -> None:
    """Never from YAML; never shown; distinct; long enough; a refusal never echoes the token."""
    yml = tmp_path / "settings.yaml"
    yml.write_text(f"web:\n  write_token: {WRITE}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"web\.write_token: secrets may only come from the environment") as e:
        load_settings(settings_file=yml, env={})
    assert WRITE not in str(e.value)
    with pytest.raises(ConfigError, match="must differ") as e:
        load_settings(env={"ULTRA_SIGNALS_WEB__READ_TOKEN": READ, "ULTRA_SIGNALS_WEB__WRITE_TOKEN": READ})
    assert READ not in str(e.value)
    with pytest.raises(ConfigError, match="at least 16 characters") as e:
        load_settings(env={"ULTRA_SIGNALS_WEB__WRITE_TOKEN": "short-Secret9"})
    assert "short-Secret9" not in str(e.value)
    from ultra_signals.core.config import redacted_dict

    s = load_settings(env={"ULTRA_SIGNALS_WEB__READ_TOKEN": READ, "ULTRA_SIGNALS_WEB__WRITE_TOKEN": WRITE})
    shown = json.dumps(redacted_dict(s))
    assert READ not in shown and WRITE not in shown and redacted_dict(s)["web"]["write_token"] == "***"


# -- writes --------------------------------------------------------------------------------------------------
def test_writes_refused_without_the_write_token(fresh: FinishedRun) -> None:
    j = fresh.journal
    r = client(fresh.app()).post("/api/v1/control/pause", json={}, headers=W)
    assert r.status_code == 403 and r.json()["error"] == "write_disabled"
    c = client(fresh.app(write_token=WRITE, read_token=READ))
    r = c.post("/api/v1/control/pause", json={})
    assert r.status_code == 401 and r.json()["error"] == "unauthorized"
    r = c.post("/api/v1/control/pause", json={}, headers={"X-Write-Token": READ})  # the read token cannot act
    assert r.status_code == 403 and r.json()["error"] == "forbidden"
    assert READ not in r.text and WRITE not in r.text
    assert not is_paused(j)
    r = c.post("/api/v1/control/pause", json={}, headers=W)
    assert r.status_code == 200 and r.json()["paused"] is True and r.json()["by"] == "web:127.0.0.1"
    assert is_paused(j)
    ev = ExecStore(j.engine).events(kind="operator")
    assert ev[-1]["name"] == "pause" and "(by web:127.0.0.1)" in ev[-1]["detail"]


def test_csrf_cross_site_and_form_posts_are_refused(fresh: FinishedRun) -> None:
    c = client(fresh.app(write_token=WRITE, write_burst=20))
    r = c.post("/api/v1/control/pause", json={}, headers={**W, "Origin": "https://evil.example"})
    assert r.status_code == 403 and r.json()["error"] == "csrf"
    r = c.post("/api/v1/control/pause", json={}, headers={**W, "Sec-Fetch-Site": "cross-site"})
    assert r.status_code == 403 and r.json()["error"] == "csrf"
    r = c.post("/api/v1/control/pause", json={}, headers={**W, "Origin": "null"})
    assert r.status_code == 403 and r.json()["error"] == "csrf"
    # what a cross-site <form> can send: no custom header, a form body
    r = c.post("/api/v1/control/pause", data={"confirm": "true"})
    assert r.status_code == 415 and r.json()["error"] == "csrf"
    r = c.post("/api/v1/control/pause", json={})  # JSON but without the header a form cannot set
    assert r.status_code == 401
    r = c.post("/api/v1/control/pause", content=b"confirm=true", headers={**W, "Content-Type": "text/plain"})
    assert r.status_code == 415 and r.json()["error"] == "csrf"
    assert not is_paused(fresh.journal)
    # the page's own request: same origin, JSON, the header
    r = c.post("/api/v1/control/pause", json={}, headers={**W, "Origin": "http://127.0.0.1:8108"})
    assert r.status_code == 200 and is_paused(fresh.journal)


def test_csrf_another_port_is_another_origin(fresh: FinishedRun) -> None:
    c = client(fresh.app(write_token=WRITE))
    r = c.post("/api/v1/control/pause", json={}, headers={**W, "Origin": "http://127.0.0.1:9999"})
    assert r.status_code == 403 and r.json()["error"] == "csrf" and not is_paused(fresh.journal)


@given(
    host=st.sampled_from(["127.0.0.1", "127.8.9.10", "localhost", "[::1]", "LOCALHOST"]),
    port=st.one_of(st.none(), st.integers(1, 65535)),
)
def test_loopback_host_names_with_any_port(host: str, port: int | None) -> None:
    from ultra_signals.web.security import host_name, is_loopback

    assert is_loopback(host_name(host if port is None else f"{host}:{port}"))


@given(host=st.sampled_from(["evil.example", "127.0.0.1.evil.example", "10.0.0.1", "[2001:db8::1]", "0.0.0.0", ""]))
def test_foreign_host_names_are_not_loopback(host: str) -> None:
    from ultra_signals.web.security import host_name, is_loopback

    assert not is_loopback(host_name(f"{host}:8108" if host else host))


def test_the_server_itself_refuses_a_public_host_without_read_token(run: FinishedRun) -> None:
    """Second fence: settings built without validation (model_copy) still cannot open a public, tokenless port."""
    from ultra_signals.web.server import WebServeError, WebServer

    bad = run.settings.model_copy(update={"web": run.settings.web.model_copy(update={"host": "0.0.0.0", "port": 0})})
    with pytest.raises(WebServeError, match=r"not loopback and web\.read_token is not set"):
        asyncio.run(WebServer(run.control(), bad).start())


def test_web_disabled_opens_no_port(tmp_path: Path) -> None:
    s = load_settings(overrides={"journal.url": f"sqlite:///{tmp_path}/j.db", "web.enabled": False}, env={})
    r = bootstrap.build_runner(
        s, source_request=bootstrap.SourceRequest(5, None, None, None, False), notifier=NullNotifier(), serve_web=True
    )
    assert r.web is None
    r.journal.close()


def test_cors_preflight_is_never_granted(run: FinishedRun) -> None:
    r = client(run.app(write_token=WRITE)).options(
        "/api/v1/control/pause",
        headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert r.status_code in (400, 405) and "access-control-allow-origin" not in r.headers


def test_write_rate_limit_answers_429_with_retry_after(fresh: FinishedRun) -> None:
    c = client(fresh.app(write_token=WRITE, write_burst=2, write_per_minute=1.0))
    assert c.post("/api/v1/control/pause", json={}, headers={"X-Write-Token": "x" * 20}).status_code == 403
    assert c.post("/api/v1/control/pause", json={}, headers=W).status_code == 200
    r = c.post("/api/v1/control/pause", json={}, headers=W)  # a refused attempt counted too: bucket empty
    assert r.status_code == 429 and r.json()["error"] == "rate_limited"
    assert 1 <= int(r.headers["retry-after"]) <= 60
    # another client has its own bucket; reads have theirs
    assert (
        client(fresh.app(write_token=WRITE), ("127.0.0.2", 1))
        .post("/api/v1/control/resume", json={}, headers=W)
        .status_code
        == 200
    )
    assert c.get("/api/v1/status").status_code == 200


def test_read_rate_limit(run: FinishedRun) -> None:
    c = client(run.app(read_burst=3, read_per_minute=1.0))
    codes = [c.get("/api/v1/caps").status_code for _ in range(5)]
    assert codes == [200, 200, 200, 429, 429]


def test_kill_and_breaker_resume_need_confirm(fresh: FinishedRun) -> None:
    j = fresh.journal
    c = client(fresh.app(write_token=WRITE, write_burst=50))
    r = c.post("/api/v1/control/kill", json={}, headers=W)
    assert r.status_code == 400 and r.json()["error"] == "confirmation_required"
    assert load_state(j).state is TradingState.ACTIVE
    r = c.post("/api/v1/control/kill", json={"confirm": True}, headers=W)
    assert r.status_code == 200 and r.json()["trading"]["state"] == "HALTED"
    assert ExecStore(j.engine).events(kind="kill")[-1]["name"] == "web:127.0.0.1"
    r = c.post("/api/v1/control/resume", json={}, headers=W)
    assert r.status_code == 400 and r.json()["error"] == "confirmation_required" and "HALTED" in r.json()["detail"]
    assert load_state(j).state is TradingState.HALTED
    r = c.post("/api/v1/control/stop-entry", json={}, headers=W)  # would loosen a halt: refused by control
    assert r.status_code == 400 and "HALTED" in r.json()["detail"]
    r = c.post("/api/v1/control/resume", json={"confirm": True}, headers=W)
    assert r.status_code == 200 and r.json()["trading"]["state"] == "ACTIVE"
    r = c.post("/api/v1/control/stop-entry", json={}, headers=W)
    assert r.status_code == 200 and r.json()["trading"]["state"] == "REDUCING" and r.json()["changed"] is True
    # an operator's own stop-entry is lifted without confirmation (only a breaker's halt needs it)
    r = c.post("/api/v1/control/resume", json={}, headers=W)
    assert r.status_code == 200 and load_state(j).state is TradingState.ACTIVE
    r = c.post("/api/v1/control/kill", json={"confirm": "yes please"}, headers=W)
    assert r.status_code == 422 and load_state(j).state is TradingState.ACTIVE


def test_force_exit_needs_a_valid_symbol_confirm_and_an_executor(fresh: FinishedRun) -> None:
    c = client(fresh.app(write_token=WRITE))
    r = c.post("/api/v1/control/force-exit", json={"symbol": "BTC/USDT", "confirm": True}, headers=W)
    assert r.status_code == 422
    r = c.post("/api/v1/control/force-exit", json={"symbol": "btcusdt"}, headers=W)
    assert r.status_code == 400 and r.json()["error"] == "confirmation_required" and "BTCUSDT" in r.json()["detail"]
    # this app's control has no executor (a finished run): it says where force-exit can be done
    r = c.post("/api/v1/control/force-exit", json={"symbol": "BTCUSDT", "confirm": True}, headers=W)
    assert r.status_code == 404 and r.json()["error"] == "not_available"


def test_pnl_health_version_config_are_the_control_layers_answers(run: FinishedRun) -> None:
    c = client(run.app(write_token=WRITE))
    ctl = run.control()
    want = ctl.pnl(7)
    p = c.get("/api/v1/pnl", params={"days": 7}).json()
    assert p["run_id"] == run.runner.run_id and p["today"] == want.today and len(p["days"]) == 7
    assert (p["realized_total"], p["trades_total"], p["fees_total"]) == pytest.approx(
        (want.realized_total, want.trades_total, want.fees_total)
    )
    assert [d["day"] for d in p["days"]] == [d.day for d in want.days]
    assert c.get("/api/v1/pnl", params={"days": 91}).status_code == 422
    h = c.get("/api/v1/health").json()
    hw = ctl.health()
    assert (h["state"], h["counter_backend"], h["live"], h["stale"]) == (
        hw.state,
        hw.counter_backend,
        hw.live,
        list(hw.stale),
    )
    assert h["latency_p50_ms"] == pytest.approx(hw.latency_p50_ms)
    v = c.get("/api/v1/version").json()
    assert v["version"] == ctl.version().version and v["python"]
    shown = c.get("/api/v1/config").json()["settings"]
    assert shown["web"]["write_token"] == "***" and WRITE not in json.dumps(shown)
    r = c.get("/api/v1/balance")  # no executor in this app: where the balance lives is said, not invented
    assert r.status_code == 404 and r.json()["error"] == "not_available"


def test_resume_refused_while_a_breaker_cause_persists(fresh: FinishedRun) -> None:
    """A halt by the counter-backend breaker is not lifted while the run is still on memory counters (409)."""
    from ultra_signals.execution.breakers import halt_trading

    halt_trading(fresh.journal, "counter_backend_lost", "redis gone", by="breaker")
    c = client(fresh.app(write_token=WRITE))
    r = c.post("/api/v1/control/resume", json={"confirm": True}, headers=W)
    assert r.status_code == 409 and r.json()["error"] == "refused" and "memory" in r.json()["detail"]
    assert load_state(fresh.journal).state is TradingState.HALTED
    assert ExecStore(fresh.journal.engine).events(kind="refused")[-1]["detail"].endswith("(by web:127.0.0.1)")


# -- schema ------------------------------------------------------------------------------------------------
def test_openapi_documents_models_and_both_tokens(run: FinishedRun) -> None:
    spec = client(run.app()).get("/openapi.json").json()
    paths = spec["paths"]
    for p in ("status", "caps", "decisions", "signals", "blocked", "positions", "pnl", "market", "latency", "prices",
              "health", "balance", "version", "config"):  # fmt: skip
        assert "get" in paths[f"/api/v1/{p}"], p
    for p in ("pause", "resume", "stop-entry", "force-exit", "kill"):
        assert "post" in paths[f"/api/v1/control/{p}"], p
    ok = paths["/api/v1/status"]["get"]["responses"]["200"]["content"]["application/json"]["schema"]
    assert ok == {"$ref": "#/components/schemas/StatusOut"}
    assert "429" in paths["/api/v1/control/kill"]["post"]["responses"]
    schemes = spec["components"]["securitySchemes"]
    assert schemes["HTTPBearer"]["scheme"] == "bearer" and schemes["APIKeyHeader"]["name"] == "X-Write-Token"


def test_schemathesis_against_its_own_schema(fresh: FinishedRun) -> None:
    """Every operation, generated inputs, with both tokens: no 5xx, and every answer as documented."""
    import schemathesis
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        negative_data_rejection,
        response_schema_conformance,
        status_code_conformance,
    )

    app = fresh.app(read_token=READ, write_token=WRITE, write_burst=1_000, read_burst=10_000)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    headers = {"Authorization": f"Bearer {READ}", "X-Write-Token": WRITE}

    checks = [
        not_a_server_error,
        status_code_conformance,
        content_type_conformance,
        response_schema_conformance,
        negative_data_rejection,
    ]
    seen: list[str] = []
    for op in schema.get_all_operations():
        operation = op.ok()

        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, database=None)
        def check(case: Any) -> None:
            case.call_and_validate(headers=headers, checks=checks)

        check()
        seen.append(f"{operation.method.upper()} {operation.path}")
    assert len(seen) == 19, seen


# -- the guards' pieces ----------------------------------------------------------------------------------------
@given(
    burst=st.integers(1, 20),
    per_minute=st.floats(1.0, 600.0),
    gaps=st.lists(st.floats(0.0, 5.0), min_size=1, max_size=200),
)
@settings(max_examples=200, deadline=None)
def test_token_bucket_never_allows_more_than_burst_plus_refill(
    burst: int, per_minute: float, gaps: list[float]
) -> None:
    now = [0.0]
    b = TokenBucket(burst, per_minute, clock=lambda: now[0])
    allowed = 0
    for g in gaps:
        now[0] += g
        wait = b.take("c")
        if wait == 0:
            allowed += 1
        else:
            assert wait > 0
    assert allowed <= burst + now[0] * per_minute / 60.0 + 1e-9
    assert allowed >= min(len(gaps), burst)  # a fresh bucket lets a burst through


# -- the server inside a run -----------------------------------------------------------------------------------
def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_runner_serves_the_api_in_its_loop_and_stops_it(tmp_path: Path) -> None:
    settings = load_settings(
        overrides={"journal.url": f"sqlite:///{tmp_path}/j.db", "metrics.port": 0, "web.port": 0},
        env={"ULTRA_SIGNALS_WEB__WRITE_TOKEN": WRITE},
    )
    assert settings.web.enabled, "the shadow profile turns the status page on"
    runner = bootstrap.build_runner(
        settings,
        source_request=bootstrap.SourceRequest(600, None, None, None, False),
        notifier=NullNotifier(),
        speed=3000.0,  # 600 market minutes in ~12 s: long enough to be asked while it runs
        serve_metrics=False,
        serve_web=True,
    )
    before = {t.ident for t in threading.enumerate()}
    seen: dict[str, Any] = {}

    async def main() -> None:
        task = asyncio.create_task(runner.run())
        for _ in range(200):  # bounded: 10 s for the server to come up
            if runner.stats.web_url or task.done():
                break
            await asyncio.sleep(0.05)
        url = runner.stats.web_url
        assert url and url.startswith("http://127.0.0.1:"), runner.stats.web_error
        async with httpx.AsyncClient(base_url=url, timeout=10) as c:
            seen["status"] = (await c.get("api/v1/status")).json()
            r = await c.post("api/v1/control/pause", json={}, headers=W)
            seen["pause"] = r.status_code
            for _ in range(100):  # the runner polls the flag once a second: bounded 10 s
                if runner._paused:
                    break
                await asyncio.sleep(0.1)
            seen["paused_in_runner"] = runner._paused
        seen["port"] = int(url.rsplit(":", 1)[1].strip("/"))
        await task

    asyncio.run(main())
    assert seen["status"]["run"]["run_id"] == runner.run_id and seen["status"]["run"]["status"] == "running"
    assert seen["status"]["run"]["uptime_s"] is not None
    assert seen["pause"] == 200 and seen["paused_in_runner"] is True
    assert runner.stats.status == "completed" and runner.stats.blocked.get("paused", 0) > 0
    assert not _port_open(seen["port"]), "the server must stop with the run"
    # AnyIO's pool threads are told to stop when the loop's root task ends; they exit at once (bounded join).
    for t in threading.enumerate():
        if t.ident not in before:
            t.join(timeout=5.0)
    lingering = [t.name for t in threading.enumerate() if t.ident not in before]
    assert lingering == [], f"threads left after the run: {lingering}"


def test_a_busy_port_does_not_stop_the_run(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        settings = load_settings(overrides={"journal.url": f"sqlite:///{tmp_path}/j.db", "web.port": port}, env={})
        runner = bootstrap.build_runner(
            settings,
            source_request=bootstrap.SourceRequest(60, None, None, None, False),
            notifier=NullNotifier(),
            serve_metrics=False,
            serve_web=True,
        )
        asyncio.run(runner.run())
    assert runner.stats.status == "completed" and runner.stats.web_url is None
    assert runner.stats.web_error is not None and f"web.port {port}" in runner.stats.web_error
    # An ended run's uptime is its length, not a figure that keeps growing after it ended.
    st = runner.stats
    assert RunnerView(runner).run_info().uptime_s == st.wall_end - st.wall_start > 0
    assert "already in use" in runner.stats.web_error


def test_cli_prints_the_web_url_and_help_does_not_load_the_web_stack(tmp_path: Path) -> None:
    code = (
        "import sys; from ultra_signals.apps.cli import app; "
        "print(sorted(m for m in ('fastapi', 'uvicorn', 'starlette') if m in sys.modules))"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert p.returncode == 0 and p.stdout.strip() == "[]", p.stderr
    from tests.helpers import run_cli

    p2 = run_cli(tmp_path, "shadow", "--duration", "30", "--metrics-port", "0", "--web-port", "0", "--no-report")
    assert p2.returncode in (0, 1), p2.stderr
    urls = [ln for ln in p2.stdout.splitlines() if ln.startswith("web UI: http://127.0.0.1:")]
    assert len(urls) == 1, p2.stdout
