"""The ``socketio`` entry point: a python-socketio server in the seam's ``Transport`` shape."""

from __future__ import annotations

from typing import Any, ClassVar, final

import anyio
import anyio.abc
import socketio

from heartbeat_monitor import PeerHub

from ._adapter import SocketIOAdapter
from ._server import SocketIOServer

__all__ = ("SocketIOTransport",)


@final
class SocketIOTransport:
    """Serve a python-socketio server under uvicorn on a hub, like every other transport.

    ``await SocketIOTransport(host, port).serve(hub)`` serves a new
    ``socketio.AsyncServer`` (or ``sio``) with a :class:`SocketIOAdapter` on
    ``hub``: its peers are the hub's, its departures the hub's ``PeerGone``, its
    refusals counted in ``hub.refused``. The heartbeat interval is the
    monitor's timeout / ``misses``. ``adapter_options`` go to the adapter
    (``room``, ``identify``, ``max_message_size``, ...).
    """

    name: ClassVar[str] = "socketio"

    __slots__ = ("_adapter_options", "_sio", "adapter", "host", "misses", "port")

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 8000,
        *,
        misses: float = 2,
        sio: socketio.AsyncServer | None = None,
        **adapter_options: Any,
    ) -> None:
        self.host = host
        self.port = port
        self.misses = misses
        self._sio = sio
        self._adapter_options = adapter_options
        self.adapter: Any = None

    async def serve(
        self,
        hub: PeerHub,
        *,
        task_status: anyio.abc.TaskStatus[tuple[str, int]] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Serve until cancelled; ``started`` with the bound (host, port)."""
        sio = self._sio if self._sio is not None else socketio.AsyncServer(async_mode="asgi")
        options = {"engineio": "fix", "room": "peers", **self._adapter_options}
        interval = hub.monitor.tracker.timeout / self.misses
        adapter = SocketIOAdapter(sio, hub=hub, interval=interval, misses=self.misses, **options)
        self.adapter = adapter
        server = SocketIOServer(adapter, host=self.host, port=self.port)

        async def run(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            # Shielded: cancelling serve() stops uvicorn (below), which then shuts down in
            # full: every peer ends with "server shutdown" and the sockets are closed.
            with anyio.CancelScope(shield=True):
                await server.serve(task_status=task_status)

        try:
            async with anyio.create_task_group() as task_group:
                await task_group.start(run)
                task_status.started((server.host, server.port))
                try:
                    await anyio.sleep_forever()
                finally:
                    server.stop()  # bounded by uvicorn's graceful shutdown timeout
        finally:
            self.adapter = None
