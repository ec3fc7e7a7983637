"""``/metrics``, ``/status``, ``/status.json`` and ``/status/events``: one small ASGI app.

:class:`StatusApp` (from :meth:`Metrics.app`) is plain ASGI with no framework,
so it mounts anywhere: beside python-socketio (``socketio.ASGIApp(sio,
other_asgi_app=metrics.app())``, as ``serve --metrics`` does), under Starlette
or FastAPI (``app.mount("/ops", metrics.app())``), or on its own port with
:func:`serve_status` (the stream transports' ``--metrics-port``), a minimal
HTTP/1.1 server on anyio that needs nothing beyond the core.

The status page (``static/status.html``, written here, no third-party script)
reads ``/status/events``: Server-Sent Events carrying the same JSON as
``/status.json``, one every ``sample_interval`` seconds and one soon after each
departure (at most ten a second).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Hashable, MutableMapping
from functools import partial
from importlib import resources
from typing import TYPE_CHECKING, Any, Final, final
from urllib.parse import unquote

import anyio
import anyio.abc
import structlog
from anyio.abc import SocketAttribute
from anyio.streams.buffered import BufferedByteReceiveStream

from ._episode import PeerGone
from ._errors import ConfigurationError
from ._prometheus import prometheus_client

if TYPE_CHECKING:
    from ._metrics import Metrics

__all__ = ("ASGIApp", "Departure", "StatusApp", "log_metrics_url", "serve_status")

_logger = structlog.get_logger("heartbeat_monitor")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
#: An ASGI 3 application.
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

#: Shortest time between two live updates of one page (departures come in bursts).
_MIN_GAP: Final = 0.1
_TEXT: Final = b"text/plain; charset=utf-8"


@final
class Departure:
    """One end, as the status page lists it (the latency arrives with the expiry)."""

    __slots__ = ("at", "detail", "episode", "latency", "peer", "reason")

    def __init__(self, event: PeerGone, at: float) -> None:
        self.at = at
        self.peer = event.key
        self.episode = event.episode
        self.reason = event.reason
        self.detail = event.detail
        self.latency: float | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            "at": self.at,
            "peer": _label(self.peer),
            "episode": self.episode,
            "reason": self.reason,
            "detail": self.detail,
            "latency": self.latency,
        }


def _label(peer: Hashable) -> str:
    """A peer id for display (the status page; never a Prometheus label)."""
    text = peer if isinstance(peer, str) else repr(peer)
    return text if len(text) <= 80 else text[:79] + "…"


def _page() -> bytes:
    return (resources.files("heartbeat_monitor") / "static" / "status.html").read_bytes()


@final
class StatusApp:
    """The ASGI app of :meth:`Metrics.app`; any other path answers 404."""

    __slots__ = ("_page", "_registry", "metrics")

    def __init__(self, metrics: Metrics, *, registry: Any = None) -> None:
        self.metrics = metrics
        self._registry = registry
        self._page: bytes | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await _lifespan(receive, send)
            return
        if kind != "http":
            await send({"type": "websocket.close", "code": 1000})
            return
        path = scope["path"]
        root = scope.get("root_path", "")
        if root and path.startswith(root):
            path = path[len(root) :]
        path = path.rstrip("/") or "/"
        if scope["method"] not in ("GET", "HEAD"):
            await _respond(send, 405, b"GET only\n", _TEXT, extra=[(b"allow", b"GET, HEAD")])
            return
        if path == "/metrics":
            await self._metrics(send)
        elif path == "/status":
            if self._page is None:
                self._page = _page()
            await _respond(send, 200, self._page, b"text/html; charset=utf-8")
        elif path == "/status.json":
            await _respond(send, 200, self._json(), b"application/json")
        elif path == "/status/events":
            await self._events(receive, send)
        else:
            await _respond(send, 404, b"not found\n", _TEXT)

    def _json(self) -> bytes:
        return json.dumps(self.metrics.snapshot(), default=str).encode()

    async def _metrics(self, send: Send) -> None:
        try:
            client = prometheus_client()
        except ConfigurationError as exc:
            await _respond(send, 503, f"{exc}\n".encode(), _TEXT)
            return
        if self._registry is None:
            self._registry = client.CollectorRegistry(auto_describe=False)
            self._registry.register(self.metrics)
        body = client.generate_latest(self._registry)
        await _respond(send, 200, body, client.CONTENT_TYPE_LATEST.encode())

    async def _events(self, receive: Receive, send: Send) -> None:
        metrics = self.metrics
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [
                    (b"content-type", b"text/event-stream"),
                    (b"cache-control", b"no-store"),
                    (b"x-accel-buffering", b"no"),
                ],
            }
        )
        async with anyio.create_task_group() as task_group:

            async def until_disconnect() -> None:
                while (await receive())["type"] != "http.disconnect":
                    pass
                task_group.cancel_scope.cancel()

            task_group.start_soon(until_disconnect)
            seen = metrics.version
            while not metrics.closed:
                body = b"data: " + self._json() + b"\n\n"
                await send({"type": "http.response.body", "body": body, "more_body": True})
                await anyio.sleep(_MIN_GAP)
                seen = await metrics.changed(seen, max(metrics.sample_interval - _MIN_GAP, 0))
            await send({"type": "http.response.body", "body": b"", "more_body": False})
            task_group.cancel_scope.cancel()


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: bytes,
    *,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", content_type),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


# -- a minimal HTTP/1.1 server for the stream transports ------------------------------------

_MAX_HEAD: Final = 16 * 1024
_REASONS: Final = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}


async def serve_status(
    app: ASGIApp | Metrics,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    task_status: anyio.abc.TaskStatus[tuple[str, int]] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``app`` (or ``metrics.app()``) over HTTP on ``host:port`` until cancelled.

    A deliberately small server (GET, one request per connection, chunked
    streaming for the live page) for the transports that bring no HTTP server
    of their own; ``started`` with the bound (host, port).
    """
    if not callable(app):
        app = app.app()
    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    async with listener:
        bound = listener.extra(SocketAttribute.local_port)
        task_status.started((host, bound))
        log_metrics_url(host, bound)
        await listener.serve(partial(_connection, app))


async def _connection(app: ASGIApp, stream: anyio.abc.SocketStream) -> None:
    async with stream:
        try:
            await _exchange(app, stream)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream):
            pass  # the client went away
        except Exception:
            _logger.exception("heartbeat_monitor.metrics.http_failed")


async def _exchange(app: ASGIApp, stream: anyio.abc.SocketStream) -> None:
    reader = BufferedByteReceiveStream(stream)
    try:
        with anyio.fail_after(10):
            head = await reader.receive_until(b"\r\n\r\n", _MAX_HEAD)
        request, *lines = head.decode("latin-1").split("\r\n")
        method, target, version = request.split(" ")
        if not version.startswith("HTTP/1."):
            raise ValueError(version)
        headers = []
        for line in lines:
            name, colon, value = line.partition(":")
            if not colon:
                raise ValueError(line)
            headers.append(
                (name.strip().lower().encode("latin-1"), value.strip().encode("latin-1"))
            )
    except (TimeoutError, ValueError, anyio.DelimiterNotFound, anyio.IncompleteRead):
        await stream.send(
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n"
        )
        return
    path, _, query = target.partition("?")
    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": unquote(path),
        "raw_path": path.encode("latin-1"),
        "query_string": query.encode("latin-1"),
        "root_path": "",
        "headers": headers,
        "client": stream.extra(SocketAttribute.remote_address, None),
        "server": stream.extra(SocketAttribute.local_address, None),
    }
    gone = anyio.Event()
    requested = False

    async def receive() -> Message:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await gone.wait()
        return {"type": "http.disconnect"}

    chunked = False

    async def send(message: Message) -> None:
        nonlocal chunked
        if message["type"] == "http.response.start":
            status = message["status"]
            names = {name.lower() for name, _ in message.get("headers", ())}
            chunked = b"content-length" not in names
            lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'Status')}".encode()]
            lines += [name + b": " + value for name, value in message.get("headers", ())]
            lines.append(b"connection: close")
            if chunked:
                lines.append(b"transfer-encoding: chunked")
            await stream.send(b"\r\n".join(lines) + b"\r\n\r\n")
        elif message["type"] == "http.response.body":
            body = message.get("body", b"")
            more = message.get("more_body", False)
            if method == "HEAD":
                return
            if not chunked:
                await stream.send(body)
                return
            out = b"%x\r\n%s\r\n" % (len(body), body) if body else b""
            await stream.send(out + (b"" if more else b"0\r\n\r\n"))

    async with anyio.create_task_group() as task_group:

        async def watch() -> None:
            try:
                while True:
                    await reader.receive()
            except Exception:
                gone.set()

        task_group.start_soon(watch)
        await app(scope, receive, send)
        task_group.cancel_scope.cancel()


def log_metrics_url(host: str, port: int) -> None:
    """Log where ``/status`` and ``/metrics`` are served."""
    base = f"http://{f'[{host}]' if ':' in host else host}:{port}"
    _logger.info(
        "heartbeat_monitor.metrics.serving", status=f"{base}/status", metrics=f"{base}/metrics"
    )
