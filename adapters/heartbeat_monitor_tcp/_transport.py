"""The TCP server: one anyio task per connection, one JSON message per line.

Framing is newline-delimited JSON (the messages cannot contain a raw newline):
a partial frame waits in the buffer until its newline arrives; more than
``max_size`` bytes without a newline is an oversized frame and is refused;
end of stream in the middle of a frame is a lost connection.

Out of file descriptors (``EMFILE`` at ``RLIMIT_NOFILE``): the accept loop waits
(50 ms doubling to 1 s) and retries, logging ``accept_failed`` at most every 10 s;
the open connections are untouched and the new ones wait in the listen backlog
(:class:`~heartbeat_monitor.AcceptBackoff`). A connection that never says hello
is closed after ``hello_timeout`` (5 s), which is what frees descriptors held by
idle connections.

Overloaded (``monitor.overload`` sheds): a new connection is refused as it is
accepted, before any task or read, with ``{"type": "closed", "reason": "refused:
overloaded: ..."}``. Each wake of the accept loop takes everything waiting in the
listen backlog (up to 100, as asyncio's own servers do): one accept per pass of an
overloaded event loop would leave clients waiting there, neither served nor refused.

A peer that never reads: notices beyond 1,024 queued are dropped; once its
episode ends, a write blocked on it is given ``close_timeout`` (1 s) and then
the connection is reset (no FIN queued behind data it will never take).

Half-open connections: a peer whose host vanished never sends FIN, so the
reader would wait forever; the heartbeat timeout ends that episode and the
server closes the socket (this is what heartbeats are for). A peer that
half-closes (shuts down its write side) has said goodbye: ``client disconnect``.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from functools import partial
from typing import ClassVar, final

import anyio
import anyio.abc
import structlog
from anyio.abc import SocketAttribute
from anyio.streams.buffered import BufferedByteReceiveStream

from heartbeat_monitor import (
    MAX_MESSAGE_SIZE,
    AcceptBackoff,
    ConnectionEnded,
    PeerHub,
    QueuedConnection,
    Reason,
    encode_message,
    serve_connection,
)

__all__ = ("TcpTransport",)

#: The most connections taken from the listen backlog per wake of the accept loop.
_ACCEPT_BATCH = 100

_logger = structlog.get_logger("heartbeat_monitor")


@final
class _TcpConnection(QueuedConnection):
    transport: ClassVar[str] = "tcp"

    def __init__(self, stream: anyio.abc.SocketStream, close_timeout: float) -> None:
        super().__init__(close_timeout=close_timeout)
        self._stream = stream

    async def _write(self, batch: list[str]) -> None:
        await self._stream.send("".join(f"{data}\n" for data in batch).encode())

    async def _end(self, reason: str) -> None:
        if self.abandoned:  # the peer does not read: reset, dropping what it never took
            _reset(self._stream.extra(SocketAttribute.raw_socket))
            await self._stream.aclose()
            return
        try:
            await self._stream.send(
                encode_message({"type": "closed", "reason": reason}).encode() + b"\n"
            )
        finally:
            await self._stream.aclose()


def _refusal(hub: PeerHub, address: str) -> bytes | None:
    """Overloaded: the line that tells a new connection why (counted and logged); else None."""
    reason = hub.monitor.overload.refusal()
    if reason is None:
        return None
    hub.refuse_input("tcp", reason, address=address)
    return encode_message({"type": "closed", "reason": f"refused: {reason}"}).encode() + b"\n"


def _reset(sock: socket.socket) -> None:
    """Make closing ``sock`` send a reset at once (SO_LINGER 0), not a FIN behind unsent data.

    A FIN queued behind data the peer never reads is never delivered: the kernel
    would keep the connection (and its send buffer) for minutes.
    """
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:  # already gone
        pass


@final
class TcpTransport:
    """A TCP heartbeat server on ``host:port`` (port 0: any free port)."""

    name: ClassVar[str] = "tcp"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        max_size: int = MAX_MESSAGE_SIZE,
        hello_timeout: float = 5.0,
        close_timeout: float = 1.0,
    ) -> None:
        self.host = host
        self.port = port
        self.max_size = max_size
        self.hello_timeout = hello_timeout
        self.close_timeout = close_timeout

    async def serve(
        self,
        hub: PeerHub,
        *,
        task_status: anyio.abc.TaskStatus[tuple[str, int]] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        listener = await anyio.create_tcp_listener(local_host=self.host, local_port=self.port)
        async with listener:
            address = listener.extra(SocketAttribute.local_address)
            assert isinstance(address, tuple)
            host, port = address[0], address[1]
            _logger.info("heartbeat_monitor.tcp.listening", host=host, port=port)
            task_status.started((str(host), int(port)))
            async with anyio.create_task_group() as task_group:
                for one in listener.listeners:  # one per address family of the host
                    assert isinstance(one, anyio.abc.SocketListener)
                    task_group.start_soon(self._accept_all, hub, one, task_group)

    async def _accept_all(
        self,
        hub: PeerHub,
        listener: anyio.abc.SocketListener,
        task_group: anyio.abc.TaskGroup,
    ) -> None:
        """anyio's ``Listener.serve``, but out of file descriptors is a pause, not a crash."""
        backoff = AcceptBackoff("tcp")
        raw = listener.extra(SocketAttribute.raw_socket)
        while True:
            try:
                stream = await listener.accept()
            except (OSError, anyio.BrokenResourceError) as exc:
                error = backoff.resource_error(exc)
                if error is None:
                    raise
                await anyio.sleep(backoff.failed(error))  # the peer waits in the backlog
                continue
            backoff.succeeded()
            refusal = _refusal(hub, str(stream.extra(SocketAttribute.remote_address)))
            if refusal is not None:
                with contextlib.suppress(OSError, anyio.BrokenResourceError):
                    await stream.send(refusal)
                await stream.aclose()
            else:
                task_group.start_soon(self._handle, hub, stream)
            for _ in range(_ACCEPT_BATCH):  # the rest of the backlog, in this same pass
                try:
                    sock, _address = raw.accept()
                except OSError:  # nothing more waits (or an error the next accept() reports)
                    break
                sock.setblocking(False)
                refusal = _refusal(hub, str(_address))
                if refusal is not None:
                    with contextlib.suppress(OSError):
                        sock.send(refusal)  # a few dozen bytes into an empty send buffer
                    sock.close()
                else:
                    accepted = await anyio.abc.SocketStream.from_socket(sock)
                    task_group.start_soon(self._handle, hub, accepted)

    async def _handle(self, hub: PeerHub, stream: anyio.abc.SocketStream) -> None:
        try:
            async with stream:
                reader = BufferedByteReceiveStream(stream)
                await serve_connection(
                    hub,
                    _TcpConnection(stream, self.close_timeout),
                    partial(self._frame, reader),
                    hello_timeout=self.hello_timeout,
                    max_size=self.max_size,
                    address=str(stream.extra(SocketAttribute.remote_address)),
                )
        except Exception:  # never let one connection take the server down
            _logger.exception("heartbeat_monitor.tcp.connection_failed")

    async def _frame(self, reader: BufferedByteReceiveStream) -> bytes:
        """The next line; :class:`ConnectionEnded` says why there is none."""
        try:
            return await reader.receive_until(b"\n", self.max_size + 1)
        except anyio.DelimiterNotFound:
            reason = f"oversized: no newline within {self.max_size} bytes"
            raise ConnectionEnded(reason, bad=True) from None
        except anyio.IncompleteRead:
            if reader.buffer:
                detail = "partial frame at end of stream"
                raise ConnectionEnded(Reason.TRANSPORT_ERROR, detail=detail) from None
            raise ConnectionEnded(Reason.CLIENT_DISCONNECT) from None
        except anyio.ClosedResourceError:
            raise ConnectionEnded(Reason.TRANSPORT_CLOSE, detail="closed by server") from None
        except (anyio.BrokenResourceError, OSError) as exc:
            detail = str(exc) or exc.__class__.__name__
            raise ConnectionEnded(Reason.TRANSPORT_ERROR, detail=detail) from None
