"""One fixture per transport: a real server on a free 127.0.0.1 port, and real clients.

Adding a transport to the conformance suite = adding its name to ``TRANSPORTS``
with a server factory, its entry in ``REFUSAL``, and a
:class:`~tests.conformance._clients.Client` subclass. Every test in
``test_conformance.py`` then runs against it.
"""

from __future__ import annotations

import hmac
import sys
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Literal

import anyio
import anyio.abc
import pytest
from anyio.streams.buffered import BufferedByteReceiveStream

from heartbeat_monitor import HeartbeatMonitor, OverloadGuard, PeerGone, PeerHub, Transport

from ._clients import CLIENTS, UDP_KEY, Client, socketio_token

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

#: What a transport does with the sender of bad input, by kind (the reason's prefix):
#: ``"close"`` ends its episode with ``refused: <reason>`` (one gone, its connection
#: closed); ``"drop"`` drops the message and leaves the sender as it was. Either way
#: the refusal is logged (``heartbeat_monitor.<transport>.peer_refused``) and counted,
#: and no other peer is touched.
Refusal = Literal["close", "drop"]
KINDS = ("malformed", "oversized", "wrong type", "spoofed", "flood")
REFUSAL: dict[str, Mapping[str, Refusal]] = {
    "websocket": dict.fromkeys(KINDS, "close"),
    "tcp": dict.fromkeys(KINDS, "close"),
    # A datagram cannot be trusted to name its sender (no reflection): bad ones are
    # dropped; a flood of well-signed beats ends that peer's episode.
    "udp": {**dict.fromkeys(KINDS, "drop"), "flood": "close"},
    # A frame python-socketio cannot take closes that engine.io connection (as the
    # JavaScript server does on a parse error); a forged "connect"/"disconnect" event is
    # dropped (the client cannot name another peer: its id is proven at connect).
    "socketio": {**dict.fromkeys(KINDS, "close"), "spoofed": "drop"},
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
        self.refusal = REFUSAL[name]
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
        return self.hub.episode(peer)

    def refusals(self) -> int:
        assert self.hub is not None
        return sum(self.hub.refused.values())

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


#: The Socket.IO server's heartbeats within one ``min_beat_gap`` beyond which it is a flood.


def _monitor(peer_timeout: float) -> HeartbeatMonitor:
    """The suite checks the lifecycle on every transport; load shedding (which a storm of
    1,000 handshakes on a busy machine can trigger, refusing some of them by design) has
    its own tests in tests/overload, so it is off here."""
    overload = OverloadGuard(peer_timeout, shed_lag=None)
    return HeartbeatMonitor(peer_timeout, resolution=RESOLUTION, overload=overload)


@asynccontextmanager
async def _socketio(peer_timeout: float) -> AsyncIterator[Harness]:
    """The Socket.IO transport, by its entry-point class: python-socketio + SocketIOAdapter
    under uvicorn, on a hub like every other transport.

    Its peers connect in identity mode: ``auth = {"peer": id, "token": ...}``,
    checked by ``identify`` (a connection that cannot prove its id is refused).
    The seam's bad inputs have these Socket.IO equivalents
    (``SocketIOClient.bad_input``), all sent on an open connection: a binary
    frame that is no Socket.IO packet (``malformed``); a 10 KB heartbeat over
    ``max_message_size`` (``oversized``); ``42{"type":"beat"}`` and ``42[5]``
    (``wrong type``); and, since a client cannot name another peer, a forged
    lifecycle event ``42["disconnect",{"peer":"victim"}]`` (``spoofed``; dropped).
    """
    import socketio

    from heartbeat_monitor_socketio import SocketIOTransport

    def identify(sid: str, environ: object, auth: object) -> object:
        peer = auth.get("peer") if isinstance(auth, dict) else None
        token = auth.get("token") if isinstance(auth, dict) else None
        if not (isinstance(peer, str) and isinstance(token, str)) or not hmac.compare_digest(
            token, socketio_token(peer)
        ):
            raise socketio.exceptions.ConnectionRefusedError("bad credentials")
        return peer

    if peer_timeout > TIMEOUT:
        # The crowd test: a Socket.IO handshake (HTTP upgrade, engine.io open, namespace
        # connect, room join) costs several times a plain websocket's, and 1,000 of them
        # on two shared cores hold up beats for longer than 1.5 s.
        peer_timeout *= 2
    transport = SocketIOTransport(
        "127.0.0.1",
        0,
        misses=2,
        identify=identify,
        room="peers",
        max_message_size=4096,
    )
    async with (
        _monitor(peer_timeout) as monitor,
        anyio.create_task_group() as task_group,
    ):
        hub = PeerHub(monitor, notify="peer_gone")
        address = await task_group.start(transport.serve, hub)
        harness = Harness("socketio", hub, address, task_group)
        #: Measured: a Socket.IO handshake costs several times a plain websocket's.
        harness.departure_within = 60.0
        harness.timeout = peer_timeout
        yield harness
        # Clients first: the server's shutdown then has no connection to wait for.
        with anyio.CancelScope(shield=True):
            for client in harness.clients:
                await client.abort()
        task_group.cancel_scope.cancel()


@pytest.fixture(params=[*sorted(TRANSPORTS), "socketio"])
async def harness(request: pytest.FixtureRequest, peer_timeout: float) -> AsyncIterator[Harness]:
    name: str = request.param
    if name == "socketio":
        async with _socketio(peer_timeout) as socketio_harness:
            yield socketio_harness
        return
    transport = TRANSPORTS[name]()
    async with _monitor(peer_timeout) as monitor:
        hub = PeerHub(monitor, notify="peer_gone")
        async with anyio.create_task_group() as task_group:
            address = await task_group.start(transport.serve, hub)
            harness = Harness(name, hub, address, task_group)
            yield harness
            task_group.cancel_scope.cancel()
        for client in harness.clients:
            await client.abort()
