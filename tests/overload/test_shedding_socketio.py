"""Socket.IO sheds with a ``connect_error`` ``"server overloaded"``: real server, real clients.

The lag is injected (``monitor.overload.observe``) on the adapter's ManualClock.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import anyio
import pytest
import socketio

from heartbeat_monitor import OVERLOADED, ManualClock
from tests.conftest import require_tool
from tests.socketio.conftest import StartServer

from .test_shedding import overload, recover

pytestmark = pytest.mark.anyio

JS = Path(__file__).parents[1] / "js"


async def refused_with(url: str) -> list[Any]:
    """What a python-socketio client that is refused at connect is told."""
    told: list[Any] = []
    late = socketio.AsyncClient(reconnection=False, handle_sigint=False)
    late.on("connect_error", told.append)
    with pytest.raises(socketio.exceptions.ConnectionError):
        await late.connect(url, transports=["websocket"], wait_timeout=5)
    return told


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def test_socketio_refuses_with_connect_error_before_the_app_handler(
    start_server: StartServer,
) -> None:
    clock = ManualClock()
    handled: list[str] = []

    def setup(sio: socketio.AsyncServer) -> None:
        @sio.on("connect")  # type: ignore[untyped-decorator]
        async def connect(sid: str, environ: Any, auth: Any = None) -> None:
            handled.append(sid)

    live = await start_server(interval=1, misses=5, clock=clock, setup=setup)
    monitor = live.adapter.monitor
    served = await live.client(beat=False)
    overload(monitor, clock, 0.6)  # past shed_lag (0.25 s), not far behind (1 s)
    assert await refused_with(live.url) == [{"message": OVERLOADED}]
    assert live.adapter.hub.refused["overloaded"] == 1
    assert len(handled) == 1  # the application's connect handler never saw the refused one
    assert served.sio.connected
    assert len(live.adapter.hub) == 1
    recover(monitor, clock)
    await live.client(beat=False)  # admitted again
    assert len(live.adapter.hub) == 2
    assert live.gone.items == []


async def test_the_official_js_client_gets_connect_error_server_overloaded(
    start_server: StartServer,
) -> None:
    node = shutil.which("node")
    require_tool("node", node is not None and (JS / "node_modules").is_dir())
    assert node is not None
    clock = ManualClock()
    live = await start_server(interval=1, misses=2, clock=clock)
    overload(live.adapter.monitor, clock, 0.6)
    result = await anyio.run_process(
        [node, str(JS / "client.mjs"), live.url, "websocket", "beat", "1"], check=False
    )
    lines = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert lines == [{"type": "connect_error", "message": f"Error: {OVERLOADED}"}]
    assert live.adapter.hub.refused["overloaded"] == 1


async def test_far_behind_a_new_session_gets_http_503_before_engineio_works(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    import aiohttp
    from websockets.asyncio.client import connect
    from websockets.exceptions import InvalidStatus

    clock = ManualClock()
    live = await start_server(interval=1, misses=5, clock=clock)
    served = await live.client(beat=False)
    monitor = live.adapter.monitor
    overload(monitor, clock, 0.6)  # shedding, but not far behind: the Socket.IO refusal
    assert await refused_with(live.url) == [{"message": OVERLOADED}]
    monitor.overload.observe(1.2, clock.now())  # 4x shed_lag: HTTP 503, no engine.io session
    sessions = set(live.sio.eio.sockets)
    url = live.url + "/socket.io/?EIO=4&transport="
    async with aiohttp.ClientSession() as http, http.get(url + "polling") as response:
        assert response.status == 503
        assert await response.text() == OVERLOADED
    with pytest.raises(InvalidStatus) as refused:
        async with connect(url.replace("http://", "ws://") + "websocket"):
            pass
    assert refused.value.response.status_code == 503
    assert set(live.sio.eio.sockets) <= sessions  # no engine.io session was opened
    assert live.adapter.hub.refused["overloaded"] == 3
    assert served.sio.connected  # the client already served is still served
    # uvicorn logs an error after a 503 to an upgrade; that one line per refusal is dropped.
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    # A poll of an existing session is no new session: it goes through.
    async with aiohttp.ClientSession() as http, http.get(url + "polling&sid=x") as response:
        assert response.status == 400  # engine.io's own answer to an unknown sid
