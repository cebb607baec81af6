"""The status page in a real headless Chromium (Debian's ``chromium`` driven by Playwright): what an operator sees.

A real uvicorn on 127.0.0.1:0 serves a finished simulated run's journal; the browser loads the page at a phone's
size, sees the run id, the cap windows and the charts, types the write token and clicks Pause, and sees the state
change (and the journal has it, with who did it).  The screenshot goes under the test's tmp_path; with
``TEST_ULTRA_SIGNALS_WEB_SCREENSHOT=docs/web-ui.png`` it is also written there (how docs/web-ui.png is made).

Skips with a reason where Chromium is absent, fails under ``CI=true`` (``scripts/test_services.sh`` installs it).
"""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from typing import Any

from tests.web_run import WRITE, finished_run, web_settings
from ultra_signals.control import Control
from ultra_signals.control.state import is_paused
from ultra_signals.journal.trading import ExecStore
from ultra_signals.live.view import RunnerView

PHONE = {"width": 390, "height": 844}


def test_page_shows_the_run_and_pauses_it(tmp_path: Path, chromium: Path) -> None:
    from playwright.async_api import async_playwright, expect

    from ultra_signals.web.server import WebServer

    run = finished_run(tmp_path)
    settings = web_settings(run.settings, write_token=WRITE, port=0, refresh_s=1.0)
    view = RunnerView(run.runner)
    server = WebServer(Control(run.journal, view), settings, probe=view)
    shot = tmp_path / "web-ui.png"
    seen: dict[str, Any] = {}

    async def main() -> None:
        port = await server.start()
        try:
            async with async_playwright() as p:
                browser = await p.chromium.launch(executable_path=str(chromium), headless=True)
                try:
                    page = await browser.new_page(viewport=PHONE, device_scale_factor=1)
                    errors: list[str] = []
                    page.on("pageerror", lambda e: errors.append(str(e)))
                    await page.goto(f"http://127.0.0.1:{port}/", timeout=30_000)
                    await page.locator("body[data-loaded='1']").wait_for(timeout=30_000)
                    seen["run_id"] = await page.text_content("#run-id")
                    seen["state"] = await page.text_content("#state")
                    seen["cap_hour"] = await page.text_content(".cap-hour")
                    seen["cap_day"] = await page.text_content(".cap-day")
                    seen["charts"] = await page.locator("#charts svg polyline").count()
                    seen["marks"] = await page.locator("#charts .signal-mark").count()
                    seen["decisions"] = await page.locator("#decision-rows tr").count()
                    seen["signals"] = await page.locator("#signal-rows tr").count()
                    seen["pnl"] = await page.text_content("#pnl-rows")
                    seen["overflow"] = await page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
                    # Pause without the token is refused on the page, nothing changes
                    await page.click("#btn-pause")
                    seen["no_token_msg"] = await page.text_content("#msg")
                    await page.fill("#write-token", WRITE)
                    await page.press("#write-token", "Tab")  # a change event stores it in sessionStorage
                    await page.click("#btn-pause")
                    await expect(page.locator("#state")).to_have_text("PAUSED", timeout=30_000)
                    seen["state_after"] = await page.text_content("#state")
                    seen["msg"] = await page.text_content("#msg")
                    seen["stored"] = await page.evaluate("sessionStorage.getItem('writeToken')")
                    seen["cookies"] = await page.context.cookies()
                    await page.screenshot(path=str(shot), full_page=True)
                    seen["errors"] = errors
                finally:
                    await browser.close()
        finally:
            await server.aclose()

    asyncio.run(main())
    st = run.runner.stats
    assert seen["errors"] == [], seen["errors"]
    assert seen["run_id"] == run.runner.run_id and seen["state"] == "ACTIVE"
    caps = {w.name: w for w in run.control().caps().windows}
    assert seen["cap_hour"] == f"{caps['hour'].used} / {caps['hour'].cap}"
    assert seen["cap_day"] == f"{caps['day'].used} / {caps['day'].cap}"
    assert seen["charts"] == len(st.symbols) and seen["marks"] >= 1 and seen["decisions"] == 15
    assert seen["signals"] == min(5, len(run.control().recent_signals(50)))
    assert f"since start{run.control().pnl(1).realized_total:+.2f} USDT" in seen["pnl"]
    assert seen["overflow"] <= 0, "the page must not scroll sideways on a phone"
    assert seen["no_token_msg"] == "type the write token first"
    assert seen["state_after"] == "PAUSED" and seen["msg"].startswith("pause: done")
    assert seen["stored"] == WRITE and seen["cookies"] == []  # the token lives in sessionStorage, never a cookie
    assert is_paused(run.journal)
    assert ExecStore(run.journal.engine).events(kind="operator")[-1]["detail"].endswith("(by web:127.0.0.1)")
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    out = os.environ.get("TEST_ULTRA_SIGNALS_WEB_SCREENSHOT")
    if out:
        shutil.copyfile(shot, out)
