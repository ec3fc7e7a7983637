"""One fixture per transport: a real server on a free 127.0.0.1 port, and real clients.

Adding a transport to the conformance suite = adding its name to ``TRANSPORTS``
with a server factory, and a :class:`~tests.conformance._clients.Client`
subclass. Every test in ``test_conformance.py`` then runs against it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator, Callable
from functools import partial
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from heartbeat_monitor import HeartbeatMonitor, PeerGone, PeerHub, Transport

from ._clients import CLIENTS, UDP_KEY, Client

#: Real time, kept small: the whole suite must run in well under a minute and a half.
TIMEOUT = 0.4
RESOLUTION = 0.05
#: Event-loop latency we allow on top of timeout + resolution (2 shared cores).
SLACK = 0.35
ROOT = Path(__file__).resolve().parents[2]


def _websocket() -> Transport:
    from heartbeat_monitor_websockets import WebSocketTransport

    return WebSocketTransport("127.0.0.1", 0)


def _tcp() -> Transport:
    from heartbeat_monitor_tcp import TcpTransport

    return TcpTransport("127.0.0.1", 0)


def _udp() -> Transport:
    from heartbeat_monitor_udp import UdpTransport

    return UdpTransport("127.0.0.1", 0, key=UDP_KEY)


TRANSPORTS: dict[str, Callable[[], Transport]] = {
    "websocket": _websocket,
    "tcp": _tcp,
    "udp": _udp,
}


class Harness:
    """The test in the middle: the server's hub and gone events, and a client factory."""

    def __init__(self, name: str, hub: PeerHub, address: tuple[str, int], tg: Any) -> None:
        self.name = name
        self.hub = hub
        self.monitor = hub.monitor
        self.host, self.port = address
        self.task_group: anyio.abc.TaskGroup = tg
        #: Every PeerGone with the monotonic time it was emitted.
        self.gone: list[tuple[PeerGone, float]] = []
        self.clients: list[Client] = []
        self._changed = anyio.Event()
        hub.on_gone(self._on_gone)

    def _on_gone(self, event: PeerGone) -> None:
        self.gone.append((event, time.monotonic()))
        self._changed.set()
        self._changed = anyio.Event()

    def gone_of(self, peer: str) -> list[PeerGone]:
        return [event for event, _ in self.gone if event.key == peer]

    async def wait_gone(self, peer: str, count: int = 1, within: float = 5.0) -> list[PeerGone]:
        with anyio.fail_after(within):
            while len(self.gone_of(peer)) < count:
                await self._changed.wait()
        return self.gone_of(peer)

    async def wait_for(self, predicate: Callable[[], bool], within: float = 10.0) -> None:
        """Wait for ``predicate``: re-checked on each gone event and every 10 ms."""
        with anyio.fail_after(within):
            while not predicate():
                with anyio.move_on_after(0.01):
                    await self._changed.wait()

    def client(self, peer: str) -> Client:
        client = CLIENTS[self.name](self.host, self.port, peer)
        self.clients.append(client)
        return client

    async def connect(self, peer: str, *, beat_every: float | None = TIMEOUT / 4) -> Client:
        client = self.client(peer)
        await client.start(self.task_group)
        assert client.welcomed, f"{peer} was not welcomed: {client.messages}"
        if beat_every is not None:
            client.beat_every(beat_every, self.task_group)
        return client

    async def spawn(
        self, prefix: str, count: int, interval: float = TIMEOUT / 3
    ) -> anyio.abc.Process:
        """A separate OS process holding ``count`` beating peers; returns once all are in."""
        command = [sys.executable, "-m", "tests.conformance._clients", self.name]
        command += [self.host, str(self.port), prefix, str(count), str(interval)]
        process = await anyio.open_process(command, cwd=ROOT, stderr=None)
        assert process.stdout is not None
        with anyio.fail_after(30):
            line = await BufferedByteReceiveStream(process.stdout).receive_until(b"\n", 100)
        assert line == f"ready {count}".encode(), line
        return process

    async def barrier(self, *observers: Client) -> None:
        """Everything the server emitted before now has reached the hub and ``observers``.

        A marker peer connects and closes; its ``gone`` comes after any earlier one.
        """
        marker = await self.connect(f"marker-{len(self.gone)}", beat_every=None)
        await marker.close()
        await self.wait_gone(marker.peer)
        for observer in observers:
            await observer.wait_for(partial(_told, observer, marker.peer))


def _told(observer: Client, peer: str) -> bool:
    return bool(observer.gone_notices(peer))


@pytest.fixture
def anyio_backend() -> str:
    """websockets (and python-socketio) are asyncio libraries: the suite runs on asyncio."""
    return "asyncio"


@pytest.fixture
def peer_timeout() -> float:
    """The server's heartbeat timeout; a test may override it with ``parametrize``."""
    return TIMEOUT


@pytest.fixture(params=sorted(TRANSPORTS))
async def harness(request: pytest.FixtureRequest, peer_timeout: float) -> AsyncIterator[Harness]:
    name: str = request.param
    transport = TRANSPORTS[name]()
    async with HeartbeatMonitor(peer_timeout, resolution=RESOLUTION) as monitor:
        hub = PeerHub(monitor)
        async with anyio.create_task_group() as task_group:
            address = await task_group.start(transport.serve, hub)
            harness = Harness(name, hub, address, task_group)
            yield harness
            task_group.cancel_scope.cancel()
        for client in harness.clients:
            await client.abort()
