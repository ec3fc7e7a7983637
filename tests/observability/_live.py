"""A live Socket.IO server with the status app mounted beside python-socketio, and real clients."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import anyio
import socketio

from heartbeat_monitor import Expired, Metrics
from heartbeat_monitor_socketio import SocketIOAdapter, SocketIOServer
from tests.socketio.conftest import Changes, Client
from tests.transports._util import until


@dataclass
class Live:
    server: SocketIOServer
    adapter: SocketIOAdapter
    metrics: Metrics
    #: Every departure (``PeerGone``), awaitable; every expiry the monitor declared.
    gone: Changes
    expired: list[Expired]
    clients: list[Client] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.server.url

    async def join(self, count: int) -> list[Client]:
        """``count`` more python-socketio clients, beating, once the hub has them all."""
        joined = [Client(self.url, "/", self.adapter.interval) for _ in range(count)]
        self.clients += joined
        for client in joined:
            await client.connect()
            client.heartbeat.start()
        await until(lambda: all(self.adapter.peer_of(c.sid) is not None for c in joined))
        return joined


@asynccontextmanager
async def serving(
    peers: int, *, interval: float, misses: float = 2, sample_interval: float = 0.25
) -> AsyncIterator[Live]:
    """Serve Socket.IO with ``Metrics(adapter.hub).app()`` mounted; ``peers`` clients beating."""
    sio = socketio.AsyncServer(async_mode="asgi")
    gone = Changes()
    adapter = SocketIOAdapter(
        sio, interval=interval, misses=misses, room="peers", on_gone=gone.append
    )
    expired: list[Expired] = []
    adapter.monitor.on_expire(expired.append)
    metrics = Metrics(adapter.hub, sample_interval=sample_interval)
    server = SocketIOServer(adapter, other_asgi_app=metrics.app())
    live = Live(server, adapter, metrics, gone, expired)
    try:
        async with server, metrics:
            await live.join(peers)
            yield live
    finally:
        with anyio.CancelScope(shield=True):
            for client in live.clients:
                await client.close()
