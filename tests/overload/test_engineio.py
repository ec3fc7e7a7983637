"""engine.io's ping timeout is raised so that it cannot drop a client the monitor keeps."""

from __future__ import annotations

import json

import anyio
import pytest
import socketio
from structlog.testing import capture_logs

from heartbeat_monitor import HeartbeatMonitor, OverloadGuard
from heartbeat_monitor_socketio import SocketIOAdapter
from heartbeat_monitor_socketio._engineio import ping_timeout_floor
from tests.socketio.conftest import StartServer


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def server(**options: object) -> socketio.AsyncServer:
    return socketio.AsyncServer(async_mode="asgi", **options)


def test_a_short_ping_timeout_is_raised_to_the_timeout_plus_the_largest_stretch():
    sio = server(ping_timeout=5)
    with capture_logs() as logs:
        adapter = SocketIOAdapter(sio, interval=10, misses=2)  # timeout 20 s
    assert adapter.monitor.overload.max_stretch == 20.0
    assert sio.eio.ping_timeout == 40.0  # 20 + 20
    (line,) = [e for e in logs if e["event"] == "heartbeat_monitor.socketio.ping_timeout_raised"]
    assert (line["ping_timeout"], line["raised_to"]) == (5.0, 40.0)


def test_a_long_enough_ping_timeout_is_kept():
    sio = server(ping_timeout=60)
    SocketIOAdapter(sio, interval=10, misses=2)
    assert sio.eio.ping_timeout == 60
    default = server()  # python-engineio's 20 s is the default 5 s x 2 plus its stretch
    SocketIOAdapter(default)
    assert default.eio.ping_timeout == 20


def test_the_floor_follows_the_monitors_stretch():
    no_stretch = HeartbeatMonitor(20.0, overload=OverloadGuard(20.0, lag_factor=0))
    assert ping_timeout_floor(20.0, no_stretch) == 20.0
    short = HeartbeatMonitor(20.0, overload=OverloadGuard(20.0, max_stretch=3))
    assert ping_timeout_floor(20.5, short) == 24.0  # ceil(20.5 + 3)
    sio = server(ping_timeout=5)
    SocketIOAdapter(sio, short, interval=10, misses=2)
    assert sio.eio.ping_timeout == 23.0


def test_engineio_ignore_leaves_it_alone():
    sio = server(ping_timeout=5)
    SocketIOAdapter(sio, interval=10, misses=2, engineio="ignore")
    assert sio.eio.ping_timeout == 5


@pytest.mark.anyio
async def test_clients_are_told_the_raised_ping_timeout(start_server: StartServer) -> None:
    from websockets.asyncio.client import connect

    live = await start_server(interval=10, misses=2, sio_options={"ping_timeout": 5})
    url = live.url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
    async with connect(url) as ws:
        with anyio.fail_after(5):
            opening = await ws.recv()
    assert isinstance(opening, str)
    assert opening.startswith("0")
    assert json.loads(opening[1:])["pingTimeout"] == 40_000
