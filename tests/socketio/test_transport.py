"""Socket.IO is found by name like every transport: the ``socketio`` entry point."""

from __future__ import annotations

from importlib.metadata import entry_points

import anyio
import pytest

from heartbeat_monitor import ENTRY_POINT_GROUP, HeartbeatMonitor, PeerHub
from heartbeat_monitor._transports import load_transport
from heartbeat_monitor_socketio import Reason, SocketIOTransport

from .conftest import Changes, Client

pytestmark = pytest.mark.anyio


def test_every_transport_is_an_entry_point_that_loads() -> None:
    entries = {entry.name: entry for entry in entry_points(group=ENTRY_POINT_GROUP)}
    assert {"socketio", "websocket", "tcp", "udp"} <= set(entries)
    for name, entry in entries.items():
        transport = entry.load()
        assert transport.name == name
        assert callable(transport.serve)
    assert load_transport("socketio") is SocketIOTransport


async def test_socketio_transport_serves_a_hub_monitor() -> None:
    """``serve(hub)`` as for the other transports: the adapter runs on ``hub.monitor``."""
    gone = Changes()
    transport = SocketIOTransport("127.0.0.1", 0, on_gone=lambda e: gone.append((e.peer, e.reason)))
    clients: list[Client] = []
    try:
        async with HeartbeatMonitor(0.4, resolution=0.04) as monitor:
            hub = PeerHub(monitor, notify="peer_gone")
            async with anyio.create_task_group() as task_group:
                host, port = await task_group.start(transport.serve, hub)
                adapter = transport.adapter
                assert adapter.monitor is monitor
                assert adapter.interval == pytest.approx(0.2)
                for _ in range(2):
                    clients.append(Client(f"http://{host}:{port}", "/", adapter.interval))
                    await clients[-1].connect()
                watcher, silent = clients
                watcher.heartbeat.start()
                await gone.wait(1)
                assert gone.items == [(silent.sid, Reason.HEARTBEAT_TIMEOUT)]
                told = await watcher.peer_gone.wait(1)
                assert told == [{"peer": silent.sid, "reason": Reason.HEARTBEAT_TIMEOUT}]
                task_group.cancel_scope.cancel()  # how a transport is stopped
            assert gone.items[1:] == [(watcher.sid, Reason.SERVER_SHUTDOWN)]
            assert transport.adapter is None
    finally:
        with anyio.CancelScope(shield=True):
            for client in clients:
                await client.close()
