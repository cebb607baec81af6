"""The one redaction helper: URL credentials, Bot API tokens in paths, secret-looking parameters, known values."""

from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ultra_signals.core.redaction import (
    MASK,
    RedactingFilter,
    redact,
    redact_url,
    url_has_credentials,
    url_password,
)


@pytest.mark.parametrize(
    ("url", "shown", "pw"),
    [
        ("postgresql+psycopg://postgres:pg-S3CRET@127.0.0.1:5432/test", "postgresql+psycopg://postgres:***@127.0.0.1:5432/test", "pg-S3CRET"),
        ("redis://:r-S3CRET@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0", "r-S3CRET"),
        ("rediss://default:p%40ss@h:6380", "rediss://default:***@h:6380", "p@ss"),
        ("redis://tokenonly@h", "redis://***@h", None),
        ("sqlite:///var/journal.db", "sqlite:///var/journal.db", None),
        ("https://api.telegram.org", "https://api.telegram.org", None),
    ],
)  # fmt: skip
def test_urls(url: str, shown: str, pw: str | None) -> None:
    assert redact_url(url) == shown
    assert url_password(url) == pw
    assert url_has_credentials(url) is (shown != url)


def test_text_with_tokens_parameters_and_known_values() -> None:
    token = "123456:AAH-secret_token"
    text = (
        f"POST https://api.telegram.org/bot{token}/sendMessage failed; "
        f"also bot{token.replace(':', '%3A')} and GET /fapi/v1/order?symbol=X&signature=abc123&timestamp=1 "
        "with X-MBX-APIKEY k-0123456789"
    )
    out = redact(text, ["k-0123456789", token])
    assert token not in out and token.replace(":", "%3A") not in out and "k-0123456789" not in out
    assert "abc123" not in out and "/bot***/sendMessage" in out and "symbol=X" in out


def test_short_values_are_not_masked_everywhere() -> None:
    assert redact("a b c", ["a", ""]) == "a b c"


@settings(max_examples=200, deadline=None)
@given(
    user=st.text("abcdefgh_-.", min_size=0, max_size=8), pw=st.text("ABCxyz0123!$&'()*+,;=~", min_size=4, max_size=20)
)
def test_a_password_in_any_url_never_survives(user: str, pw: str) -> None:
    url = f"postgresql://{user}:{pw}@db.example:5432/x"
    out = redact(f"journal {url}: connection refused", [pw])
    assert pw not in out and "db.example:5432/x" in out


def test_the_filter_scrubs_message_arguments_and_exceptions() -> None:
    records: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(self.format(record))

    h = Keep()
    h.setFormatter(logging.Formatter("%(message)s"))
    h.addFilter(RedactingFilter(["tok-0123456789"]))
    lg = logging.getLogger("tests.redaction")
    lg.addHandler(h)
    lg.propagate = False
    try:
        lg.warning("url %s", "redis://:pw-0123456789@h/0")
        try:
            raise RuntimeError("bad token tok-0123456789")
        except RuntimeError:
            lg.exception("failed with %s", "tok-0123456789")
    finally:
        lg.removeHandler(h)
    text = "\n".join(records)
    assert "pw-0123456789" not in text and "tok-0123456789" not in text
    assert "Traceback" in text and MASK in text  # the traceback is kept, scrubbed
