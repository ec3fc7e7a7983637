"""``heartbeat-monitor serve`` itself (a real process) with a page in real Chromium.

The page comes from another origin (a test server) and takes everything from
``serve``: the module (``/static/heartbeat.js``, cross-origin) and Socket.IO.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import AsyncIterator
from types import ModuleType
from typing import Any

import aiohttp
import anyio
import pytest
import socketio

from heartbeat_monitor_socketio import SocketIOAdapter, SocketIOServer
from heartbeat_monitor_socketio._static import static_dir
from tests.cli._run import SMOKE, run_cli
from tests.cli.test_mistakes import assert_one_line

from ._cdp import Chromium
from .conftest import HIDDEN_TIMEOUT, INTERVAL, MISSES, pages_app, require_browser, until

pytestmark = [pytest.mark.anyio, pytest.mark.slow]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _smoke_script() -> ModuleType:
    """``scripts/smoke.py`` as a module: its ``Server`` reads a ``serve`` process's JSON logs."""
    spec = importlib.util.spec_from_file_location("heartbeat_monitor_smoke", SMOKE)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


Serve = _smoke_script().Server


@contextlib.asynccontextmanager
async def serve(*options: str) -> AsyncIterator[tuple[Any, str]]:
    command = [sys.executable, "-m", "heartbeat_monitor._cli", "serve", "--port", "0"]
    command += ["--log-format", "json", "--log-level", "debug", *options]
    async with await anyio.open_process(command, stderr=None) as process:
        try:
            logs = Serve(process)
            serving = await logs.next_event("heartbeat_monitor.socketio.serving")
            yield logs, str(serving["url"]).removesuffix("/socket.io/")
        finally:
            if process.returncode is None:
                process.terminate()
            with anyio.move_on_after(10):
                await process.wait()
            if process.returncode is None:
                process.kill()


def test_a_hidden_timeout_shorter_than_the_normal_one_is_a_usage_error():
    line = assert_one_line(
        run_cli("serve", "--interval", "5", "--hidden-timeout", "3", "--port", "0")
    )
    assert "--hidden-timeout (3 s) must not be shorter than --interval x --misses (10 s)" in line
    assert "--hidden-timeout" in run_cli("serve", "--help").stdout


async def test_serve_serves_the_module_and_holds_a_hidden_page_to_the_hidden_timeout():
    require_browser()
    options = ["--interval", str(INTERVAL), "--misses", str(MISSES)]
    options += ["--hidden-timeout", str(HIDDEN_TIMEOUT)]
    async with serve(*options) as (logs, url):
        async with (
            aiohttp.ClientSession() as client,
            client.get(f"{url}/static/heartbeat.js") as got,
        ):
            assert got.status == 200
            assert await got.read() == (static_dir() / "heartbeat.js").read_bytes()
        origin = SocketIOServer(
            SocketIOAdapter(socketio.AsyncServer(async_mode="asgi")), other_asgi_app=pages_app
        )
        async with origin, Chromium() as browser:
            page = await browser.new_page(f"{origin.url}/page?server={url}&interval={INTERVAL}")
            sid = await until(lambda: page.evaluate("record.id"))
            await logs.next_event("heartbeat_monitor.socketio.peer_connected", sid=sid)
            await page.hide()
            await logs.next_event("heartbeat_monitor.socketio.peer_hidden", peer=sid)
            await page.freeze()
            gone = await logs.next_event("heartbeat_monitor.peer_gone", peer=sid)
            assert gone["reason"] == "heartbeat timeout (hidden)"
            assert float(gone["detail"].split()[2]) > HIDDEN_TIMEOUT
            await page.resume()
            assert await until(lambda: page.evaluate("record.disconnect")) == "io server disconnect"
        departures = [e for e in logs.seen if e["event"] == "heartbeat_monitor.peer_gone"]
        assert [e["peer"] for e in departures] == [sid]
