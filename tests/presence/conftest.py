"""Presence end to end: a real python-socketio server under uvicorn, real clients on loopback.

``serve`` (a fixture) starts ``SocketIOAdapter`` + ``SocketIOServer`` with presence
options and returns a :class:`Live`; ``await live.client(...)`` connects a
python-socketio ``AsyncClient`` that keeps its presence list (:class:`View`, the
rules of ``static/presence.js``) and every diff it got. Every wait is bounded.
The server records the clock time of each flush that told anything (from its
``on_join`` / ``on_leave`` callbacks, which run at the flush).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable, Mapping
from typing import Any

import anyio
import pytest
import socketio

from heartbeat_monitor import Audience, PeerJoined, PeerLeft
from heartbeat_monitor_socketio import HeartbeatClient, SocketIOAdapter, SocketIOServer

from ._view import View, server_view

ROOM = "peers"


@pytest.fixture
def anyio_backend() -> str:
    """python-socketio runs on asyncio only."""
    return "asyncio"


class Client:
    """A python-socketio client that keeps its presence list and beats."""

    def __init__(self, url: str, interval: float) -> None:
        self.sio = socketio.AsyncClient(reconnection=False, handle_sigint=False)
        self.url = url
        self.view = View(ROOM)
        #: (seq, arrival monotonic time) of each diff received.
        self.diffs: list[tuple[int, float]] = []
        self.heartbeat = HeartbeatClient(self.sio, interval)
        self._changed = anyio.Event()
        self.sio.on("presence_state", self._state)
        self.sio.on("presence_diff", self._diff)

    def _state(self, message: dict[str, Any]) -> None:
        self.view.feed("presence_state", message)
        self._poke()

    def _diff(self, message: dict[str, Any]) -> None:
        self.diffs.append((message["seq"], time.monotonic()))
        self.view.feed("presence_diff", message)
        self._poke()

    def _poke(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    @property
    def sid(self) -> str:
        sid = self.sio.get_sid("/")
        assert sid is not None
        return str(sid)

    async def wait_for(self, check: Callable[[View], bool], within: float = 10.0) -> View:
        """Wait (bounded) until ``check(view)`` holds, re-checked on each message."""
        with anyio.fail_after(within):
            while not check(self.view):
                await self._changed.wait()
        return self.view

    async def connect(self, auth: Any = None) -> Client:
        await self.sio.connect(self.url, auth=auth, transports=["websocket"], wait_timeout=10)
        self.heartbeat.start()
        return self

    async def close(self) -> None:
        await self.heartbeat.stop()
        with contextlib.suppress(Exception):
            await self.sio.disconnect()


class Live:
    def __init__(self, server: SocketIOServer) -> None:
        self.server = server
        self.adapter: SocketIOAdapter = server.adapter
        self.hub = self.adapter.hub
        self.url = server.url
        self.clients: list[Client] = []
        #: Server clock time of every join and leave told, with the event.
        self.told: list[tuple[float, PeerJoined | PeerLeft]] = []
        clock = self.hub.monitor.clock
        self.hub.on_join(lambda e: self.told.append((clock.now(), e)))
        self.hub.on_leave(lambda e: self.told.append((clock.now(), e)))
        #: (server clock time, room, seq) of every presence_diff the hub told.
        self.diffs: list[tuple[float, Hashable, int]] = []
        self.hub.audience = Recording(self.hub.audience, self.diffs, clock.now)

    async def client(self, auth: Any = None) -> Client:
        client = Client(self.url, self.adapter.interval)
        self.clients.append(client)
        return await client.connect(auth)

    def presence(self) -> dict[str, list[Any]]:
        return server_view(self.hub.presence(ROOM))

    def flushes(self, room: Hashable = ROOM) -> list[float]:
        """The server times at which ``room`` was told a diff."""
        return [at for at, name, _ in self.diffs if name == room]

    async def settled(self, *clients: Client, within: float = 10.0) -> None:
        """Wait until each client's list equals the server's (nothing left to flush)."""
        with anyio.fail_after(within):
            while True:
                expected = self.presence()
                if not self.hub.roster.pending and all(c.view.peers == expected for c in clients):
                    return
                await anyio.sleep(0.01)


class Recording:
    """The adapter's audience, noting each ``presence_diff`` it is asked to tell."""

    def __init__(
        self, audience: Audience, diffs: list[tuple[float, Hashable, int]], now: Callable[[], float]
    ) -> None:
        self._audience = audience
        self._diffs = diffs
        self._now = now

    def tell(self, event: str, payload: Mapping[str, object], **where: Any) -> None:
        if event == "presence_diff":
            seq = payload["seq"]
            assert isinstance(seq, int)
            self._diffs.append((self._now(), payload["room"], seq))
        self._audience.tell(event, payload, **where)

    def send(self, event: str, payload: Mapping[str, object], connections: Any) -> None:
        self._audience.send(event, payload, connections)


Serve = Callable[..., Awaitable[Live]]


@pytest.fixture
async def serve() -> AsyncIterator[Serve]:
    async with contextlib.AsyncExitStack() as stack:
        lives: list[Live] = []

        async def start(**options: Any) -> Live:
            options.setdefault("interval", 1.0)
            options.setdefault("room", ROOM)
            options.setdefault("min_beat_gap", 0.0)
            sio = socketio.AsyncServer(async_mode="asgi")
            server = SocketIOServer(SocketIOAdapter(sio, **options))
            await stack.enter_async_context(server)
            live = Live(server)
            lives.append(live)
            return live

        try:
            yield start
        finally:
            with anyio.CancelScope(shield=True):
                for live in lives:
                    for client in live.clients:
                        await client.close()


def peers_of(view: View) -> set[Hashable]:
    return set(view.peers or ())
