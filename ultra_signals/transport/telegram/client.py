"""A small Bot API client over httpx that sorts every failure into retry-later, wait-then-retry, or give-up.

The bot token is part of every Bot API URL (``/bot<token>/sendMessage``), so any URL or exception text
could leak it into a log.  Every message this module builds goes through :meth:`TelegramClient.redact`, and a
logging filter scrubs the token from httpx's own request log lines.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import httpx
from pydantic import SecretStr

from ultra_signals.core.redaction import MASK, RedactingFilter, redact

REDACTED = MASK


class TelegramError(Exception):
    """A Bot API call failed; the message never contains the token."""


class TransientError(TelegramError):
    """Network trouble or a 5xx: the same request may succeed later (retry with backoff)."""


class RetryAfter(TelegramError):
    """429 flood control: Telegram says how many seconds to wait before the same request may be repeated."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PermanentError(TelegramError):
    """A 4xx other than 429 (bad chat, bot blocked, malformed text): repeating it cannot help."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


# httpx logs every request URL (which holds the token); records of the "httpx" logger are scrubbed even when a
# handler other than ours (a test's caplog, an embedding application) writes them.
_FILTER = RedactingFilter()
logging.getLogger("httpx").addFilter(_FILTER)


class TelegramClient:
    """``sendMessage`` and ``getUpdates`` at ``api_url``: Telegram, a self-hosted Bot API, or a fake."""

    def __init__(self, api_url: str, token: SecretStr | str, *, timeout_s: float = 10.0) -> None:
        self._token = token.get_secret_value() if isinstance(token, SecretStr) else token
        if not self._token:
            raise ValueError("telegram.bot_token is empty")
        _FILTER.add([self._token])
        self.api_url = api_url.rstrip("/")
        self.timeout_s = timeout_s
        self._http = httpx.AsyncClient(timeout=httpx.Timeout(timeout_s))

    def redact(self, text: str) -> str:
        """``text`` with the token replaced; use on anything that might be printed."""
        return redact(text, [self._token])

    def method_url(self, method: str) -> str:
        """The real request URL (contains the token: never print it; print :meth:`redact` of it)."""
        return f"{self.api_url}/bot{self._token}/{method}"

    async def call(self, method: str, payload: dict[str, Any], *, timeout_s: float | None = None) -> Any:
        """POST a Bot API method; the ``result`` on success, else one of the three error kinds."""
        timeout = httpx.Timeout(timeout_s if timeout_s is not None else self.timeout_s)
        try:
            resp = await self._http.post(self.method_url(method), json=payload, timeout=timeout)
        except httpx.TransportError as e:  # connect refused, timeouts, broken connections
            raise TransientError(self.redact(f"{method}: network error: {type(e).__name__}: {e}")) from None
        except (httpx.HTTPError, httpx.InvalidURL) as e:  # too many redirects, undecodable body, a bad api_url
            # ``from None``: the original exception holds the request, whose URL holds the token.
            raise PermanentError(self.redact(f"{method}: {type(e).__name__}: {e}"), 0) from None
        return self._result(method, resp)

    def _result(self, method: str, resp: httpx.Response) -> Any:
        status = resp.status_code
        try:
            body = resp.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {}
        desc = self.redact(str(body.get("description") or resp.reason_phrase or "no description"))
        if status == 200 and body.get("ok") is True:
            return body.get("result")
        if status == 429:
            params = body.get("parameters") if isinstance(body.get("parameters"), dict) else {}
            raw = params.get("retry_after") if params else None
            if raw is None:
                raw = resp.headers.get("Retry-After")
            try:
                wait = float(raw) if raw is not None else 1.0
            except ValueError:
                wait = 1.0
            wait = wait if math.isfinite(wait) and wait >= 0 else 1.0
            raise RetryAfter(f"{method}: 429 {desc} (retry after {wait:g}s)", wait)
        if status >= 500 or status == 200:  # a 200 without ok=true is a broken proxy or server, not our request
            raise TransientError(f"{method}: HTTP {status}: {desc}")
        raise PermanentError(f"{method}: HTTP {status}: {desc}", status)

    async def send_message(self, chat_id: str, text: str, *, silent: bool = False, html: bool = True) -> int:
        """Send one message (≤ 4096 characters); returns Telegram's message id."""
        payload: dict[str, Any] = {"chat_id": chat_id, "text": text, "disable_web_page_preview": True}
        if html:
            payload["parse_mode"] = "HTML"
        if silent:
            payload["disable_notification"] = True
        result = await self.call("sendMessage", payload)
        if isinstance(result, dict) and isinstance(result.get("message_id"), int):
            return int(result["message_id"])
        return 0

    async def get_updates(self, offset: int | None, timeout_s: int) -> list[dict[str, Any]]:
        """Long poll: the server holds the request up to ``timeout_s`` until an update arrives."""
        payload: dict[str, Any] = {"timeout": timeout_s, "allowed_updates": ["message"]}
        if offset is not None:
            payload["offset"] = offset
        result = await self.call("getUpdates", payload, timeout_s=timeout_s + self.timeout_s)
        if not isinstance(result, list):
            raise TransientError("getUpdates: result is not a list")
        return [u for u in result if isinstance(u, dict)]

    async def aclose(self) -> None:
        await self._http.aclose()
