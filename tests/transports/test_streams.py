"""TCP and WebSocket specifics on loopback, on a ManualClock (no real-time waits)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from heartbeat_monitor import HeartbeatMonitor, ManualClock, PeerGone, PeerHub, Transport
from heartbeat_monitor_tcp import TcpTransport

from ._util import until

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def running(transport: Transport) -> AsyncIterator[Any]:
    clock = ManualClock()
    async with HeartbeatMonitor(1.0, resolution=0.1, clock=clock) as monitor:
        gone: list[PeerGone] = []
        hub = PeerHub(monitor, on_gone=gone.append, notify="peer_gone")
        async with anyio.create_task_group() as tg:
            host, port = await tg.start(transport.serve, hub)
            yield clock, monitor, hub, gone, host, port
            tg.cancel_scope.cancel()


async def test_tcp_partial_frames_wait_for_their_newline(anyio_backend):
    async with running(TcpTransport()) as (clock, monitor, hub, gone, host, port):
        async with await anyio.connect_tcp(host, port) as stream:
            reader = BufferedByteReceiveStream(stream)
            await stream.send(b'{"type":"hel')
            await stream.send(b'lo","peer":"a"}\n{"ty')
            assert json.loads(await reader.receive_until(b"\n", 1000))["type"] == "welcome"
            episode = hub.episode("a")
            clock.advance(0.5)
            for byte in b'pe":"beat"}\n':
                await stream.send(bytes([byte]))
            await until(lambda: monitor.tracker.last_beat(episode) == 0.5)
            await stream.send(b'{"type":"beat"')  # a frame cut off by the end of the stream
        await until(lambda: bool(gone))
        assert (gone[0].reason, gone[0].detail) == (
            "transport error",
            "partial frame at end of stream",
        )


async def test_tcp_half_close_is_a_goodbye_and_silence_is_expiry(anyio_backend):
    async with running(TcpTransport()) as (clock, monitor, hub, gone, host, port):  # noqa: SIM117 -- the port is known only inside
        async with (
            await anyio.connect_tcp(host, port) as leaving,
            await anyio.connect_tcp(host, port) as silent,
        ):
            await leaving.send(b'{"type":"hello","peer":"leaving"}\n')
            await silent.send(b'{"type":"hello","peer":"silent"}\n')
            await until(lambda: len(hub) == 2)
            await leaving.send_eof()  # shut down our write side: still reading
            await until(lambda: bool(gone))
            assert gone[0].reason == "client disconnect"
            # a silent peer (as a half-open connection would be) is ended by expiry
            clock.advance(1.5)
            await monitor.wait_idle()
            assert gone[1].key == "silent"
            assert gone[1].expired
            reader = BufferedByteReceiveStream(silent)
            lines = [json.loads(await reader.receive_until(b"\n", 1000)) for _ in range(3)]
            assert [m["type"] for m in lines] == ["welcome", "gone", "closed"]
            assert lines[2]["reason"] == gone[1].reason


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_websocket_expiry_closes_with_4000_and_the_reason(anyio_backend):
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    from heartbeat_monitor_websockets import CLOSE_EXPIRED, WebSocketTransport

    async with (
        running(WebSocketTransport()) as (clock, monitor, _, gone, host, port),
        connect(f"ws://{host}:{port}") as ws,
    ):
        await ws.send('{"type":"hello","peer":"a"}')
        assert json.loads(await ws.recv())["type"] == "welcome"
        clock.advance(1.5)
        await monitor.wait_idle()
        with pytest.raises(ConnectionClosed), anyio.fail_after(5):
            await ws.recv()
        assert ws.close_code == CLOSE_EXPIRED
        assert ws.close_reason == gone[0].reason == "heartbeat timeout"


@pytest.mark.parametrize("name", ["tcp", "udp"])
async def test_stopping_the_server_ends_each_episode_once(anyio_backend, name):
    from heartbeat_monitor_udp import UdpTransport, datagram

    transport: Any = TcpTransport() if name == "tcp" else UdpTransport()
    clock = ManualClock()
    gone: list[PeerGone] = []
    async with HeartbeatMonitor(1.0, clock=clock) as monitor:
        hub = PeerHub(monitor, on_gone=gone.append, notify="peer_gone")
        async with anyio.create_task_group() as tg:
            host, port = await tg.start(transport.serve, hub)
            if name == "tcp":
                stream = await anyio.connect_tcp(host, port)
                await stream.send(b'{"type":"hello","peer":"a"}\n')
            else:
                sock = await anyio.create_connected_udp_socket(host, port)
                await sock.send(datagram("a", epoch=transport.epoch))
            await until(lambda: "a" in hub)
            tg.cancel_scope.cancel()
        await (stream if name == "tcp" else sock).aclose()
        assert [(g.key, g.reason) for g in gone] == [("a", "server shutdown")]
        assert len(monitor) == 0


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_websocket_keepalive_and_heartbeats_give_one_gone(anyio_backend):
    """A client whose TCP peer never answers pings: websockets' keepalive ends it first.

    The heartbeat timeout is long (10 s, on a ManualClock); the keepalive is short
    (0.1 s real time). The client is raw: it speaks the handshake and one frame and then
    reads nothing, so no pong is ever sent (a websockets client would answer for it).
    """
    import base64
    import os

    from websockets.frames import Frame, Opcode

    from heartbeat_monitor_websockets import WebSocketTransport

    transport = WebSocketTransport(ping_interval=0.1, ping_timeout=0.1)
    async with running(transport) as (_, monitor, _hub, gone, host, port):
        key = base64.b64encode(os.urandom(16)).decode()
        request = (
            f"GET / HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        async with await anyio.connect_tcp(host, port) as stream:
            await stream.send(request.encode())
            reader = BufferedByteReceiveStream(stream)
            assert b" 101 " in await reader.receive_until(b"\r\n\r\n", 10_000)
            hello = Frame(Opcode.TEXT, b'{"type":"hello","peer":"mute"}')
            await stream.send(hello.serialize(mask=True))
            await until(lambda: bool(gone))  # and never read again: no pong
        assert [(g.key, g.reason, g.expired) for g in gone] == [("mute", "transport error", False)]
        assert len(monitor) == 0
