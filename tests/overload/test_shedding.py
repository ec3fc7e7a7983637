"""Load shedding: past ``shed_lag`` new connections are refused at once, the others stay served.

The lag is injected (``monitor.overload.observe``) on a ManualClock; the
connections are real (TCP, websocket)
except for the in-memory transport. Socket.IO: ``test_shedding_socketio.py``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream
from structlog.testing import capture_logs

from heartbeat_monitor import (
    OVERLOADED,
    HeartbeatMonitor,
    ManualClock,
    OverloadGuard,
    PeerGone,
    PeerHub,
    Transport,
)
from heartbeat_monitor.testing import MemoryTransport
from heartbeat_monitor_tcp import TcpTransport
from heartbeat_monitor_websockets import CLOSE_REFUSED, WebSocketTransport

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def running(transport: Transport) -> AsyncIterator[Any]:
    clock = ManualClock()
    guard = OverloadGuard(2.0, shed_lag=0.5)
    async with HeartbeatMonitor(2.0, resolution=0.1, clock=clock, overload=guard) as monitor:
        gone: list[PeerGone] = []
        hub = PeerHub(monitor, on_gone=gone.append)
        async with anyio.create_task_group() as tg:
            host, port = await tg.start(transport.serve, hub)
            yield clock, monitor, hub, gone, host, port
            tg.cancel_scope.cancel()


def overload(monitor: HeartbeatMonitor, clock: ManualClock, lag: float = 0.8) -> None:
    """What the probe measures on an overloaded server: ``lag``, ten times a second.

    Shedding starts once most measures exceeded shed_lag for ``shed_after``.
    """
    guard = monitor.overload
    started = clock.now()
    while not guard.shedding:
        guard.observe(lag, clock.now())
        clock.advance(0.1)
        assert clock.now() - started <= guard.shed_after + 0.6


def recover(monitor: HeartbeatMonitor, clock: ManualClock) -> None:
    for _ in range(12):  # a quiet second (and a step) of 0.01 s lags
        monitor.overload.observe(0.01, clock.now())
        clock.advance(0.1)


async def test_the_hub_refuses_new_peers_while_overloaded_and_keeps_the_others(anyio_backend):
    transport = MemoryTransport()
    async with running(transport) as (clock, monitor, hub, gone, _, _):
        served = transport.connect("served")
        with capture_logs() as logs:
            overload(monitor, clock)
            refused = transport.connect("late")
        assert refused.link is None
        assert refused.closed is not None
        assert refused.closed.startswith(f"refused: overloaded: {OVERLOADED}, event-loop lag 0.800")
        assert hub.refused["overloaded"] == 1
        assert monitor.overload.refused == 1
        assert "late" not in hub
        events = [e["event"] for e in logs]
        assert "heartbeat_monitor.overload_started" in events
        assert "heartbeat_monitor.memory.peer_refused" in events
        # The peer already served stays served: it beats, it is not closed, nobody is gone.
        clock.advance(0.5)
        assert served.beat()
        assert served.closed is None
        assert gone == []
        recover(monitor, clock)
        assert not monitor.overload.shedding
        again = transport.connect("late")
        assert again.link is not None
        assert hub.refused["overloaded"] == 1


async def test_tcp_refuses_as_it_accepts_with_the_reason(anyio_backend):
    async with (
        running(TcpTransport()) as (clock, monitor, hub, gone, host, port),
        await anyio.connect_tcp(host, port) as served,
    ):
        await served.send(b'{"type":"hello","peer":"served"}\n')
        served_reader = BufferedByteReceiveStream(served)
        welcome = json.loads(await served_reader.receive_until(b"\n", 1000))
        assert welcome["type"] == "welcome"
        overload(monitor, clock)
        # Many at once: those waiting in the listen backlog are taken (and refused) together.
        late = [await anyio.connect_tcp(host, port) for _ in range(30)]
        for stream in late:
            async with stream:
                reader = BufferedByteReceiveStream(stream)
                with anyio.fail_after(5):  # refused before any hello is read
                    closed = json.loads(await reader.receive_until(b"\n", 1000))
                assert closed["type"] == "closed"
                assert closed["reason"].startswith(f"refused: overloaded: {OVERLOADED}")
                with pytest.raises(anyio.EndOfStream):
                    await stream.receive()
        assert hub.refused["overloaded"] == 30
        assert monitor.overload.refused == 30
        await served.send(b'{"type":"beat"}\n')
        assert hub.peers() == ["served"]
        assert gone == []
        recover(monitor, clock)
        async with await anyio.connect_tcp(host, port) as again:
            await again.send(b'{"type":"hello","peer":"again"}\n')
            reader = BufferedByteReceiveStream(again)
            with anyio.fail_after(5):
                assert json.loads(await reader.receive_until(b"\n", 1000))["type"] == "welcome"


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_websocket_refuses_with_4001_and_the_reason(anyio_backend):
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async with running(WebSocketTransport()) as (clock, monitor, hub, gone, host, port):
        url = f"ws://{host}:{port}"
        async with connect(url) as served:
            await served.send(json.dumps({"type": "hello", "peer": "served"}))
            assert json.loads(await served.recv())["type"] == "welcome"
            overload(monitor, clock)
            async with connect(url) as late:
                await late.send(json.dumps({"type": "hello", "peer": "late"}))
                with anyio.fail_after(5), pytest.raises(ConnectionClosed) as closed:
                    await late.recv()
            assert closed.value.rcvd is not None
            assert closed.value.rcvd.code == CLOSE_REFUSED
            assert closed.value.rcvd.reason.startswith(f"refused: overloaded: {OVERLOADED}")
            await served.send(json.dumps({"type": "beat"}))
            assert hub.peers() == ["served"]
            assert gone == []
        assert hub.refused["overloaded"] == 1
