"""The REST API (``/api/v1/…``) and the status page (``/``): a thin HTTP adapter over :mod:`ultra_signals.control`.

Every read asks :class:`~ultra_signals.control.Control` (or the journal's read queries) and every write calls a
Control method with ``by="web:<client>"``, so the page, Telegram and the CLI act the same and the journal records
who did what.  What only the running process knows and Control does not yet ask (latency percentiles, the price
series for the charts, per-symbol windows) comes through a :class:`LiveProbe` the composition root builds over
the runner; without one (a journal-only app) those answers are empty rather than invented.

Read routes are plain ``def``: FastAPI runs them in its thread pool, so a journal query or a Redis count never
blocks the runner's event loop.  The guards (tokens, CSRF, rate limits) are in :mod:`ultra_signals.web.security`.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, is_dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, Protocol

from fastapi import Depends, FastAPI, Query, Request, Security
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from ultra_signals.control import Control
from ultra_signals.control.actions import MAX_PNL_DAYS
from ultra_signals.control.model import (
    MAX_SIGNALS,
    Caps,
    ConfirmationRequired,
    ControlError,
    InvalidInput,
    NotAvailable,
    TradingInfo,
)
from ultra_signals.control.state import is_paused
from ultra_signals.core.config import Settings, secret_values
from ultra_signals.core.redaction import redact
from ultra_signals.journal import queries
from ultra_signals.observability.release import release
from ultra_signals.web import page
from ultra_signals.web.models import (
    MAX_DECISIONS,
    ActionOut,
    BalanceOut,
    BlockedOut,
    CapsOut,
    CapWindowOut,
    ConfigOut,
    ConfirmIn,
    DecisionOut,
    DecisionsOut,
    ErrorOut,
    ForceExitIn,
    HealthOut,
    LatencyOut,
    MarketOut,
    PnlOut,
    PositionOut,
    PositionsOut,
    PricePoint,
    PricesOut,
    RunOut,
    SignalMark,
    SignalOut,
    SignalsOut,
    StatusOut,
    SymbolMarketOut,
    TradingOut,
    TripOut,
    VersionOut,
)
from ultra_signals.web.security import Refused, TokenBucket, check_csrf, check_rate, check_read, check_write

log = logging.getLogger(__name__)

API = "/api/v1"
#: Most allowed signals the chart endpoint marks.
CHART_SIGNALS = 50


class LiveProbe(Protocol):
    """What the running process knows beyond Control's reads (built over the runner by ``bootstrap``)."""

    def latency_stats(self) -> tuple[float | None, float | None, int]:
        """Tick-to-decision p50, p99 (ms) and the number of samples."""
        ...

    def prices(self) -> dict[str, list[tuple[int, float]]]:
        """Recent primary-timeframe closes per symbol, (event time ms, close), oldest first."""
        ...

    def symbol_windows(self) -> dict[str, dict[str, int]]:
        """Allowed signals per symbol in the ``hour`` and ``day`` windows (asked only when per-symbol caps are set)."""
        ...


def _err(status: int, error: str, detail: str) -> dict[str, Any]:
    return {"model": ErrorOut, "description": f"{error}: {detail}"}


#: Documented on every route: what the guards answer.
READ_ERRORS: dict[int | str, dict[str, Any]] = {
    401: _err(401, "unauthorized", "no read token sent while one is configured"),
    403: _err(403, "forbidden", "wrong read token, or a non-loopback client without a configured read token"),
    429: _err(429, "rate_limited", "too many requests from this client; see Retry-After"),
    503: _err(503, "unavailable", "the journal or a backend failed to answer"),
}
WRITE_ERRORS: dict[int | str, dict[str, Any]] = {
    400: _err(400, "confirmation_required | invalid", "the action needs confirm: true, or cannot be done now"),
    401: _err(401, "unauthorized", "no X-Write-Token header"),
    403: _err(403, "forbidden | csrf | write_disabled", "wrong token, cross-site request, or writes not configured"),
    404: _err(404, "not_available", "the action cannot be done where it was asked (e.g. no executor here)"),
    409: _err(409, "refused", "not allowed now (e.g. the cause of a breaker halt persists); nothing changed"),
    415: _err(415, "csrf", "the body is not JSON"),
    429: _err(429, "rate_limited", "too many control actions from this client; see Retry-After"),
    503: _err(503, "unavailable", "the journal or a backend failed to answer"),
}


def _iso_ms(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).isoformat(timespec="seconds")


def _finite(x: float | None) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _trading(t: TradingInfo) -> TradingOut:
    return TradingOut(state=t.state, breaker=t.breaker, detail=t.detail, since=t.since, by=t.by, line=t.line)


def _plain(obj: Any) -> Any:
    """A control result (dataclass, tuple, enum …) as JSON-able data, for ``result`` fields."""
    if is_dataclass(obj) and not isinstance(obj, type):
        return _plain(asdict(obj))
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_plain(v) for v in obj]
    if isinstance(obj, float):
        return _finite(obj)
    if obj is None or isinstance(obj, str | int | bool):
        return obj
    return str(obj)


def _client(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@dataclass(frozen=True)
class Guards:
    """The app's tokens and buckets (on ``app.state.guards``, read by the module-level dependencies below)."""

    read_token: str | None
    write_token: str | None
    reads: TokenBucket
    writes: TokenBucket


_bearer = HTTPBearer(auto_error=False, description="web.read_token")
_write_header = APIKeyHeader(name="X-Write-Token", auto_error=False, description="web.write_token")


def _reader(request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)]) -> None:
    g: Guards = request.app.state.guards
    client = _client(request)
    check_rate(g.reads, client, "reads")
    check_read(g.read_token, client, f"Bearer {creds.credentials}" if creds else None, request.headers.get("host"))


def _writer(request: Request, token: Annotated[str | None, Security(_write_header)]) -> str:
    """Rate, then CSRF, then the token; returns who acts (``web:<client>``) for the journal."""
    g: Guards = request.app.state.guards
    client = _client(request)
    h = request.headers
    check_rate(g.writes, client, "control actions")
    check_csrf(h.get("origin"), h.get("sec-fetch-site"), h.get("host"), h.get("content-type"))
    check_write(g.write_token, token)
    return f"web:{client}"


Read = Depends(_reader)
Writer = Annotated[str, Depends(_writer)]


def create_app(control: Control, settings: Settings, *, probe: LiveProbe | None = None) -> FastAPI:
    """The API and page over ``control``; ``settings.web`` holds the tokens and limits."""
    web = settings.web
    rel = release()
    version = str(rel.get("version") or "unknown")
    commit = rel.get("git_commit")
    sn = settings.sniper
    per_symbol_caps = {"hour": sn.per_symbol_max_per_hour, "day": sn.per_symbol_daily_cap}

    app = FastAPI(
        title="ultra-signals",
        version=version,
        summary="Status and operator control of a running ultra-signals runner",
        description=(
            "Reads need `Authorization: Bearer <web.read_token>` when that token is set (else loopback only). "
            "Control actions need `X-Write-Token: <web.write_token>` and a JSON body; kill, force-exit and a "
            'resume that clears a breaker halt need `{"confirm": true}`. See docs/web.md.'
        ),
        docs_url=None,
        redoc_url=None,
    )
    app.state.guards = Guards(
        read_token=web.read_token.get_secret_value() if web.read_token else None,
        write_token=web.write_token.get_secret_value() if web.write_token else None,
        reads=TokenBucket(web.read_burst, web.read_per_minute),
        writes=TokenBucket(web.write_burst, web.write_per_minute),
    )

    @app.exception_handler(Refused)
    async def _refused(request: Request, exc: Refused) -> JSONResponse:
        if exc.status in (401, 403) and exc.error != "write_disabled":
            log.warning("web: %s %s refused for %s: %s", request.method, request.url.path, _client(request), exc.error)
        return JSONResponse({"error": exc.error, "detail": exc.detail}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(ControlError)
    async def _control_error(request: Request, exc: ControlError) -> JSONResponse:
        if isinstance(exc, ConfirmationRequired):
            code, status = "confirmation_required", 400
        elif isinstance(exc, NotAvailable):
            code, status = "not_available", 404
        elif isinstance(exc, InvalidInput):
            code, status = "invalid", 400
        else:  # refused: the action is not allowed now (the control layer journals why)
            code, status = "refused", 409
        return JSONResponse({"error": code, "detail": exc.message}, status_code=status)

    secrets = secret_values(settings)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        """A journal or backend failure: one JSON line for the client (secrets redacted), the traceback to the log."""
        log.error("web: %s %s failed", request.method, request.url.path, exc_info=exc)
        why = redact(f"{type(exc).__name__}: {exc}", secrets)[:300]
        return JSONResponse({"error": "unavailable", "detail": f"cannot answer now: {why}"}, status_code=503)

    @app.middleware("http")
    async def _headers(request: Request, call_next: Callable[[Request], Any]) -> Response:
        response: Response = await call_next(request)
        # The page must not be framed by another site (clickjacking a pause button) nor sniffed.
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    # -- page -----------------------------------------------------------------------------------------------
    @app.get("/", include_in_schema=False)
    def index() -> HTMLResponse:
        return HTMLResponse(page.html(refresh_s=web.refresh_s), headers={"Content-Security-Policy": page.CSP})

    @app.get("/app.js", include_in_schema=False)
    def script() -> Response:
        return Response(page.SCRIPT, media_type="text/javascript")

    @app.get("/healthz", include_in_schema=False)
    def healthz() -> dict[str, bool]:
        """Liveness only (no data, no token): the server answers."""
        return {"ok": True}

    def caps_out(c: Caps) -> CapsOut:
        """One shape for the windows in ``/status`` and ``/caps`` (the CLI's ``status`` reads the first)."""
        windows = [CapWindowOut(name=w.name, used=w.used, cap=w.cap) for w in c.windows]
        per_symbol: dict[str, list[CapWindowOut]] = {}
        if probe is not None and any(v is not None for v in per_symbol_caps.values()):
            for sym, counts in sorted(probe.symbol_windows().items()):
                per_symbol[sym] = [
                    CapWindowOut(name=w, used=int(counts.get(w, 0)), cap=per_symbol_caps[w]) for w in ("hour", "day")
                ]
        return CapsOut(windows=windows, at_market_time=c.at_market_time, per_symbol=per_symbol)

    # -- reads ----------------------------------------------------------------------------------------------
    @app.get(f"{API}/status", response_model=StatusOut, responses=READ_ERRORS, dependencies=[Read], tags=["read"])
    def status() -> StatusOut:
        """The run (id, mode, source, simulated, uptime), version, pause flag, trading state, breaker trips and the
        cap windows: what ``ultra-signals status`` shows (it asks this route when a runner is up)."""
        s = control.status()
        run = s.run
        return StatusOut(
            version=version,
            git_commit=commit,
            journal=s.journal,
            paused=s.paused,
            trading=_trading(s.trading),
            trips=[TripOut(breaker=t.breaker, detail=t.detail, ts_ms=t.ts_ms) for t in s.trips],
            run=None
            if run is None
            else RunOut(
                run_id=run.run_id,
                mode=run.mode,
                profile=run.profile,
                source=run.source,
                simulated=run.simulated,
                namespace=run.namespace,
                status=run.status,
                started=run.started,
                ended=run.ended,
                uptime_s=_finite(run.uptime_s),
            ),
            market_time=run.market_time if run else None,
            counter_backend=run.counter_backend if run else None,
            data_age_s={k: _finite(v) for k, v in run.data_age_s.items()} if run else {},
            caps=None if s.caps is None else caps_out(s.caps),
        )

    @app.get(
        f"{API}/caps",
        response_model=CapsOut,
        responses={
            **READ_ERRORS,
            404: _err(404, "not_available", "no decisions yet: the windows start with the first"),
        },
        dependencies=[Read],
        tags=["read"],
    )
    def caps() -> CapsOut:
        """Allowed signals in the trailing hour and day windows against their caps (per symbol when set)."""
        return caps_out(control.caps())

    @app.get(f"{API}/decisions", response_model=DecisionsOut, responses=READ_ERRORS, dependencies=[Read], tags=["read"])
    def decisions(limit: Annotated[int, Query(ge=1, le=MAX_DECISIONS)] = 20) -> DecisionsOut:
        """The run's latest decisions, allowed and blocked, with the reason; newest first."""
        run = control.view.run_info()
        if run is None:
            return DecisionsOut(run_id=None, decisions=[])
        rows = queries.recent_decisions(control.journal.engine, run.run_id, limit)
        return DecisionsOut(
            run_id=run.run_id,
            decisions=[
                DecisionOut(
                    ts=int(r["ts"]),
                    time=_iso_ms(int(r["ts"])),
                    symbol=str(r["symbol"]),
                    timeframe=str(r["timeframe"]),
                    side=str(r["side"]),
                    allowed=bool(r["allowed"]),
                    reason=None if r["allowed"] else (r["reason"] or "unknown"),
                    score=float(r["score"]),
                    entry=float(r["entry"]),
                    stop=float(r["stop"]),
                )
                for r in rows
            ],
        )

    @app.get(f"{API}/signals", response_model=SignalsOut, responses=READ_ERRORS, dependencies=[Read], tags=["read"])
    def signals(limit: Annotated[int, Query(ge=1, le=MAX_SIGNALS)] = 10) -> SignalsOut:
        """The latest allowed signals (entry, stop, targets), newest first: what Telegram's /signals shows."""
        rows = control.recent_signals(limit)
        return SignalsOut(
            signals=[
                SignalOut(
                    ts=r.ts,
                    time=_iso_ms(r.ts),
                    symbol=r.symbol,
                    side=r.side,
                    entry=r.entry,
                    stop=r.stop,
                    targets=list(r.targets),
                )
                for r in reversed(rows)
            ]
        )

    @app.get(f"{API}/blocked", response_model=BlockedOut, responses=READ_ERRORS, dependencies=[Read], tags=["read"])
    def blocked() -> BlockedOut:
        """Blocked candidates of the run, counted by reason."""
        run = control.view.run_info()
        counts = {} if run is None else queries.blocked_counts(control.journal.engine, run.run_id)
        return BlockedOut(run_id=run.run_id if run else None, total=sum(counts.values()), by_reason=counts)

    @app.get(f"{API}/positions", response_model=PositionsOut, responses=READ_ERRORS, dependencies=[Read], tags=["read"])
    def positions() -> PositionsOut:
        """Open and pending trades with their stop, target and unrealised PnL (at the latest price seen)."""
        ps = control.positions()
        marked = [p.unrealized for p in ps if p.unrealized is not None and math.isfinite(p.unrealized)]
        return PositionsOut(
            positions=[
                PositionOut(**{**asdict(p), "unrealized": _finite(p.unrealized), "mark": _finite(p.mark)}) for p in ps
            ],
            unrealized_total=sum(marked) if marked else None,
        )

    @app.get(f"{API}/pnl", response_model=PnlOut, responses=READ_ERRORS, dependencies=[Read], tags=["read"])
    def pnl(days: Annotated[int, Query(ge=1, le=MAX_PNL_DAYS)] = 1) -> PnlOut:
        """Realised PnL today (the market clock's UTC day), per day for ``days`` days and since the run started,
        and the unrealised PnL of open positions with a known mark."""
        return PnlOut.model_validate(_plain(control.pnl(days)))

    @app.get(f"{API}/market", response_model=MarketOut, responses=READ_ERRORS, dependencies=[Read], tags=["read"])
    def market() -> MarketOut:
        """Market time (the event clock), data age per symbol and the counter backend."""
        run = control.view.run_info()
        if run is None:
            return MarketOut(market_time=None, counter_backend=None, symbols=[])
        return MarketOut(
            market_time=run.market_time,
            counter_backend=run.counter_backend,
            symbols=[SymbolMarketOut(symbol=s, data_age_s=_finite(a)) for s, a in sorted(run.data_age_s.items())],
        )

    @app.get(f"{API}/latency", response_model=LatencyOut, responses=READ_ERRORS, dependencies=[Read], tags=["read"])
    def latency() -> LatencyOut:
        """Tick-to-decision latency p50 and p99 of the running process (null without samples)."""
        if probe is None:
            return LatencyOut(p50_ms=None, p99_ms=None, samples=0)
        p50, p99, n = probe.latency_stats()
        return LatencyOut(p50_ms=_finite(p50), p99_ms=_finite(p99), samples=n)

    @app.get(f"{API}/prices", response_model=PricesOut, responses=READ_ERRORS, dependencies=[Read], tags=["read"])
    def prices() -> PricesOut:
        """Recent closes per symbol for the page's charts, and the allowed signals to mark on them."""
        series = probe.prices() if probe is not None else {}
        sigs = control.recent_signals(CHART_SIGNALS)
        return PricesOut(
            prices={
                sym: [PricePoint(ts=int(t), close=float(c)) for t, c in pts if math.isfinite(c)]
                for sym, pts in sorted(series.items())
            },
            signals=[SignalMark(ts=s.ts, symbol=s.symbol, side=s.side, entry=s.entry) for s in sigs],
        )

    @app.get(f"{API}/health", response_model=HealthOut, responses=READ_ERRORS, dependencies=[Read], tags=["read"])
    def health() -> HealthOut:
        """Trading state (pause folded in), breaker trips, data age and stale symbols, counter backend, latency."""
        h = control.health()
        return HealthOut(
            state=h.state,
            trading=_trading(h.trading),
            paused=h.paused,
            trips=[TripOut(breaker=t.breaker, detail=t.detail, ts_ms=t.ts_ms) for t in h.trips],
            data_age_s={k: _finite(v) for k, v in h.data_age_s.items()},
            max_data_age_s=_finite(h.max_data_age_s),
            stale=list(h.stale),
            counter_backend=h.counter_backend,
            last_event=h.last_event,
            latency_p50_ms=_finite(h.latency_p50_ms),
            latency_p99_ms=_finite(h.latency_p99_ms),
            live=h.live,
        )

    @app.get(
        f"{API}/balance",
        response_model=BalanceOut,
        responses={**READ_ERRORS, 404: _err(404, "not_available", "no balance known where it was asked")},
        dependencies=[Read],
        tags=["read"],
    )
    async def balance() -> BalanceOut:
        """The account's equity where it is kept (the paper broker in the runner, or Binance's account)."""
        return BalanceOut.model_validate(_plain(await control.balance()))

    @app.get(f"{API}/version", response_model=VersionOut, responses=READ_ERRORS, dependencies=[Read], tags=["read"])
    def version_() -> VersionOut:
        return VersionOut.model_validate(_plain(control.version()))

    @app.get(
        f"{API}/config",
        response_model=ConfigOut,
        responses={**READ_ERRORS, 404: _err(404, "not_available", "the settings are not known here")},
        dependencies=[Read],
        tags=["read"],
    )
    def config() -> ConfigOut:
        """The effective settings, secrets redacted (as ``config show`` and Telegram's /show_config)."""
        return ConfigOut(settings=_plain(control.show_config()))

    # -- writes ---------------------------------------------------------------------------------------------
    def action(name: str, by: str, changed: bool, detail: str = "", result: Any = None) -> ActionOut:
        return ActionOut(
            action=name,
            by=by,
            changed=changed,
            trading=_trading(control.trading()),
            paused=is_paused(control.journal),
            detail=detail,
            result=_plain(result) if result is not None else {},
        )

    @app.post(f"{API}/control/pause", response_model=ActionOut, responses=WRITE_ERRORS, tags=["control"])
    def pause(by: Writer, body: ConfirmIn | None = None) -> ActionOut:
        """Block new signals (reason ``paused``) until a resume; open positions keep their stop and target."""
        r = control.pause(by)
        return action("pause", by, r.changed, "new signals paused", r)

    @app.post(f"{API}/control/resume", response_model=ActionOut, responses=WRITE_ERRORS, tags=["control"])
    def resume(by: Writer, body: ConfirmIn | None = None) -> ActionOut:
        """Allow new signals again; clearing a breaker's halt needs ``confirm: true`` and is refused (409) while its
        cause persists (data still stale, Redis still gone)."""
        r = control.resume(by, confirm=body.confirm if body else False)
        changed = r.was_paused or r.trading_before.state != "ACTIVE"
        return action("resume", by, changed, r.trading + (f" (not checked: {r.unchecked})" if r.unchecked else ""), r)

    @app.post(f"{API}/control/stop-entry", response_model=ActionOut, responses=WRITE_ERRORS, tags=["control"])
    def stop_entry(by: Writer, body: ConfirmIn | None = None) -> ActionOut:
        """REDUCING: no new entries; open positions exit by their stop and target."""
        r = control.stop_entry(by)
        return action("stop-entry", by, r.changed, "no new entries, exits continue", r)

    @app.post(f"{API}/control/force-exit", response_model=ActionOut, responses=WRITE_ERRORS, tags=["control"])
    async def force_exit(by: Writer, body: ForceExitIn) -> ActionOut:
        """Close one symbol's position at market and cancel its stop and target (needs ``confirm: true``)."""
        r = await control.force_exit(body.symbol, confirm=body.confirm, by=by)
        detail = f"force-exit {r.symbol}: {r.status}" + (f" ({'; '.join(r.errors)})" if r.errors else "")
        return action("force-exit", by, r.closed, detail, r)

    @app.post(f"{API}/control/kill", response_model=ActionOut, responses=WRITE_ERRORS, tags=["control"])
    async def kill(by: Writer, body: ConfirmIn) -> ActionOut:
        """HALT, cancel every order and close every position (needs ``confirm: true``)."""
        r = await control.kill(confirm=body.confirm, by=by)
        return action("kill", by, True, "halted; " + ("exchange flattened" if r.clean else "see result"), r)

    return app
