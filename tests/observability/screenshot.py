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
import socketio

from heartbeat_monitor import Metrics
from heartbeat_monitor_socketio import SocketIOAdapter, SocketIOServer
from tests.socketio.conftest import Client, RawClient

from .test_browser import CHROMIUM, CHROMIUM_ARGS

INTERVAL = 0.5


async def main(out: Path, seconds: float) -> None:
    import structlog
    from playwright.async_api import async_playwright

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(30))
    sio = socketio.AsyncServer(async_mode="asgi")
    adapter = SocketIOAdapter(sio, interval=INTERVAL, misses=2, room="peers")
    metrics = Metrics(adapter.hub, sample_interval=1.0)
    server = SocketIOServer(adapter, other_asgi_app=metrics.app())
    clients: list[Client] = []
    rng = random.Random(7)

    async def join(count: int) -> None:
        for _ in range(count):
            client = Client(server.url, "/", INTERVAL)
            await client.connect()
            client.heartbeat.start()
            clients.append(client)

    async with server, metrics:
        await join(40)
        step = seconds / 12
        for round_ in range(12):
            await anyio.sleep(step)
            beating = [c for c in clients if c.heartbeat.running]
            for client in rng.sample(beating, min(3, len(beating))):
                await client.heartbeat.stop()  # silent: the server expires it
            if round_ % 3 == 1:
                leaving = rng.choice([c for c in clients if c.heartbeat.running])
                await leaving.close()
            if round_ == 5:
                raw = await RawClient.open(server.url)
                await raw.connect()
                await raw.send('42["heartbeat"')  # malformed: refused
                await raw.close()
            if round_ in (3, 7):
                await join(8)
        async with async_playwright() as playwright:
            browser = await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page = await browser.new_page(viewport={"width": 1280, "height": 960})
            await page.goto(server.url + "/status")
            await page.locator("#live.on").wait_for(timeout=5_000)
            await page.wait_for_function("document.body.dataset.updated")
            await page.screenshot(path=str(out), full_page=True)
            await page.close()
            await browser.close()
        with anyio.CancelScope(shield=True):
            for client in clients:
                await client.close()
    print(f"{out}: {metrics.peers()} gone={dict(metrics.gone())} refused={dict(metrics.refused())}")


if __name__ == "__main__":
    anyio.run(main, Path(sys.argv[1]), float(sys.argv[2]) if len(sys.argv) > 2 else 60.0)
