"""The status page in a real browser: headless Chromium (Debian's), driven by Playwright.

A real Socket.IO server with the status app mounted beside python-socketio, real
python-socketio clients beating, and Chromium loading ``/status``: the page
loads with no console error, shows the peers, and when one client goes silent it
shows that client gone with reason ``heartbeat timeout`` within the timeout + 1 s,
live (Server-Sent Events), without a reload. The test saves a screenshot
(``tmp_path``; also into ``$HEARTBEAT_MONITOR_SCREENSHOTS`` when that is set).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from tests.conftest import require_tool

from ._live import serving

pytestmark = pytest.mark.anyio

CHROMIUM = "/usr/bin/chromium"
#: Flags for a quiet headless Chromium in a container (root: no sandbox).
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
INTERVAL = 0.5
MISSES = 2
PEERS = 6


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # python-socketio, uvicorn and Playwright's async API


@pytest.fixture
async def browser() -> Any:
    require_tool("chromium", os.access(CHROMIUM, os.X_OK))
    try:
        from playwright.async_api import async_playwright
    except ImportError:
        require_tool("playwright (pip)", False)
    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            await browser.close()


async def test_the_live_page_shows_a_silent_client_gone(browser: Any, tmp_path: Path) -> None:
    async with serving(PEERS, interval=INTERVAL, misses=MISSES) as live:
        timeout = live.adapter.timeout
        clients = live.clients
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        try:
            problems: list[str] = []
            page.on(
                "console",
                lambda message: (
                    problems.append(f"console {message.type}: {message.text}")
                    if message.type in ("error", "warning")
                    else None
                ),
            )
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("requestfailed", lambda request: problems.append(f"failed: {request.url}"))
            response = await page.goto(live.url + "/status")
            assert response is not None
            assert response.status == 200
            alive = page.locator("#peers-alive")
            await alive.filter(has_text=str(PEERS)).wait_for(timeout=5_000)
            assert await page.locator("#live").text_content() == "live"
            await page.evaluate("window.loadedOnce = true")  # gone if the page reloads

            silent = clients[0]
            await silent.heartbeat.stop()
            silent_since = time.monotonic()
            row = page.locator(
                f'#departures tr[data-peer="{silent.sid}"][data-reason="heartbeat timeout"]'
            )
            await row.wait_for(timeout=(timeout + 1.0) * 1000)
            shown_after = time.monotonic() - silent_since
            assert shown_after <= timeout + 1.0
            assert await page.evaluate("window.loadedOnce") is True
            assert await row.locator("td.reason").text_content() == "heartbeat timeout"
            assert (await row.locator("td.num").text_content() or "").endswith("ms")
            await alive.filter(has_text=str(PEERS - 1)).wait_for(timeout=5_000)
            await live.gone.wait(1)
            assert live.gone.items[0].reason == "heartbeat timeout"

            await clients[1].close()  # a client leaving is listed with its reason too
            left = (await live.gone.wait(2))[1]
            await page.locator(
                f'#departures tr[data-peer="{left.key}"][data-reason="{left.reason}"]'
            ).wait_for(timeout=5_000)
            screenshot = anyio.Path(tmp_path / "status.png")
            await page.screenshot(path=str(screenshot), full_page=True)
            assert (await screenshot.stat()).st_size > 10_000
            keep = os.environ.get("HEARTBEAT_MONITOR_SCREENSHOTS")
            if keep:
                await anyio.Path(keep).mkdir(parents=True, exist_ok=True)
                await anyio.Path(keep, "status.png").write_bytes(await screenshot.read_bytes())
            assert problems == []
        finally:
            await page.close()  # ends the page's event stream before the server stops
