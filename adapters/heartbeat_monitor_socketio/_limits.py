"""Limits the Socket.IO server stack does not enforce: binary attachments, idle connections.

Binary attachments
==================

A Socket.IO binary event arrives as a text header announcing how many binary
frames follow (``451-["heartbeat",{"_placeholder":true,"num":0}]`` announces
one), then those frames. python-socketio keeps the decoded header in
``AsyncServer._binary_packet[eio_sid]`` and appends every following frame to
its ``attachments`` until the announced count has arrived; it checks only that
the count has at most ten digits. A header announcing 451,000,000 attachments
followed by 512 KB frames therefore grows the server without bound.

:func:`limit_attachments` wraps engine.io's ``message`` handler (outermost, so
these checks run first) and refuses, before python-socketio sees the frame:

* a header announcing more than ``max_attachments`` (10, as socket.io-parser's
  ``maxAttachments``): ``oversized: a packet announcing N binary attachments > 10``;
* a header announcing none (``50-[...]``, or no count at all): python-socketio
  would keep it pending for ever and fail on every later frame of that
  connection: ``malformed: a binary packet announcing no attachments``;
* a header for a namespace the connection has not joined (python-socketio raises
  a bare ``ValueError`` there, logged as a traceback): ``malformed``;
* a frame that would take the attachments buffered for one packet over
  ``max_buffered`` bytes (engine.io's ``max_http_buffer_size``, 1,000,000 by
  default: one packet's attachments together may be no larger than one frame):
  ``oversized: binary attachments of one packet over N bytes``. The pending
  packet is dropped from ``_binary_packet`` first, so its memory is freed at
  once, whatever the refusal does next.

A websocket text frame whose engine.io packet type is not 0-6, or a long-polling
POST carrying such a packet, an empty one or bad base64 (python-engineio would log
a traceback for each and keep the connection) is refused as ``malformed``
(:func:`limit_packet_types`, on the ASGI ``receive``).

Frames that arrive on a connection already refused or closing are dropped
unread (python-socketio would fail on them: the connection is gone from its
namespaces). A refusal goes to ``refuse(reason, eio_sid=...)`` (the adapter's, which ends
that connection as ``refused: oversized: ...``, counted and logged paced). A
connection can buffer at most one packet at a time (python-socketio keys the
pending packet by connection), so memory per connection is bounded by
``max_buffered`` plus one frame. ``tests/hardening/test_socketio_limits.py``
pins the internals used here (``_binary_packet``, the packet's ``attachments``
and header format, engine.io's ``handlers["message"]``, uvicorn's keep-alive
timer) against the installed versions.

Idle connections
================

uvicorn arms its keep-alive timer (``timeout_keep_alive``, 5 s) only after a
response: a connection that never sends a request holds its file descriptor
for good, so a few hundred of them exhaust a server's ``RLIMIT_NOFILE`` for as
long as the attacker likes. :class:`IdleClosingHTTP` (uvicorn's own protocol,
``http=IdleClosingHTTP``) arms that timer when the connection is made too: no
first byte within ``timeout_keep_alive`` and uvicorn closes it, as it closes an
idle keep-alive connection. (Once a websocket is open, engine.io's ping
timeout ends one that goes quiet.)

The first byte cancels that timer, and uvicorn has no deadline for the rest of
a request's head: a client sending its headers a byte every few seconds
(slowloris) holds the descriptor as long. ``IdleClosingHTTP`` also gives each
request head ``head_timeout`` seconds (10) from the connection, or from the
end of the previous response: a request line and headers still incomplete then
and the connection is closed (``heartbeat_monitor.socketio.slow_request_closed``,
logged on the first and every 1000th). A request being handled (a long poll),
or a connection upgraded to a websocket, is not concerned.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from typing import Any, ClassVar, Final

import socketio
import structlog
from uvicorn.protocols.http.auto import AutoHTTPProtocol

from ._internals import transport_open

__all__ = (
    "MAX_ATTACHMENTS",
    "IdleClosingHTTP",
    "announced_attachments",
    "install_limits",
    "limit_attachments",
    "limit_packet_types",
    "polling_fault",
)

#: engine.io packet types a client may send in a text frame (open .. noop).
_EIO_TYPES: Final = frozenset("0123456")
#: What a client posts over long-polling: close, pong, message (and "b": a binary message).
#: python-engineio answers any other type by closing the session and waiting, in that
#: request, for a poll that takes the close packet: the POST hangs until the ping timeout.
_POLLING_TYPES: Final = frozenset("134")
#: Most binary attachments one packet may announce (socket.io-parser's default).
MAX_ATTACHMENTS: Final = 10
_BINARY_TYPES: Final = ("5", "6")  # BINARY_EVENT, BINARY_ACK

Refuse = Callable[..., Awaitable[Any]]
_logger = structlog.get_logger("heartbeat_monitor")


def announced_attachments(frame: str) -> int | None:
    """How many binary frames a Socket.IO text packet announces (``None``: not a binary one).

    As python-socketio reads it: digits between the packet type and the first
    ``-`` (at most ten of them, more is not a count); none is 0.
    """
    if frame[:1] not in _BINARY_TYPES:
        return None
    dash = frame.find("-", 1, 12)
    digits = frame[1:dash] if dash > 1 else ""
    return int(digits) if digits.isdigit() else 0


def install_limits(
    sio: socketio.AsyncServer, refuse: Refuse, request_sid: Callable[[tuple[Any, ...]], str | None]
) -> None:
    """Every limit of this module on ``sio``; ``request_sid(args)``: a request's engine.io sid."""
    limit_attachments(sio, refuse)
    limit_packet_types(sio, refuse, request_sid)


def limit_packet_types(
    sio: socketio.AsyncServer, refuse: Refuse, request_sid: Callable[[tuple[Any, ...]], str | None]
) -> None:
    """Refuse a client's engine.io packet python-engineio would choke on.

    python-engineio decodes ``"7..."`` .. ``"9..."`` as packet types 7-9, then fails
    formatting its own log line for them; over long-polling an empty packet, a
    type that is not a digit or bad base64 fail too: a traceback per request,
    connection kept. A posted packet of a type a client never posts (open, ping,
    upgrade, noop) makes python-engineio close the session and hold that POST
    until the ping timeout. Checked on the ASGI ``receive`` of each websocket request and
    of each long-polling POST (``handle_request`` is wrapped): the sender is
    refused (``malformed``) and engine.io is told the websocket ended, or the POST
    is answered 400 with the reason.
    """
    eio = sio.eio
    original: Callable[..., Awaitable[Any]] = eio.handle_request

    async def handle_request(*args: Any, **kwargs: Any) -> Any:
        scope = args[0] if args else None
        if len(args) < 2 or not isinstance(scope, dict):
            return await original(*args, **kwargs)
        receive: Callable[[], Awaitable[dict[str, Any]]] = args[1]
        if scope.get("type") == "websocket":

            async def checked() -> dict[str, Any]:
                event = await receive()
                text = event.get("text") if event.get("type") == "websocket.receive" else None
                if text and text[0] not in _EIO_TYPES:
                    reason = f"malformed: not an engine.io packet (type {text[0]!r})"
                    await refuse(reason, eio_sid=request_sid(args))
                    return {"type": "websocket.disconnect", "code": 1002}
                return event

        elif scope.get("type") == "http" and scope.get("method") == "POST" and len(args) > 2:
            event = await receive()
            body = event.get("body") or b""
            limit = int(eio.max_http_buffer_size)
            while event.get("more_body") and len(body) <= limit:
                event = await receive()  # engine.io reads the whole body too
                body += event.get("body") or b""
            eio_sid = request_sid(args)
            fault = polling_fault(body) if len(body) <= limit else None
            if fault is not None and eio_sid in eio.sockets:
                await refuse(f"malformed: {fault}", eio_sid=eio_sid)
                send: Callable[[dict[str, Any]], Awaitable[None]] = args[2]
                headers = [(b"content-type", b"text/plain")]
                await send({"type": "http.response.start", "status": 400, "headers": headers})
                await send({"type": "http.response.body", "body": fault.encode()})
                return None
            replay = [{**event, "body": body, "more_body": False}]

            async def checked() -> dict[str, Any]:
                return replay.pop() if replay else await receive()

        else:
            return await original(*args, **kwargs)
        return await original(scope, checked, *args[2:], **kwargs)

    eio.handle_request = handle_request


def polling_fault(body: bytes) -> str | None:
    """What python-engineio would choke on in a long-polling POST body (``None``: nothing)."""
    try:
        packets = body.decode("utf-8").split("\x1e")
    except UnicodeDecodeError:
        return None  # engine.io refuses it itself (400), without a traceback
    for packet in packets:
        kind = packet[:1]
        if kind == "b":
            try:
                base64.b64decode(packet[1:], validate=True)
            except ValueError:
                return "not an engine.io packet (bad base64)"
        elif not kind:
            return "an empty engine.io packet"
        elif kind not in _EIO_TYPES:
            return f"not an engine.io packet (type {kind!r})"
        elif kind not in _POLLING_TYPES:
            return f"an engine.io packet a client does not post (type {kind!r})"
    return None


def _joined(sio: socketio.AsyncServer, eio_sid: str, header: str) -> bool:
    """Whether the connection has joined the namespace of this binary header (python-socketio
    raises a bare ``ValueError`` otherwise). A header it cannot decode: left to it."""
    try:
        namespace = sio.packet_class(encoded_packet=header).namespace or "/"
    except Exception:  # python-socketio raises ValueError, TypeError, ...
        return True
    return sio.manager.sid_from_eio_sid(eio_sid, namespace) is not None


def limit_attachments(
    sio: socketio.AsyncServer,
    refuse: Refuse,
    *,
    max_attachments: int = MAX_ATTACHMENTS,
    max_buffered: int | None = None,
) -> None:
    """Wrap engine.io's ``message`` handler of ``sio`` with the limits (see the module)."""
    eio = sio.eio
    limit = int(eio.max_http_buffer_size) if max_buffered is None else max_buffered
    pending: dict[str, Any] = sio._binary_packet
    original: Callable[[str, str | bytes], Awaitable[Any]] = eio.handlers["message"]

    async def on_message(eio_sid: str, data: str | bytes) -> Any:
        if not transport_open(sio, eio_sid=eio_sid):
            return None  # refused or closing already: its late frames change nothing
        packet = pending.get(eio_sid)
        if packet is not None:  # this frame is an attachment (python-socketio takes any)
            buffered = len(data) + sum(map(len, packet.attachments))
            if buffered > limit:
                del pending[eio_sid]  # free what was buffered, now
                reason = f"oversized: binary attachments of one packet over {limit} bytes"
                return await refuse(reason, eio_sid=eio_sid)
        elif isinstance(data, str) and (count := announced_attachments(data)) is not None:
            if count > max_attachments:
                reason = f"oversized: a packet announcing {count} binary attachments"
                return await refuse(f"{reason} > {max_attachments}", eio_sid=eio_sid)
            if count == 0:  # python-socketio would wait for none and choke on every later frame
                reason = "malformed: a binary packet announcing no attachments"
                return await refuse(reason, eio_sid=eio_sid)
            if not _joined(sio, eio_sid, data):
                reason = "malformed: a binary packet for a namespace it has not joined"
                return await refuse(reason, eio_sid=eio_sid)
        return await original(eio_sid, data)

    eio.on("message", on_message)


class IdleClosingHTTP(AutoHTTPProtocol):  # type: ignore[misc,valid-type]
    """uvicorn's HTTP protocol whose idle timer also runs before the first request, and
    which closes a connection whose request head is not complete within ``head_timeout``."""

    #: Seconds a request's line and headers may take, from the connection or from the
    #: end of the previous response (a subclass may change it).
    head_timeout: float = 10.0
    #: Connections closed for a slow request head, in this process.
    closed_slow: ClassVar[int] = 0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )
        self._arm_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._arm_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_due, self.cycle)

    def _head_due(self, cycle: object) -> None:
        """No new request began since the timer was armed: close, unless upgraded or idle-closed."""
        transport = self.transport
        if (
            self.cycle is not cycle
            or transport.is_closing()
            or transport.get_protocol() is not self
        ):
            return
        IdleClosingHTTP.closed_slow += 1
        if IdleClosingHTTP.closed_slow % 1000 == 1:
            _logger.warning(
                "heartbeat_monitor.socketio.slow_request_closed",
                client=self.client,
                head_timeout=self.head_timeout,
                closed=IdleClosingHTTP.closed_slow,
            )
        transport.close()
