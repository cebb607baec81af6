"""Logging, configured once per process: rich on a terminal, plain lines otherwise, JSON lines on request.

Why here: every module logs through ``logging.getLogger(__name__)`` and never configures anything itself; the
command line calls :func:`configure_logging` once (its global ``--log-format`` and ``-v`` options) and
:func:`apply_settings` after the settings are loaded (``log.level`` / ``log.format`` and the secrets to scrub).
Logs go to stderr: stdout carries the product's own output (cards, tables, ``config show``).

Every handler carries a :class:`~ultra_signals.core.redaction.RedactingFilter`, so no record -- ours or a
library's (httpx prints request URLs, which hold the Bot API token) -- is written with a secret in it.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any, Literal, TextIO

from ultra_signals.core.redaction import RedactingFilter, redact

LogFormat = Literal["auto", "rich", "text", "json"]
#: Libraries that log every request at INFO; quiet unless -vv.
NOISY = ("httpx", "httpcore", "websockets", "asyncio", "urllib3", "sqlalchemy")
_TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"


class _StderrHandler(logging.StreamHandler[TextIO]):
    """Writes to whatever ``sys.stderr`` is at emit time (test runners swap it), not the one seen at setup."""

    def __init__(self) -> None:
        super().__init__(sys.stderr)

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts`` (UTC ISO 8601), ``level``, ``logger``, ``msg`` and ``exc`` if any."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            out["exc"] = record.exc_text
        return json.dumps(out, ensure_ascii=False)


class _State:
    """What :func:`configure_logging` installed, so a second call replaces it instead of adding handlers."""

    handler: logging.Handler | None = None
    redactor: RedactingFilter = RedactingFilter()
    fmt: LogFormat = "auto"
    fmt_given = False
    verbose = 0


def configure_logging(
    *, fmt: LogFormat | None = None, verbose: int = 0, level: str = "INFO", secrets: Iterable[str] = ()
) -> logging.Handler:
    """Install the one root handler (replacing a previous one of ours); returns it.

    ``verbose``: 0 uses ``level``; 1 is DEBUG for this package; 2 or more is DEBUG for libraries too.
    """
    root = logging.getLogger()
    if _State.handler is not None:
        root.removeHandler(_State.handler)
    _State.fmt_given = fmt is not None or _State.fmt_given
    _State.fmt = fmt or _State.fmt
    _State.verbose = verbose
    _State.redactor.add(secrets)
    handler = _make_handler(_State.fmt)
    handler.addFilter(_State.redactor)
    root.addHandler(handler)
    _State.handler = handler
    _set_levels(level)
    return handler


def unconfigure() -> None:
    """Undo :func:`configure_logging`: remove our handler, give the levels back (tests; an embedding process)."""
    if _State.handler is None:
        return
    logging.getLogger().removeHandler(_State.handler)
    _State.handler, _State.fmt, _State.fmt_given, _State.verbose = None, "auto", False, 0
    _State.redactor = RedactingFilter()
    logging.getLogger().setLevel(logging.WARNING)
    for name in ("ultra_signals", *NOISY):
        logging.getLogger(name).setLevel(logging.NOTSET)


def apply_settings(level: str, fmt: LogFormat, secrets: Iterable[str]) -> None:
    """After the settings are loaded: their level and format unless the command line chose, and their secrets."""
    _State.redactor.add(secrets)
    if _State.handler is None:
        configure_logging(fmt=fmt, level=level)
        return
    if not _State.fmt_given and fmt != _State.fmt:
        _State.fmt = fmt
        configure_logging(fmt=None, verbose=_State.verbose, level=level)
        _State.fmt_given = False
        return
    _set_levels(level)


def add_secrets(secrets: Iterable[str]) -> None:
    """Scrub these values from every record from now on (e.g. a token read after start-up)."""
    _State.redactor.add(secrets)


def scrub(text: str) -> str:
    """``text`` redacted with every secret the logging filter knows (for messages printed outside logging)."""
    return redact(text, _State.redactor.secrets)


def json_logging() -> bool:
    """True when logs are JSON lines (the CLI then reports its own errors as records, not rich text)."""
    return _State.handler is not None and isinstance(_State.handler.formatter, JsonFormatter)


def _make_handler(fmt: LogFormat) -> logging.Handler:
    if fmt == "json":
        h: logging.Handler = _StderrHandler()
        h.setFormatter(JsonFormatter())
        return h
    if fmt == "rich" or (fmt == "auto" and sys.stderr.isatty()):
        from rich.console import Console
        from rich.logging import RichHandler

        rh = RichHandler(console=Console(stderr=True), show_path=False, markup=False, rich_tracebacks=False)
        rh.setFormatter(logging.Formatter("%(name)s: %(message)s"))
        return rh
    h = _StderrHandler()
    h.setFormatter(logging.Formatter(_TEXT_FORMAT))
    return h


def _set_levels(level: str) -> None:
    base = logging.DEBUG if _State.verbose >= 1 else logging.getLevelName(level.upper())
    if not isinstance(base, int):
        base = logging.INFO
    logging.getLogger().setLevel(base if _State.verbose >= 2 else max(base, logging.INFO))
    logging.getLogger("ultra_signals").setLevel(base)
    for name in NOISY:
        logging.getLogger(name).setLevel(logging.DEBUG if _State.verbose >= 2 else logging.WARNING)
