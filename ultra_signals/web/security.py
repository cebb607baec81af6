"""Who may read, who may act, and how often: the web API's guards, kept apart from the routes so each is tested.

**Reads** need ``Authorization: Bearer <web.read_token>`` when that token is set.  Without it, reads are answered
to loopback clients only (a process on the same host, or the TLS reverse proxy of docs/web.md -- which is why
a proxied set-up must set the read token).

**DNS rebinding.**  Without a read token a loopback client is trusted, and a hostile web page can make a browser
on this host be that client (its own domain re-pointed at 127.0.0.1).  Such a request still names the hostile
domain in ``Host``, so without a read token reads are answered only when ``Host`` is a loopback name or address.

**Writes** (pause, resume, stop-entry, force-exit, kill) need ``X-Write-Token: <web.write_token>``, a different
secret; without ``web.write_token`` configured every write is refused.  Missing token: 401; wrong token: 403.

**CSRF.**  A write is authorised by a custom request header, never by anything the browser attaches on its own
(no cookie, no HTTP auth): a cross-site HTML form cannot set a header at all, and a cross-site ``fetch`` that sets
one must pass a CORS preflight, which this server never grants (it sends no ``Access-Control-Allow-*``).  So a page
on another site cannot make a logged-in operator's browser act.  As a second fence, a write whose ``Origin`` (or
``Sec-Fetch-Site``) says it comes from another site is refused (403 ``csrf``) even with the right token, and the
body must be JSON (a form's ``application/x-www-form-urlencoded`` / ``multipart`` / ``text/plain`` is refused).
The page keeps the write token in ``sessionStorage`` (gone when the tab closes) and sends it in that header.

**Rate limits.**  One token bucket per client address for writes (every attempt counts, refused ones too, so
guessing a token is slow) and a roomier one for reads; an empty bucket answers 429 with ``Retry-After``.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

#: Buckets kept (least recently used dropped first): bounded memory whatever the number of clients.
MAX_CLIENTS = 4096


class Refused(Exception):
    """A request refused by a guard: HTTP ``status``, a stable ``error`` code and the operator's sentence."""

    def __init__(self, status: int, error: str, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.error = error
        self.detail = detail
        self.headers = headers or {}


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def token_matches(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison; never true when either side is missing or empty."""
    if not given or not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


def bearer(authorization: str | None) -> str | None:
    if not authorization:
        return None
    scheme, _, value = authorization.partition(" ")
    return value.strip() or None if scheme.lower() == "bearer" else None


@dataclass
class _Bucket:
    tokens: float
    at: float


class TokenBucket:
    """Per-key token buckets: ``burst`` requests at once, refilled at ``per_minute``.  Thread-safe (the API's
    sync routes run in a thread pool)."""

    def __init__(self, burst: int, per_minute: float, clock: Callable[[], float] | None = None) -> None:
        self.burst = float(burst)
        self.rate = per_minute / 60.0
        self.clock = clock or time.monotonic
        self._buckets: OrderedDict[str, _Bucket] = OrderedDict()
        self._lock = threading.Lock()

    def take(self, key: str) -> float:
        """Take one token for ``key``; returns 0 when allowed, else the seconds until one is available."""
        now = self.clock()
        with self._lock:
            b = self._buckets.pop(key, None) or _Bucket(self.burst, now)
            b.tokens = min(self.burst, b.tokens + (now - b.at) * self.rate)
            b.at = now
            self._buckets[key] = b
            while len(self._buckets) > MAX_CLIENTS:
                self._buckets.popitem(last=False)
            if b.tokens >= 1.0:
                b.tokens -= 1.0
                return 0.0
            return (1.0 - b.tokens) / self.rate


def check_rate(bucket: TokenBucket, client: str, what: str) -> None:
    wait = bucket.take(client)
    if wait > 0:
        secs = max(1, math.ceil(wait))
        raise Refused(
            429, "rate_limited", f"too many {what} from {client}: retry in {secs} s", {"Retry-After": str(secs)}
        )


def host_name(host_header: str | None) -> str:
    """``127.0.0.1:8108`` → ``127.0.0.1``, ``[::1]:8108`` → ``::1``."""
    h = (host_header or "").strip().lower()
    if h.startswith("["):
        return h[1 : h.find("]")] if "]" in h else h
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def check_read(
    read_token: str | None, client: str | None, authorization: str | None, host_header: str | None = None
) -> None:
    if read_token:
        given = bearer(authorization)
        if given is None:
            raise Refused(
                401,
                "unauthorized",
                "reads need the read token: send 'Authorization: Bearer <web.read_token>'",
                {"WWW-Authenticate": "Bearer"},
            )
        if not token_matches(given, read_token):
            raise Refused(403, "forbidden", "wrong read token")
        return
    if not is_loopback(client):
        raise Refused(
            403,
            "forbidden",
            "reads without web.read_token are answered to loopback clients only; set ULTRA_SIGNALS_WEB__READ_TOKEN",
        )
    if not is_loopback(host_name(host_header)):
        raise Refused(
            403,
            "forbidden",
            "without web.read_token reads must name this host as 127.0.0.1, ::1 or localhost (a guard against DNS "
            "rebinding); behind a reverse proxy, set ULTRA_SIGNALS_WEB__READ_TOKEN",
        )


def _same_site(origin: str, host_header: str | None) -> bool:
    try:
        netloc = urlsplit(origin).netloc
    except ValueError:
        return False
    return bool(host_header) and netloc.lower() == (host_header or "").lower()


def check_csrf(
    origin: str | None, sec_fetch_site: str | None, host_header: str | None, content_type: str | None
) -> None:
    """Refuse a write that a browser says came from another site, or whose body is not JSON (see module doc)."""
    if sec_fetch_site is not None and sec_fetch_site.lower() == "cross-site":
        raise Refused(403, "csrf", "cross-site request refused (Sec-Fetch-Site: cross-site)")
    if origin is not None and origin != "null" and not _same_site(origin, host_header):
        raise Refused(403, "csrf", f"cross-site request refused: Origin {origin[:100]!r} is not this server")
    if origin == "null":
        raise Refused(403, "csrf", "cross-site request refused: opaque Origin")
    ctype = (content_type or "").split(";")[0].strip().lower()
    if ctype and ctype != "application/json":
        raise Refused(415, "csrf", f"control actions take a JSON body (Content-Type: application/json), not {ctype}")


def check_write(write_token: str | None, given: str | None) -> None:
    if not write_token:
        raise Refused(
            403,
            "write_disabled",
            "control actions are disabled: no web.write_token configured (set ULTRA_SIGNALS_WEB__WRITE_TOKEN "
            "in the environment or the secrets file)",
        )
    if not given:
        raise Refused(401, "unauthorized", "control actions need the write token in the 'X-Write-Token' header")
    if not token_matches(given, write_token):
        raise Refused(403, "forbidden", "wrong write token")
