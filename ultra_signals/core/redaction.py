"""The one redaction helper: hide credentials in URLs and known secret values in any text.

Why one helper: secrets reach text in many ways (a journal URL in a report, a bot token in a Bot API URL inside
an httpx exception, an API key in a request header a debug log prints).  Each of those places calls
:func:`redact` (or :func:`redact_url` for a single URL) with the secrets it knows, and the logging setup installs
a :class:`RedactingFilter` carrying every secret of the loaded settings, so a record that slipped past is still
scrubbed before it is written.

Pure functions, no I/O and no global state: the filter holds its own set of secrets.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from urllib.parse import quote, unquote

MASK = "***"

# scheme://[user[:password]@]host — userinfo stops at the first '/', '?', '#' or whitespace after the scheme.
_URL_CREDS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)(?P<userinfo>[^\s/?#@'\"<>]*)@")
# key=value pairs in URLs or text whose key says "secret" (query strings, DSNs, log lines).
_SECRET_PARAM = re.compile(
    r"(?P<key>\b(?:password|passwd|pwd|secret|api[_-]?key|apikey|token|signature)=)(?P<value>[^&\s'\"]+)",
    re.IGNORECASE,
)

# A Telegram Bot API token in a request path: /bot123456:AA.../sendMessage (":" may be percent-encoded).
_BOT_PATH = re.compile(r"/bot\d+(?::|%3A)[A-Za-z0-9_\-]+", re.IGNORECASE)


def url_has_credentials(url: str) -> bool:
    """True when ``url`` carries a password (``scheme://user:pw@host``) or a bare token (``scheme://tok@host``)."""
    m = _URL_CREDS.search(url)
    return bool(m and m.group("userinfo"))


def url_password(url: str) -> str | None:
    """The password part of a URL's userinfo (percent-decoded), or None."""
    m = _URL_CREDS.search(url)
    if not m or ":" not in m.group("userinfo"):
        return None
    pw = m.group("userinfo").split(":", 1)[1]
    return unquote(pw) if pw else None


def redact_url(url: str) -> str:
    """``url`` with the password of its userinfo replaced (``postgresql://u:***@h/db``, ``redis://***@h``)."""
    return _URL_CREDS.sub(_mask_userinfo, url)


def _mask_userinfo(m: re.Match[str]) -> str:
    info = m.group("userinfo")
    if not info:
        return m.group(0)
    if ":" in info:
        user = info.split(":", 1)[0]
        return f"{m.group('scheme')}{user}:{MASK}@" if user else f"{m.group('scheme')}:{MASK}@"
    # A lone userinfo may itself be a token (redis://token@host): hide it.
    return f"{m.group('scheme')}{MASK}@"


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` with URL credentials, secret-looking ``key=value`` pairs and each known secret value hidden.

    Secrets are also matched percent-encoded (a token inside a URL has ``:`` as ``%3A``).  Empty and very short
    values (under 4 characters) are ignored: masking every "a" would make text unreadable without protecting much.
    """
    out = redact_url(text)
    out = _BOT_PATH.sub("/bot" + MASK, out)
    out = _SECRET_PARAM.sub(lambda m: m.group("key") + MASK, out)
    for s in sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True):
        out = out.replace(s, MASK)
        enc = quote(s, safe="")
        if enc != s:
            out = out.replace(enc, MASK)
    return out


class RedactingFilter(logging.Filter):
    """A logging filter that scrubs every record (message, arguments, exception text) before a handler writes it.

    Attached to handlers (not loggers) so records of third-party loggers (httpx, httpcore, redis) pass through it.
    """

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: set[str] = {s for s in secrets if s}

    def add(self, secrets: Iterable[str]) -> None:
        self.secrets.update(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        clean = redact(msg, self.secrets)
        if clean != msg:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            # Render the exception once, scrubbed; formatters reuse exc_text instead of formatting exc_info again.
            text = logging.Formatter().formatException(record.exc_info)
            record.exc_text = redact(text, self.secrets)
            record.exc_info = None
        return True
