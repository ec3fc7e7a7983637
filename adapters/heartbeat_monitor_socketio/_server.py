"""A ready-made server: python-socketio under uvicorn (ASGI, path ``/socket.io/``) with the adapter.

Used by ``heartbeat-monitor serve`` and ``demo``, and by the tests (real
connections on loopback). ``async with SocketIOServer(adapter) as server:``
listens on ``server.url`` until the block ends; ``await server.serve()`` runs
until :meth:`stop` (or Ctrl-C when ``signals=True``). On the way out every
peer is ended with the reason ``"server shutdown"`` before uvicorn closes the
connections.

While the server is far behind (shedding, and the lag past four times
``shed_lag``), a request that would open a new engine.io session is answered
``503 server overloaded`` before engine.io does any work for it: refusing at the
Socket.IO level (a ``connect_error``, the adapter's way) costs most of a
handshake, which such a server cannot spare (docs/overload.md).

The age of each websocket message when engine.io takes it is reported to the
overload guard (``OverloadGuard.observe_wait``), whose stretch then covers it:
uvicorn's websocket protocol stops reading a connection after each message until
the application has taken it, and python-engineio takes one every few passes of
the event loop, so a beat can wait, unread in the kernel behind its connection's
previous message and then in uvicorn's queue, longer than the guard's probe
measures. Reading still pauses after each message: it keeps one connection's
flood from taking more than its turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import signal
import socket
import termios
from collections import deque
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import Any, Self, final

import anyio
import anyio.abc
import socketio
import uvicorn

from heartbeat_monitor import OVERLOADED, AcceptBackoff, OverloadGuard

from ._adapter import SocketIOAdapter
from ._frames import HeartbeatProtocol
from ._limits import IdleClosingHTTP

__all__ = ("SocketIOServer",)

#: Past this many times shed_lag of lag, new sessions are refused with HTTP 503.
_HARD_SHED = 4.0
#: What uvicorn's websocket implementation logs after a 503 to an upgrade.
_UNFINISHED = "ASGI callable returned without completing handshake."


#: A message read behind this many of its own connection's still waiting does not count: a
#: flood's backlog is its own doing (reading resumes only once the queue is empty, so the
#: first messages of each read count, a beat behind a pong included).
_OWN_QUEUE = 2


def _unread(transport: asyncio.BaseTransport) -> int:
    """Bytes waiting unread in the kernel for this connection (0 if it cannot tell)."""
    sock = transport.get_extra_info("socket")
    try:
        return int.from_bytes(fcntl.ioctl(sock.fileno(), termios.FIONREAD, bytes(4)), "little")
    except (AttributeError, OSError, ValueError):
        return 0


def _timed(
    guard: OverloadGuard, clock: Callable[[], float], base: type[HeartbeatProtocol]
) -> type[asyncio.Protocol]:
    """``base`` (the adapter's websocket protocol); each message's age when taken, to ``guard``.

    A message's age runs from when it was read off the socket, or if it waited unread
    while reading was paused, from when the pause began (the most it can have waited).
    ``receive`` is uvicorn's own (``tests/overload/test_waits.py`` pins it) plus that; a
    heartbeat the protocol takes before queueing (``beat_taken``) counts as taken then.
    """

    class Timed(base):  # type: ignore[valid-type,misc]
        read_paused: bool
        transport: asyncio.Transport

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            #: When each message now in the queue may have arrived, oldest first (None: it
            #: came behind others of its own connection's, and does not count).
            self.arrived: deque[float | None] = deque()
            self.paused_at = 0.0
            #: Set on resuming when bytes waited through the pause: when the pause began.
            self.waited_from: float | None = None
            self.chunk_at = 0.0

        def data_received(self, data: bytes) -> None:
            waited, self.waited_from = self.waited_from, None
            self.chunk_at = clock() if waited is None else waited
            super().data_received(data)

        def beat_taken(self) -> None:
            now = clock()
            guard.observe_wait(now - self.chunk_at, now)

        def send_receive_event_to_app(self) -> None:
            queued, paused = self.queue.qsize(), self.read_paused
            super().send_receive_event_to_app()
            if self.queue.qsize() > queued:  # queued (not dropped after a close)
                self.arrived.append(self.chunk_at if queued < _OWN_QUEUE else None)
            if self.read_paused and not paused:
                self.paused_at = clock()

        async def receive(self) -> Any:
            message = await self.queue.get()
            if self.read_paused and self.queue.empty():
                if _unread(self.transport):
                    self.waited_from = self.paused_at
                self.read_paused = False
                self.transport.resume_reading()
            if message["type"] == "websocket.receive" and self.arrived:
                arrived = self.arrived.popleft()
                if arrived is not None:
                    now = clock()
                    guard.observe_wait(now - arrived, now)
            return message

    return Timed


class _Overloaded(logging.Filter):
    """ASGI: refuse a new engine.io session with 503 while the server is far behind.

    Also a filter on uvicorn's error log: uvicorn's websocket implementation logs
    "returned without completing handshake" after a 503 answer to an upgrade (it
    does not count a denial response as the end of the handshake); one such line
    per refusal it made is dropped, nothing else.
    """

    def __init__(self, app: Any, adapter: SocketIOAdapter, path: str) -> None:
        super().__init__()
        self._app = app
        self._adapter = adapter
        self._path = f"/{path}/"
        self._denied = 0

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] in ("http", "websocket") and self._far_behind(scope):
            reason = self._adapter.monitor.overload.refusal()
            if reason is not None:
                self._adapter.hub.refuse_input("socketio", reason, http=503)
                if await _refuse(scope, send):
                    self._denied += 1
                return
        await self._app(scope, receive, send)

    def filter(self, record: logging.LogRecord) -> bool:
        if self._denied and record.getMessage() == _UNFINISHED:
            self._denied -= 1
            return False
        return True

    def _far_behind(self, scope: Any) -> bool:
        guard = self._adapter.monitor.overload
        return (
            guard.shedding
            and guard.shed_lag is not None
            and guard.lag >= _HARD_SHED * guard.shed_lag
            and scope.get("path", "").startswith(self._path)
            and b"sid=" not in scope.get("query_string", b"")  # a new session, not a poll
        )


async def _refuse(scope: Any, send: Any) -> bool:
    """Answer 503; ``True`` for an upgrade denied that way (uvicorn logs it, see above)."""
    headers = [(b"content-type", b"text/plain"), (b"retry-after", b"5")]
    body = OVERLOADED.encode()
    if scope["type"] == "http":
        await send({"type": "http.response.start", "status": 503, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        return False
    if "websocket.http.response" in scope.get("extensions", {}):
        await send({"type": "websocket.http.response.start", "status": 503, "headers": headers})
        await send({"type": "websocket.http.response.body", "body": body})
        return True
    await send({"type": "websocket.close", "code": 1013, "reason": OVERLOADED})
    return False


class _Uvicorn(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, adapter: SocketIOAdapter, *, signals: bool) -> None:
        super().__init__(config)
        self._adapter = adapter
        self._signals = signals
        self.ready = anyio.Event()
        self.captured_signals: list[int] = []

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        if not self._signals:
            yield
            return
        with super().capture_signals():
            try:
                yield
            finally:
                # uvicorn re-raises the signal once serve() returns, which would end the
                # process before the callers' own cleanup (adapter, RedisCluster) runs:
                # SocketIOServer.raise_captured_signals() does it once they are done.
                self.captured_signals.extend(self._captured_signals)
                self._captured_signals.clear()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        self.ready.set()

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        sio = self._adapter.sio
        with anyio.CancelScope(shield=True):
            await self._adapter.aclose()
            # Close engine.io sockets without waiting for their queues to drain: a dead
            # long-polling client never collects its last packets.
            with anyio.move_on_after(1):
                for eio_socket in list(sio.eio.sockets.values()):
                    with contextlib.suppress(Exception):
                        await eio_socket.close(wait=False)
            await super().shutdown(sockets)
            await sio.shutdown()


@final
class SocketIOServer:
    """Serve ``adapter.sio`` under uvicorn on ``host:port`` (port 0: a free one)."""

    __slots__ = (
        "_exit",
        "_overloaded",
        "_server",
        "_socket",
        "_task_group",
        "adapter",
        "host",
        "path",
        "port",
    )

    def __init__(
        self,
        adapter: SocketIOAdapter,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        path: str = "socket.io",
        signals: bool = False,
        graceful_timeout: int = 2,
        log_level: str = "warning",
        other_asgi_app: Any = None,
    ) -> None:
        self.adapter = adapter
        self.host = host
        self.path = path.strip("/")
        app = socketio.ASGIApp(adapter.sio, other_asgi_app=other_asgi_app, socketio_path=self.path)
        self._overloaded = overloaded = _Overloaded(app, adapter, self.path)
        config = uvicorn.Config(
            overloaded,
            log_config=None,
            log_level=log_level,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=graceful_timeout,
            ws=_timed(
                adapter.monitor.overload, adapter.monitor.clock.now, adapter.websocket_protocol()
            ),
            http=IdleClosingHTTP,  # a connection that never sends a request is closed too
        )
        self._server = _Uvicorn(config, adapter, signals=signals)
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        self._socket = socket.socket(family, socket.SOCK_STREAM)
        self._socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._socket.bind((host, port))
        self.port: int = self._socket.getsockname()[1]
        self._task_group: anyio.abc.TaskGroup | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    async def serve(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Run until :meth:`stop`; ``task_status.started()`` once it accepts connections."""
        server = self._server
        async with anyio.create_task_group() as task_group:

            async def run() -> None:
                uvicorn_log = logging.getLogger("uvicorn.error")
                uvicorn_log.addFilter(self._overloaded)
                try:
                    with AcceptBackoff("socketio").asyncio_servers():  # EMFILE: paced log
                        await server.serve(sockets=[self._socket])
                finally:
                    uvicorn_log.removeFilter(self._overloaded)
                    task_group.cancel_scope.cancel()

            task_group.start_soon(run)
            await server.ready.wait()
            task_status.started()

    def raise_captured_signals(self) -> None:
        """Re-raise the signals that stopped :meth:`serve` (call it after all cleanup)."""
        for captured in reversed(self._server.captured_signals):
            signal.raise_signal(captured)

    def stop(self) -> None:
        """Ask the server to shut down (it ends every peer with ``"server shutdown"``)."""
        self._server.should_exit = True

    async def __aenter__(self) -> Self:
        async with contextlib.AsyncExitStack() as stack:
            await stack.enter_async_context(self.adapter)
            task_group = await stack.enter_async_context(anyio.create_task_group())
            await task_group.start(self.serve)
            self._task_group = task_group
            self._exit = stack.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        self.stop()
        exit_stack = self._exit
        del self._exit
        return await exit_stack.__aexit__(exc_type, exc, tb)
