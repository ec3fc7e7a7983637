"""What every transport shares: the ``Transport`` shape, a queued connection, a stream's life.

Like httpcore's network backends, a transport is small: a :class:`Transport`
runs its server with one method, ``serve(hub)``, and gives the hub a
:class:`~heartbeat_monitor.Connection` per peer (``send`` a message, ``close``
with a reason). The stream transports (websockets, TCP) share two more pieces:
:class:`QueuedConnection` (``send``/``close`` feed one writer task) and
:func:`serve_connection` (hello, beats, end of one connection).
"""

from __future__ import annotations

import abc
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, ClassVar, Protocol

import anyio
import anyio.abc
import structlog

from ._episode import Reason
from ._errors import PeerError
from ._wire import MAX_MESSAGE_SIZE, encode_shared, parse_hello

if TYPE_CHECKING:
    from ._hub import PeerHub

__all__ = (
    "ENTRY_POINT_GROUP",
    "ConnectionEnded",
    "QueuedConnection",
    "Transport",
    "serve_connection",
)

#: Entry-point group under which adapters publish their :class:`Transport` class.
ENTRY_POINT_GROUP = "heartbeat_monitor.adapters"

_logger = structlog.get_logger("heartbeat_monitor")


class Transport(Protocol):
    """A server for one transport. Swapping transports swaps only this object."""

    #: The name the CLI and the entry point use: ``websocket``, ``tcp``, ``udp``, ...
    name: ClassVar[str]

    async def serve(
        self,
        hub: PeerHub,
        *,
        task_status: anyio.abc.TaskStatus[tuple[str, int]] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Listen, report connections and data to ``hub``; ``started`` with (host, port)."""


class QueuedConnection(abc.ABC):
    """A connection whose ``send``/``close`` feed one writer task (:meth:`run`).

    Subclasses implement ``_write`` (a batch of encoded messages) and ``_end`` (the
    transport's close with a reason). At most ``max_queue`` messages wait; more
    are dropped (a peer that does not read must not grow the server's memory).

    Closing never waits on the peer for long: a write still in progress when
    :meth:`close` is called gets ``close_timeout`` seconds more, then it is
    abandoned and ``_end`` runs at once with no time to be polite (the peer does
    not read: telling it the reason would block too) with :attr:`abandoned` set,
    which resets the connection.
    Otherwise ``_end`` is given ``close_timeout`` seconds before :meth:`run`
    returns anyway.
    """

    transport: ClassVar[str] = "stream"

    def __init__(self, *, max_queue: int = 1024, close_timeout: float = 1.0) -> None:
        self._queue: deque[str] = deque()
        self._max_queue = max_queue
        self._close_timeout = close_timeout
        self._closing: str | None = None
        self._wake = anyio.Event()
        #: The write in progress, if any (close() gives it a deadline).
        self._writing: anyio.CancelScope | None = None
        self.dropped = 0
        #: Set before ``_end`` when a write was given up at close: the peer does not read,
        #: so ``_end`` should reset the connection (dropping what it did not take).
        self.abandoned = False

    def send(self, message: Mapping[str, object]) -> None:
        if self._closing is not None:
            return
        if len(self._queue) >= self._max_queue:
            self.dropped += 1
            if self.dropped == 1:
                _logger.warning(f"heartbeat_monitor.{self.transport}.notices_dropped")
            return
        queue = self._queue
        if not queue:
            self._wake.set()  # the writer waits only on an empty queue
        queue.append(encode_shared(message))

    def close(self, reason: str) -> None:
        if self._closing is None:
            self._closing = reason
            self._wake.set()
            writing = self._writing
            if writing is not None:  # maybe blocked on a peer that does not read
                writing.deadline = min(writing.deadline, anyio.current_time() + self._close_timeout)

    async def run(self, *, then_cancel: anyio.CancelScope | None = None) -> None:
        """Write queued messages until closed; then close the transport with the reason.

        ``then_cancel``: a scope to cancel afterwards (the connection's reader).
        """
        queue = self._queue
        polite = self._close_timeout
        try:
            while True:
                if queue:
                    batch = list(queue)
                    queue.clear()
                    with anyio.CancelScope() as self._writing:
                        await self._write(batch)
                    if self._writing.cancelled_caught:  # closing, and the peer does not read
                        self.abandoned = True
                        polite = 0
                        break
                    self._writing = None
                    continue
                if self._closing is not None:
                    break
                await self._wake.wait()
                self._wake = anyio.Event()
        except Exception as exc:  # the peer went away while we wrote: the reader reports it
            _logger.debug(f"heartbeat_monitor.{self.transport}.write_failed", error=repr(exc))
        self._writing = None
        with anyio.move_on_after(polite, shield=True):
            try:
                await self._end(self._closing or "server closed")
            except Exception as exc:  # already closed by the peer: nothing left to end
                _logger.debug(f"heartbeat_monitor.{self.transport}.close_failed", error=repr(exc))
        if then_cancel is not None:
            then_cancel.cancel()

    @abc.abstractmethod
    async def _write(self, batch: list[str]) -> None:
        """Send these encoded messages, in order."""

    @abc.abstractmethod
    async def _end(self, reason: str) -> None:
        """Close the transport, telling the peer ``reason`` where it can."""


class ConnectionEnded(Exception):
    """Raised by a stream transport's ``receive`` when its connection ends (see
    :func:`serve_connection`). ``reason`` is from :class:`~heartbeat_monitor.Reason`,
    or with ``bad=True`` a refusal reason (``"oversized: ..."``, ``"malformed: ..."``)
    for input the transport refused; ``detail`` says more."""

    def __init__(self, reason: str, *, bad: bool = False, detail: str = "") -> None:
        super().__init__(reason)
        self.reason = reason
        self.bad = bad
        self.detail = detail


async def serve_connection(
    hub: PeerHub,
    connection: QueuedConnection,
    receive: Callable[[], Awaitable[bytes | str]],
    *,
    hello_timeout: float,
    max_size: int = MAX_MESSAGE_SIZE,
    address: str = "",
) -> None:
    """The whole life of one stream connection, for any transport with a ``receive``.

    Waits ``hello_timeout`` for the hello, opens the link, welcomes the peer,
    feeds every message to the hub, and closes the link when ``receive`` raises
    :class:`ConnectionEnded`. Runs the connection's writer alongside; returns
    once the connection is closed.
    """
    transport = connection.transport
    async with anyio.create_task_group() as task_group:
        task_group.start_soon(partial(connection.run, then_cancel=task_group.cancel_scope))
        try:
            with anyio.fail_after(hello_timeout):
                peer = parse_hello(await receive(), max_size=max_size)
        except (PeerError, TimeoutError) as exc:
            reason = str(exc) if isinstance(exc, PeerError) else "protocol: no hello in time"
            hub.refuse_input(transport, reason, address=address)
            connection.close(f"refused: {reason}")
            return
        except ConnectionEnded as exc:
            if exc.bad:
                hub.refuse_input(transport, exc.reason, address=address)
            connection.close(exc.reason)
            return
        link = hub.open(connection, peer)
        if link is None:
            connection.close("refused: peer id in use")
            return
        connection.send(
            {
                "type": "welcome",
                "peer": peer,
                "episode": link.episode.number,
                "timeout": hub.monitor.tracker.timeout,
            }
        )
        try:
            while True:
                try:
                    data = await receive()
                except ConnectionEnded as exc:
                    if exc.bad:
                        hub.refuse(link, exc.reason)
                    else:
                        hub.close(link, exc.reason, detail=exc.detail)
                        connection.close(exc.reason)
                    return
                if not hub.receive(link, data):
                    return  # the hub ended the link and is closing the connection
        finally:
            if not link.ended:  # cancelled: the server is stopping
                hub.close(link, Reason.SERVER_SHUTDOWN)
