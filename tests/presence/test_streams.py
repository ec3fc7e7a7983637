"""Presence over websockets, TCP and UDP: the hub's default room, real sockets on loopback.

The monitor runs on a ManualClock: a flush happens when the test moves the
clock past the window, so nothing waits for real time but the sockets.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from heartbeat_monitor import HeartbeatMonitor, ManualClock, PeerHub
from tests.transports._util import until

from ._view import View, server_view

pytestmark = pytest.mark.anyio

WINDOW = 0.05


class Peer:
    """One client of a stream transport: ``send`` a message, every message it got in ``inbox``."""

    def __init__(self, send: Callable[[dict[str, Any]], Awaitable[None]]) -> None:
        self.send = send
        self.inbox: list[dict[str, Any]] = []

    def view(self) -> View:
        return View().feed_all(self.inbox)


async def _tcp(stack: AsyncExitStack, host: str, port: int, name: str) -> Peer:
    stream = await stack.enter_async_context(await anyio.connect_tcp(host, port))

    async def send(message: dict[str, Any]) -> None:
        await stream.send(json.dumps(message).encode() + b"\n")

    peer = Peer(send)
    reader = BufferedByteReceiveStream(stream)

    async def receive() -> None:
        try:
            while True:
                peer.inbox.append(json.loads(await reader.receive_until(b"\n", 1 << 20)))
        except (anyio.IncompleteRead, anyio.EndOfStream):
            return  # the server closed it

    tasks = await stack.enter_async_context(anyio.create_task_group())
    stack.callback(tasks.cancel_scope.cancel)
    tasks.start_soon(receive)
    await send({"type": "hello", "peer": name})
    return peer


async def _websocket(stack: AsyncExitStack, host: str, port: int, name: str) -> Peer:
    from websockets.asyncio.client import connect

    ws = await stack.enter_async_context(connect(f"ws://{host}:{port}"))

    async def send(message: dict[str, Any]) -> None:
        await ws.send(json.dumps(message))

    peer = Peer(send)

    async def receive() -> None:
        async for data in ws:
            peer.inbox.append(json.loads(data))

    tasks = await stack.enter_async_context(anyio.create_task_group())
    stack.callback(tasks.cancel_scope.cancel)
    tasks.start_soon(receive)
    await send({"type": "hello", "peer": name})
    return peer


def _udp(epoch: str) -> Callable[..., Awaitable[Peer]]:
    async def connect(stack: AsyncExitStack, host: str, port: int, name: str) -> Peer:
        sock = await stack.enter_async_context(await anyio.create_connected_udp_socket(host, port))
        ts = [0]

        async def send(message: dict[str, Any]) -> None:  # a datagram as datagram() makes it
            ts[0] += 1
            kind = "beat" if message["type"] == "hello" else message["type"]
            fields = {"room": message["room"]} if "room" in message else {}
            data = {"type": kind, "peer": name, "ts": 10**18 + ts[0], "epoch": epoch, **fields}
            await sock.send(json.dumps(data).encode())

        peer = Peer(send)

        async def receive() -> None:
            async for data in sock:
                loaded = json.loads(data)
                peer.inbox.extend(loaded if isinstance(loaded, list) else [loaded])

        tasks = await stack.enter_async_context(anyio.create_task_group())
        stack.callback(tasks.cancel_scope.cancel)
        tasks.start_soon(receive)
        await send({"type": "hello"})
        return peer

    return connect


@asynccontextmanager
async def serving(name: str) -> AsyncIterator[tuple[ManualClock, PeerHub, Any]]:
    clock = ManualClock()
    async with HeartbeatMonitor(10.0, clock=clock) as monitor, anyio.create_task_group() as tg:
        hub = PeerHub(monitor)  # presence, every connection in the room "peers"
        if name == "tcp":
            from heartbeat_monitor_tcp import TcpTransport

            transport: Any = TcpTransport()
        elif name == "websocket":
            from heartbeat_monitor_websockets import WebSocketTransport

            transport = WebSocketTransport()
        else:
            from heartbeat_monitor_udp import UdpTransport

            transport = UdpTransport(wall_clock=lambda: 10**18)
        host, port = await tg.start(transport.serve, hub)
        connect = _udp(transport.epoch) if name == "udp" else _tcp if name == "tcp" else _websocket

        async def client(stack: AsyncExitStack, peer: str) -> Peer:
            return await connect(stack, host, port, peer)

        yield clock, hub, client
        tg.cancel_scope.cancel()


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("name", ["tcp", "websocket", "udp"])
async def test_state_diffs_and_sync_on_a_stream_transport(anyio_backend, name):
    async with serving(name) as (clock, hub, client), AsyncExitStack() as stack:
        a = await client(stack, "a")
        b = await client(stack, "b")
        await until(lambda: len(hub) == 2)
        clock.advance(WINDOW)
        expected = server_view(hub.presence("peers"))
        assert set(expected) == {"a", "b"}
        for peer in (a, b):

            def current(peer: Peer = peer) -> bool:
                return peer.view().peers == expected

            await until(current)
            assert peer.view().count == {"peers": 2, "connections": 2}
        await b.send({"type": "presence_sync", "room": "peers"})
        await until(lambda: hub.roster.pending)  # a state is owed at the next flush
        clock.advance(WINDOW)
        await until(lambda: b.view().states == 2)
        assert hub.end("b")
        clock.advance(WINDOW)
        await until(lambda: a.view().left == [("b", "server disconnect")])
        assert a.view().peers == server_view(hub.presence("peers")) == {"a": expected["a"]}
        assert a.view().errors == []
