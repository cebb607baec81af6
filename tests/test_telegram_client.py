"""Bot API client against the fake server: each failure lands in the right class, and the token never leaks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

from tests.fakes.telegram_server import FakeBotApi
from ultra_signals.transport.telegram.client import PermanentError, RetryAfter, TelegramClient, TransientError

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def api() -> Iterator[FakeBotApi]:
    with FakeBotApi() as a:
        yield a


def test_send_message_posts_html_and_returns_the_message_id(api: FakeBotApi) -> None:
    async def go() -> int:
        c = TelegramClient(api.url, api.token, timeout_s=2)
        try:
            return await c.send_message("-100123", "<b>SHADOW</b> | a &amp; b", silent=True)
        finally:
            await c.aclose()

    assert asyncio.run(go()) == 1
    [d] = api.delivered
    assert (d.chat_id, d.plain, d.silent) == ("-100123", "SHADOW | a & b", True)
    assert api.requests[0].payload["parse_mode"] == "HTML"


def test_errors_are_classified(api: FakeBotApi) -> None:
    api.push(("429", 7), "500", "400", "403", "hang")

    async def go() -> list[BaseException]:
        c = TelegramClient(api.url, api.token, timeout_s=0.5)
        errors: list[BaseException] = []
        for _ in range(5):
            try:
                await c.send_message("1", "x")
            except Exception as e:
                errors.append(e)
        api.refuse()
        try:
            await c.send_message("1", "x")
        except Exception as e:
            errors.append(e)
        await c.aclose()
        return errors

    errors = asyncio.run(go())
    assert isinstance(errors[0], RetryAfter) and errors[0].retry_after == 7
    assert isinstance(errors[1], TransientError)
    assert isinstance(errors[2], PermanentError) and errors[2].status == 400
    assert "chat not found" in str(errors[2])
    assert isinstance(errors[3], PermanentError) and errors[3].status == 403
    assert isinstance(errors[4], TransientError) and "ReadTimeout" in str(errors[4])
    assert isinstance(errors[5], TransientError)
    assert api.delivered == []


def test_wrong_token_is_permanent(api: FakeBotApi) -> None:
    async def go() -> None:
        c = TelegramClient(api.url, "999:wrong", timeout_s=2)
        try:
            await c.send_message("1", "x")
        finally:
            await c.aclose()

    with pytest.raises(PermanentError, match="401"):
        asyncio.run(go())


def test_token_is_redacted_in_logs_errors_and_urls(api: FakeBotApi, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    api.push("500", "hang")
    seen: list[str] = []

    async def go() -> None:
        c = TelegramClient(api.url, api.token, timeout_s=0.3)
        for _ in range(3):
            try:
                await c.send_message("1", "x")
            except Exception as e:
                seen.append(str(e))
        api.refuse()
        try:
            await c.get_updates(None, 0)
        except Exception as e:
            seen.append(str(e))
        seen.append(c.redact(c.method_url("sendMessage")))
        await c.aclose()

    asyncio.run(go())
    assert "HTTP Request: POST" in caplog.text  # httpx did log the request lines ...
    assert "bot***/sendMessage" in caplog.text  # ... with the token scrubbed
    everything = caplog.text + "\n".join(seen)
    assert api.token not in everything
    assert api.token.replace(":", "%3A") not in everything
    assert seen[-1] == f"{api.url}/bot***/sendMessage"


def test_get_updates_long_polls_and_confirms(api: FakeBotApi) -> None:
    async def go() -> tuple[list[int], list[int]]:
        c = TelegramClient(api.url, api.token, timeout_s=2)
        try:
            first = await c.get_updates(None, 0)
            poll = asyncio.create_task(c.get_updates(None, 3))
            await asyncio.sleep(0.2)
            api.push_update(42, "/help")
            got = [u["update_id"] for u in await poll]
            after = await c.get_updates(got[-1] + 1, 0)
            return [u["update_id"] for u in first] + got, [u["update_id"] for u in after]
        finally:
            await c.aclose()

    got, after = asyncio.run(go())
    assert got == [1000]
    assert after == []
