"""The screenshot of the status page in the docs: a real server, real clients, real Chromium.

    python -m tests.observability.screenshot docs/observability-status.png [SECONDS]

Serves Socket.IO with the status app mounted, connects 40 python-socketio
clients beating every 0.5 s (timeout 1 s), and over SECONDS (default 60): some
go silent one by one, a few leave, one sends a malformed frame, more join;
then Chromium (Debian's, via Playwright) loads ``/status`` and the page is
captured. Not part of the test suite (it takes a minute); the suite's own
browser test saves a screenshot of its shorter run.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

import anyio

from tests.socketio.conftest import RawClient

from ._live import serving
from .test_browser import CHROMIUM, CHROMIUM_ARGS

INTERVAL = 0.5


async def main(out: Path, seconds: float) -> None:
    import structlog
    from playwright.async_api import async_playwright

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    rng = random.Random(7)
    async with serving(40, interval=INTERVAL, sample_interval=1.0) as live:
        clients = live.clients
        step = seconds / 12
        for round_ in range(12):
            await anyio.sleep(step)
            beating = [c for c in clients if c.heartbeat.running]
            for client in rng.sample(beating, min(3, len(beating))):
                await client.heartbeat.stop()  # silent: the server expires it
            if round_ % 3 == 1:
                await rng.choice([c for c in clients if c.heartbeat.running]).close()
            if round_ == 5:
                raw = await RawClient.open(live.url)
                await raw.connect()
                await raw.send('42["heartbeat"')  # malformed: refused
                await raw.close()
            if round_ in (3, 7):
                await live.join(8)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = await browser.new_page(viewport={"width": 1280, "height": 960})
            await page.goto(live.url + "/status")
            await page.locator("#live.on").wait_for(timeout=5_000)
            await page.wait_for_function("document.body.dataset.updated")
            await page.screenshot(path=str(out), full_page=True)
            await page.close()
            await browser.close()
        metrics = live.metrics
        print(out, metrics.peers(), dict(metrics.gone()), dict(metrics.refused()))


if __name__ == "__main__":
    anyio.run(main, Path(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 60.0)
