"""The WebSocket server: websockets' asyncio implementation, one task per connection.

Each message (text or binary) is one JSON object; the first must be the hello.
The server closes an expired peer with :data:`CLOSE_EXPIRED` (4000) and a
refused one with :data:`CLOSE_REFUSED` (4001); the close reason is the same
text as the :class:`~heartbeat_monitor.PeerGone` reason (cut to the 123 bytes a
close frame allows).

websockets' own keepalive (``ping_interval``/``ping_timeout``) is independent:
its pongs are answered by the client *library*, so they prove the TCP path and
the client's event loop are alive, not that the application still beats. They
do not count as beats. If a ping times out first, websockets closes with 1011
and the episode ends as ``connection lost: 1011 keepalive ping timeout``;
either way there is exactly one ``PeerGone``. Keep ``ping_interval`` at least
the heartbeat timeout (the default here: off) so that heartbeats decide.

Idle connections: the opening handshake must end within ``hello_timeout`` (as
websockets' ``open_timeout``) and the hello come ``hello_timeout`` after it, so
a connection that says nothing holds its descriptor at most twice that. Out of
file descriptors, asyncio's accept loop (which websockets uses) retries every
second; its error is logged as ``heartbeat_monitor.websocket.accept_failed`` at
most every 10 s instead of a traceback per failed accept.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from functools import partial
from typing import Any, ClassVar, final

import anyio
import anyio.abc
import structlog
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.frames import Close

from heartbeat_monitor import (
    MAX_MESSAGE_SIZE,
    AcceptBackoff,
    ConnectionEnded,
    PeerHub,
    QueuedConnection,
    Reason,
    serve_connection,
)

__all__ = ("CLOSE_EXPIRED", "CLOSE_REFUSED", "WebSocketTransport")

#: Close code for a peer that went silent past its deadline.
CLOSE_EXPIRED = 4000
#: Close code for a peer whose input was refused (malformed, spoofed, flood, id in use).
CLOSE_REFUSED = 4001
#: Close codes websockets itself sends for bad frames: they are refusals too.
_BAD_INPUT = {1002: "malformed", 1007: "malformed", 1009: "oversized"}

_logger = structlog.get_logger("heartbeat_monitor")


def _close_frame_reason(reason: str) -> str:
    data = reason.encode()[:123]
    return data.decode(errors="ignore")


def _close_code(reason: str) -> int:
    if reason.startswith(Reason.HEARTBEAT_TIMEOUT):
        return CLOSE_EXPIRED
    if reason.startswith("refused"):
        return CLOSE_REFUSED
    return 1000


@final
class _WsConnection(QueuedConnection):
    transport: ClassVar[str] = "websocket"

    def __init__(self, websocket: ServerConnection, close_timeout: float) -> None:
        super().__init__(close_timeout=close_timeout)
        self._websocket = websocket

    async def _write(self, batch: list[str]) -> None:
        for data in batch:
            await self._websocket.send(data)

    async def _end(self, reason: str) -> None:
        if self.abandoned:  # the peer does not read: reset, dropping what it never took
            transport = self._websocket.transport
            sock = transport.get_extra_info("socket")
            if sock is not None:
                with contextlib.suppress(OSError):
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            transport.abort()
            return
        await self._websocket.close(_close_code(reason), _close_frame_reason(reason))


def _ended(exc: ConnectionClosed, websocket: ServerConnection) -> ConnectionEnded:
    """Why a connection ended: bad input, a clean close by the peer, or a lost connection."""
    sent: Close | None = exc.sent
    rcvd: Close | None = exc.rcvd
    if sent is not None and sent.code in _BAD_INPUT and (rcvd is None or rcvd.code == sent.code):
        return ConnectionEnded(f"{_BAD_INPUT[sent.code]}: {sent.code} {sent.reason}", bad=True)
    if rcvd is None:
        if sent is not None:  # e.g. 1011 keepalive ping timeout
            detail = f"{sent.code} {sent.reason}".rstrip()
            return ConnectionEnded(Reason.TRANSPORT_ERROR, detail=detail)
        return ConnectionEnded(Reason.TRANSPORT_CLOSE, detail="no close frame")
    return ConnectionEnded(Reason.CLIENT_DISCONNECT, detail=f"{rcvd.code} {rcvd.reason}".rstrip())


@final
class WebSocketTransport:
    """A WebSocket heartbeat server on ``host:port`` (port 0: any free port).

    ``ping_interval``/``ping_timeout`` are websockets' keepalive (``None``: off);
    extra keyword arguments go to :func:`websockets.asyncio.server.serve`.
    """

    name: ClassVar[str] = "websocket"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_size: int = MAX_MESSAGE_SIZE,
        hello_timeout: float = 5.0,
        close_timeout: float = 1.0,
        ping_interval: float | None = None,
        ping_timeout: float | None = None,
        **serve_options: object,
    ) -> None:
        self.host = host
        self.port = port
        self.max_size = max_size
        self.hello_timeout = hello_timeout
        self.close_timeout = close_timeout
        self.ping_interval = ping_interval
        self.ping_timeout = ping_timeout
        self.serve_options = serve_options

    async def serve(
        self,
        hub: PeerHub,
        *,
        task_status: anyio.abc.TaskStatus[tuple[str, int]] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        options: dict[str, Any] = {"open_timeout": self.hello_timeout, **self.serve_options}
        async with serve(
            partial(self._handle, hub),
            self.host,
            self.port,
            max_size=self.max_size,
            ping_interval=self.ping_interval,
            ping_timeout=self.ping_timeout,
            close_timeout=self.close_timeout,
            compression=None,
            **options,
        ) as server:
            host, port = next(iter(server.sockets)).getsockname()[:2]
            _logger.info("heartbeat_monitor.websocket.listening", host=host, port=port)
            task_status.started((str(host), int(port)))
            with AcceptBackoff("websocket").asyncio_servers():  # EMFILE: paced, not a flood
                await server.serve_forever()

    async def _handle(self, hub: PeerHub, websocket: ServerConnection) -> None:
        async def receive() -> bytes | str:
            try:
                return await websocket.recv()
            except ConnectionClosed as exc:
                raise _ended(exc, websocket) from None

        try:
            await serve_connection(
                hub,
                _WsConnection(websocket, self.close_timeout),
                receive,
                hello_timeout=self.hello_timeout,
                max_size=self.max_size,
                address=str(websocket.remote_address),
            )
        except Exception:  # never let one connection take the server down
            _logger.exception("heartbeat_monitor.websocket.connection_failed")
