"""Fixtures for the Socket.IO adapter: a real server and real clients on loopback.

How to test it end to end
-------------------------
``start_server`` (a fixture) starts a real python-socketio ``AsyncServer`` with a
:class:`SocketIOAdapter` under real uvicorn on a free 127.0.0.1 port and returns
a :class:`Live` (``live.url``, ``live.sio``, ``live.adapter``, and ``live.gone``:
every ``(peer, reason)`` the adapter's ``on_gone`` saw, with ``await
live.wait_gone(n)``). Clients are real: ``await live.client()`` connects a
python-socketio ``AsyncClient`` that records the ``peer_gone`` events it gets;
node clients run ``tests/js/client.mjs``. Every wait is bounded
(``anyio.fail_after``); nothing sleeps and hopes. Everything is stopped at the
end of the test, server shutdown included.

    async def test_x(start_server):
        live = await start_server(interval=0.2, misses=2)
        a = await live.client(beat=True)
        ...
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from typing import Any

import anyio
import pytest
import socketio

from heartbeat_monitor_socketio import HeartbeatClient, SocketIOAdapter, SocketIOServer

#: The bound added to ``interval * misses + resolution`` for detection on loopback.
SLACK = 1.0


@pytest.fixture
def anyio_backend() -> str:
    """python-socketio runs on asyncio only."""
    return "asyncio"


class Changes:
    """A list that can be awaited until it holds ``n`` items (bounded)."""

    def __init__(self) -> None:
        self.items: list[Any] = []
        self._changed = anyio.Event()

    def append(self, item: Any) -> None:
        self.items.append(item)
        self._changed.set()
        self._changed = anyio.Event()

    async def wait(self, n: int, within: float = 5.0) -> list[Any]:
        with anyio.fail_after(within):
            while len(self.items) < n:
                await self._changed.wait()
        return self.items

    async def wait_for(self, item: Any, within: float = 5.0) -> list[Any]:
        with anyio.fail_after(within):
            while item not in self.items:
                await self._changed.wait()
        return self.items

    def __len__(self) -> int:
        return len(self.items)


class Client:
    """A python-socketio AsyncClient that records ``peer_gone`` and its own disconnect."""

    def __init__(self, url: str, namespace: str, interval: float) -> None:
        self.sio = socketio.AsyncClient(reconnection=False, handle_sigint=False)
        self.url = url
        self.namespace = namespace
        self.peer_gone = Changes()
        self.disconnects = Changes()
        self.heartbeat = HeartbeatClient(self.sio, interval, namespace=namespace)
        self._sid: str | None = None
        self.sio.on("peer_gone", self.peer_gone.append, namespace=namespace)
        self.sio.on("disconnect", self.disconnects.append, namespace=namespace)

    @property
    def sid(self) -> str:
        """The sid this client had when it connected (what the server calls the peer)."""
        assert self._sid is not None
        return self._sid

    async def connect(self, *, auth: Any = None, transports: list[str] | None = None) -> None:
        await self.sio.connect(
            self.url,
            namespaces=[self.namespace],
            auth=auth,
            transports=transports or ["websocket"],
            wait_timeout=5,
        )
        self._sid = self.sio.get_sid(self.namespace)

    async def close(self) -> None:
        await self.heartbeat.stop()
        with contextlib.suppress(Exception):
            await self.sio.disconnect()


class Live:
    def __init__(self, server: SocketIOServer, gone: Changes) -> None:
        self.server = server
        self.adapter: SocketIOAdapter = server.adapter
        self.sio: socketio.AsyncServer = server.adapter.sio
        self.url = server.url
        self.gone = gone
        self.clients: list[Client] = []

    async def wait_gone(self, n: int, within: float = 5.0) -> list[tuple[Hashable, str]]:
        return await self.gone.wait(n, within)

    async def client(
        self,
        *,
        beat: bool = True,
        auth: Any = None,
        transports: list[str] | None = None,
        namespace: str | None = None,
    ) -> Client:
        client = Client(self.url, namespace or self.adapter.namespace, self.adapter.interval)
        self.clients.append(client)
        await client.connect(auth=auth, transports=transports)
        if beat:
            client.heartbeat.start()
        return client


StartServer = Callable[..., Awaitable[Live]]


@pytest.fixture
async def start_server() -> AsyncIterator[StartServer]:
    """Start uvicorn + python-socketio + SocketIOAdapter on a free loopback port (see module doc).

    Keyword arguments go to :class:`SocketIOAdapter`; ``sio_options`` to
    ``socketio.AsyncServer``; ``setup(sio)`` may register the user's handlers first.
    """
    async with contextlib.AsyncExitStack() as stack:
        lives: list[Live] = []

        async def start(
            *,
            sio_options: dict[str, Any] | None = None,
            setup: Callable[[socketio.AsyncServer], object] | None = None,
            **adapter_options: Any,
        ) -> Live:
            sio = socketio.AsyncServer(async_mode="asgi", **(sio_options or {}))
            if setup is not None:
                setup(sio)
            gone = Changes()
            adapter_options.setdefault("room", "peers")
            adapter_options.setdefault("notify", "peer_gone")  # what these tests listen for
            adapter = SocketIOAdapter(
                sio,
                on_gone=lambda event: gone.append((event.peer, event.reason)),
                **adapter_options,
            )
            server = SocketIOServer(adapter)
            await stack.enter_async_context(server)
            live = Live(server, gone)
            lives.append(live)
            return live

        try:
            yield start
        finally:
            with anyio.CancelScope(shield=True):
                for live in lives:
                    for client in live.clients:
                        await client.close()


class RawClient:
    """Engine.IO/Socket.IO v4 spoken by hand over a websocket: for abrupt and malformed clients."""

    def __init__(self, ws: Any) -> None:
        self.ws = ws
        self.sid: str | None = None
        self.received: list[str] = []

    @classmethod
    async def open(cls, url: str) -> RawClient:
        from websockets.asyncio.client import connect

        ws_url = url.replace("http://", "ws://") + "/socket.io/?EIO=4&transport=websocket"
        ws = await connect(ws_url)
        client = cls(ws)
        opening = await client.recv()
        assert opening.startswith("0{"), opening
        return client

    async def recv(self, within: float = 5.0) -> str:
        with anyio.fail_after(within):
            message = await self.ws.recv()
        text = message if isinstance(message, str) else message.decode("latin-1")
        if text == "2":  # engine.io ping: answer it, keep reading
            await self.ws.send("3")
            return await self.recv(within)
        self.received.append(text)
        return text

    async def connect(self, namespace: str = "/", auth: Any = None) -> str:
        import json

        prefix = "40" if namespace == "/" else f"40{namespace},"
        await self.ws.send(prefix + ("" if auth is None else json.dumps(auth)))
        reply = await self.recv()
        assert reply.startswith(prefix.rstrip(",")), reply
        self.sid = json.loads(reply[reply.index("{") :])["sid"]
        return self.sid

    async def send(self, text: str | bytes) -> None:
        await self.ws.send(text)

    def abort(self) -> None:
        """Drop the TCP connection: no close frame, no Socket.IO goodbye."""
        self.ws.transport.abort()

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await self.ws.close()


async def polling_session(http: Any, url: str) -> tuple[str, str, str]:
    """Open a long-polling session at ``url`` with aiohttp ``http`` and connect Socket.IO:
    ``(polling url, engine.io sid, Socket.IO sid)``."""
    base = url + "/socket.io/?EIO=4&transport=polling"
    async with http.get(base) as response:
        eio_sid = json.loads((await response.text())[1:])["sid"]
    polling = f"{base}&sid={eio_sid}"
    async with http.post(polling, data="40") as response:
        assert response.status == 200
    async with http.get(polling) as response:  # the connect ack: 40{"sid": ...}
        sid = json.loads((await response.text())[2:])["sid"]
    return polling, eio_sid, sid
