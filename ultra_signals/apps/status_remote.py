"""``status`` asked of the running runner over its own HTTP API (``GET /api/v1/status``), with the stdlib alone.

Why: reading the journal costs ``status`` SQLAlchemy and the validated settings models (about 0.4 s of CPU on the
shared 2-core machine, docs/benchmarks.md), while a runner that is up already holds both and answers the same
question in a millisecond.  So when the run file (:mod:`ultra_signals.apps.runfile`) names a live runner serving its
web API, ``status`` asks it (Freqtrade's client does the same) and shows the answer through the same
:class:`~ultra_signals.control.Status` the journal path builds: one shape for the CLI, Telegram and HTTP.

This path reads no settings: it asks the runner, which validated its own at start, so it accepts nothing another
command would reject, and it never reads the journal itself (the journal keeps one reader, its own SQLAlchemy code).
Whatever goes wrong (no run file, a dead pid, no web URL, a refused or slow connection, an HTTP error, a body that is
not the API's status) is a reason, never an exception: the caller falls back to the journal and says why.

Only loopback is asked (the run file is this machine's; a runner bound to every interface is asked on loopback too),
and the read token, when ``ULTRA_SIGNALS_WEB__READ_TOKEN`` is set, goes in the ``Authorization`` header only.
"""

from __future__ import annotations

import http.client
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ultra_signals.apps import runfile

if TYPE_CHECKING:
    from ultra_signals.control.model import Status

#: How long ``status`` waits for the runner before it reads the journal instead (connect and answer, each).
TIMEOUT_S = 2.0
#: The runner's status answer is a few kB; more is not its API.
MAX_BODY = 1 << 20
READ_TOKEN_ENV = "ULTRA_SIGNALS_WEB__READ_TOKEN"
_LOOPBACK = {"127.0.0.1": "127.0.0.1", "localhost": "127.0.0.1", "::1": "::1", "0.0.0.0": "127.0.0.1", "::": "::1"}


@dataclass(frozen=True, slots=True)
class Answer:
    """The runner's status (``status`` set, ``url`` it came from) or why it was not asked or did not answer."""

    status: Status | None
    url: str | None = None
    why: str = ""


def ask_runner(
    path: Path = runfile.RUN_FILE, *, timeout: float = TIMEOUT_S, env: Mapping[str, str] | None = None
) -> Answer:
    """The status of the runner the run file names, or the reason the journal must answer instead."""
    info = runfile.read(path)
    if info is None:
        exists = path.exists()
        return Answer(None, why=f"the run file {path} is not a run's JSON" if exists else f"no run file at {path}")
    if info.get("status") != "running":
        return Answer(None, why=f"the run file's last run is {info.get('status') or 'of unknown state'}")
    if not runfile.pid_alive(info.get("pid")):
        return Answer(None, why=f"the run file's runner (pid {info.get('pid')}) is not alive")
    url = info.get("web_url")
    if not isinstance(url, str) or not url:
        return Answer(None, why="the running runner serves no web API (web.enabled off, or its port was refused)")
    try:
        parts = urlsplit(url)
        host, port = parts.hostname, parts.port
    except ValueError:
        return Answer(None, why="the run file's web URL is not a URL")
    if parts.scheme != "http" or host not in _LOOPBACK or port is None:
        return Answer(None, why=f"the runner's web URL {url} is not plain HTTP on loopback")
    base = url.rstrip("/")
    token = (os.environ if env is None else env).get(READ_TOKEN_ENV)
    headers = {"Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    conn = http.client.HTTPConnection(_LOOPBACK[host], port, timeout=timeout)
    try:
        conn.request("GET", f"{parts.path.rstrip('/')}/api/v1/status", headers=headers)
        resp = conn.getresponse()
        body = resp.read(MAX_BODY + 1)
        code = resp.status
    except (OSError, http.client.HTTPException) as e:  # refused, reset, timed out, not HTTP
        return Answer(None, why=f"the runner at {base} did not answer ({type(e).__name__})")
    finally:
        conn.close()
    if code != 200:
        hint = " (set ULTRA_SIGNALS_WEB__READ_TOKEN)" if code in (401, 403) else ""
        return Answer(None, why=f"the runner at {base} answered HTTP {code}{hint}")
    try:
        if len(body) > MAX_BODY:
            raise ValueError("body too large")
        return Answer(from_api(json.loads(body)), url=base)
    except (ValueError, KeyError, TypeError, AttributeError):
        return Answer(None, why=f"the runner at {base} answered something that is not its status")


def from_api(d: Any) -> Status:
    """The control layer's :class:`Status` from ``/api/v1/status``'s JSON (``web.models.StatusOut``).

    The API flattens what only the running process knows (market time, counter backend, data age) beside ``run``;
    here they go back into :class:`RunInfo`, so ``--json`` prints the journal path's shape with these filled in.
    Raises ``KeyError``/``TypeError``/``ValueError`` on a body that is not that model.
    """
    from ultra_signals.control.model import Caps, CapWindow, RunInfo, Status, TradingInfo, TripInfo

    if not isinstance(d, dict):
        raise TypeError("not an object")
    t = d["trading"]
    trading = TradingInfo(
        state=_str(t["state"]), breaker=t.get("breaker"), detail=t.get("detail"), since=t.get("since"), by=t.get("by")
    )
    r = d.get("run")
    run = None
    if r is not None:
        ages = d.get("data_age_s") or {}
        if not isinstance(ages, dict):
            raise TypeError("data_age_s is not an object")
        run = RunInfo(
            run_id=_str(r["run_id"]),
            mode=_str(r["mode"]),
            profile=_str(r["profile"]),
            source=_str(r["source"]),
            simulated=bool(r["simulated"]),
            namespace=_str(r["namespace"]),
            status=_str(r["status"]),
            started=r.get("started"),
            ended=r.get("ended"),
            uptime_s=r.get("uptime_s"),
            market_time=d.get("market_time"),
            counter_backend=d.get("counter_backend"),
            data_age_s={str(k): (None if v is None else float(v)) for k, v in ages.items()},
        )
    c = d.get("caps")
    caps = None
    if c is not None:
        windows = tuple(CapWindow(name=_str(w["name"]), used=int(w["used"]), cap=w.get("cap")) for w in c["windows"])
        caps = Caps(windows=windows, at_market_time=c.get("at_market_time"))
    trips = tuple(
        TripInfo(breaker=_str(x["breaker"]), detail=_str(x["detail"]), ts_ms=x.get("ts_ms")) for x in d["trips"]
    )
    paused = d["paused"]
    if not isinstance(paused, bool):
        raise TypeError("paused is not a boolean")
    return Status(journal=_str(d["journal"]), paused=paused, trading=trading, run=run, caps=caps, trips=trips)


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError(f"expected a string, got {type(v).__name__}")
    return v
