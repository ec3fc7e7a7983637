"""One fixture per transport: a real server on a free 127.0.0.1 port, and real clients.

Adding a transport to the conformance suite = adding its name to ``TRANSPORTS``
with a server factory, and a :class:`~tests.conformance._clients.Client`
subclass. Every test in ``test_conformance.py`` then runs against it.
"""

from __future__ import annotations

import sys
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Gone:
    """One "gone" as the server reported it, whatever the transport."""

    key: str
    reason: str
    expired: bool


class Harness:
    """The test in the middle: the server's view, its gone events, and a client factory.

    ``hub`` is the seam's :class:`PeerHub` for the adapters built on it, ``None``
    otherwise; the methods below are what every transport answers.
    """

    #: How long 1,000 simultaneous departures may take to be reported (and settle).
    departure_within = 15.0

    def __init__(self, name: str, hub: PeerHub | None, address: tuple[str, int], tg: Any) -> None:
        self.name = name
        self.hub = hub
        self.host, self.port = address
        self.task_group: anyio.abc.TaskGroup = tg
        #: The server's heartbeat timeout.
        self.timeout = hub.monitor.tracker.timeout if hub is not None else TIMEOUT
        #: Every gone with the monotonic time it was reported.
        self.gone: list[tuple[Gone, float]] = []
        self.clients: list[Client] = []
        self._changed = anyio.Event()
        if hub is not None:
            hub.on_gone(self._on_gone)

    def _on_gone(self, event: PeerGone) -> None:
        self.report(Gone(key=str(event.key), reason=event.reason, expired=event.expired))

    def report(self, gone: Gone) -> None:
        self.gone.append((gone, time.monotonic()))
        self._changed.set()
        self._changed = anyio.Event()

    # -- the server's view (PeerHub here; a subclass for adapters not built on the seam) ---

    def count(self) -> int:
        assert self.hub is not None
        return len(self.hub)

    def tracked(self, peer: str) -> bool:
        assert self.hub is not None
        return peer in self.hub

    def episode(self, peer: str) -> object | None:
        """The current tracking episode of ``peer`` (compared by identity)."""
        assert self.hub is not None
        return self.hub.session(peer)

    def refusals(self) -> int:
        assert self.hub is not None
        return sum(self.hub.refused.values())

    def require_refusals(self) -> None:
        """Skip where the adapter's bad-input contract is not the seam's (see SocketIOHarness)."""

    def gone_of(self, peer: str) -> list[Gone]:
        return [event for event, _ in self.gone if event.key == peer]

    async def wait_gone(self, peer: str, count: int = 1, within: float = 5.0) -> list[Gone]:
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

    async def connect(
        self, peer: str, *, beat_every: float | None = TIMEOUT / 4, within: float = 10.0
    ) -> Client:
        client = self.client(peer)
        await client.start(self.task_group, within=within)
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
        marker = await self.connect(
            f"marker-{len(self.gone)}", beat_every=None, within=self.departure_within
        )
        await marker.close()
        await self.wait_gone(marker.peer, within=self.departure_within)
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


class SocketIOHarness(Harness):
    """The Socket.IO adapter is not built on the seam: its own view of peers."""

    #: Measured: ~50 departures/s with 1,000 peers (each one a peer_gone to the room).
    departure_within = 60.0

    def __init__(self, adapter: Any, address: tuple[str, int], tg: Any) -> None:
        super().__init__("socketio", None, address, tg)
        self.adapter = adapter
        adapter.on_gone(self._on_socketio_gone)

    def _on_socketio_gone(self, peer: object, reason: str) -> None:
        self.report(Gone(key=str(peer), reason=reason, expired=reason == "heartbeat timeout"))

    def count(self) -> int:
        return len(self.adapter)

    def tracked(self, peer: str) -> bool:
        return peer in self.adapter.peers()

    def episode(self, peer: str) -> object | None:
        for state in list(self.adapter._peers.values()):
            if state.id == peer:
                found: object = state
                return found
        return None

    def refusals(self) -> int:
        stats = self.adapter.stats
        return int(stats.spoofed + stats.unknown_peer + stats.beats_limited)

    def require_refusals(self) -> None:
        pytest.skip(
            "Socket.IO: engine.io parses the frames, and the adapter logs and drops bad events "
            "rather than closing the connection; covered by tests/socketio/test_bad_input.py"
        )


@asynccontextmanager
async def _socketio(peer_timeout: float) -> AsyncIterator[Harness]:
    """The Socket.IO transport: python-socketio + SocketIOAdapter under uvicorn."""
    import socketio
    from heartbeat_monitor_socketio import SocketIOAdapter, SocketIOServer

    def identify(sid: str, environ: object, auth: object) -> object:
        return auth.get("peer") if isinstance(auth, dict) else None

    if peer_timeout > TIMEOUT:
        # The crowd test: a Socket.IO handshake (HTTP upgrade, engine.io open, namespace
        # connect, room join) costs several times a plain websocket's, and 1,000 of them
        # on two shared cores hold up beats for longer than 1.5 s.
        peer_timeout *= 2
    sio = socketio.AsyncServer(async_mode="asgi")
    adapter = SocketIOAdapter(
        sio,
        interval=peer_timeout / 2,
        misses=2,
        resolution=RESOLUTION,
        identify=identify,
        room="peers",
    )
    server = SocketIOServer(adapter, host="127.0.0.1", port=0)
    async with server, anyio.create_task_group() as task_group:
        harness = SocketIOHarness(adapter, (server.host, server.port), task_group)
        harness.timeout = peer_timeout
        yield harness
        task_group.cancel_scope.cancel()
        with anyio.CancelScope(shield=True):
            for client in harness.clients:
                await client.abort()


@pytest.fixture(params=[*sorted(TRANSPORTS), "socketio"])
async def harness(request: pytest.FixtureRequest, peer_timeout: float) -> AsyncIterator[Harness]:
    name: str = request.param
    if name == "socketio":
        async with _socketio(peer_timeout) as socketio_harness:
            yield socketio_harness
        return
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
