"""The transport seam: what every adapter shares, and an in-memory transport for tests.

Like httpcore's network backends, a transport is small. It gives the seam a
:class:`Connection` per peer (two non-blocking methods: ``send`` a notice,
``close`` with a reason) and runs its server with one method, ``serve(hub)``.
Everything else lives here, once, in :class:`PeerHub`:

* a connection opens: ``hub.open(peer, connection)`` tracks a new *episode*
  (a :class:`Session`; a reconnect is always a new one) and welcomes the peer;
* data arrives: ``hub.receive(session, data)`` decodes it, refuses bad input
  (malformed, oversized, wrong types, a beat for another peer, a flood) and
  otherwise beats;
* it closes: ``hub.close(session, reason)``;
* expiry or refusal: the hub asks the connection to close with the reason.

Whatever ends an episode, the hub emits exactly one :class:`PeerGone` for it,
with the reason, and tells every other open connection once
(``{"type": "gone", ...}``). Bad input is logged (``heartbeat_monitor.<transport>
.peer_refused``), counted in :attr:`PeerHub.refused`, answered by closing that
connection, and never raised into the server nor touching another peer.

Wire messages (JSON objects; the stream transports frame them, UDP signs them)::

    peer -> server   {"type": "hello", "peer": "<id>"}       first message: opens
                     {"type": "beat"}                          any later message beats
    server -> peer   {"type": "welcome", "peer": ..., "episode": n, "timeout": s}
                     {"type": "gone", "peer": ..., "reason": ...}
                     {"type": "closed", "reason": ...}         (where no close frame exists)
"""

from __future__ import annotations

import abc
import json
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar, Protocol, final

import anyio
import anyio.abc
import structlog

from ._errors import PeerError
from ._events import Expired, PeerEvent
from ._monitor import HeartbeatMonitor

__all__ = (
    "ENTRY_POINT_GROUP",
    "Connection",
    "ConnectionEnded",
    "GoneCallback",
    "MemoryClient",
    "MemoryTransport",
    "PeerGone",
    "PeerHub",
    "QueuedConnection",
    "Session",
    "Transport",
    "check_peer_id",
    "decode_message",
    "encode_message",
    "parse_hello",
    "serve_connection",
)

#: Entry-point group under which adapters publish their :class:`Transport` class.
ENTRY_POINT_GROUP = "heartbeat_monitor.adapters"
#: Largest message a peer may send, in bytes (adapters may lower or raise it).
MAX_MESSAGE_SIZE = 4096
_MAX_PEER_ID = 128

_logger = structlog.get_logger("heartbeat_monitor")


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerGone(PeerEvent):
    """A tracking episode ended: exactly one per :class:`Session`. ``key`` is the peer id."""

    #: Which episode of this peer id ended (1, 2, ... within one hub).
    episode: int
    #: Why: ``expired: ...``, ``closed by peer ...``, ``connection lost ...``, ``refused: ...``.
    reason: str
    #: True when the monitor expired the peer (it went silent).
    expired: bool


#: A callback run for each :class:`PeerGone` (plain function; runs inline, must not block).
GoneCallback = Callable[[PeerGone], object]


class Connection(Protocol):
    """What the seam needs from one peer's connection. Both methods return at once."""

    @property
    def transport(self) -> str:
        """The transport's name, for log events (``heartbeat_monitor.<transport>.*``)."""

    def send(self, message: Mapping[str, object]) -> None:
        """Queue a notice to the peer (may be dropped if the peer does not read)."""

    def close(self, reason: str) -> None:
        """Start ending the connection, telling the peer ``reason`` where possible."""


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


# -- messages ------------------------------------------------------------------------------


def encode_message(message: Mapping[str, object]) -> str:
    """One compact JSON text, as every adapter sends it."""
    return json.dumps(message, separators=(",", ":"))


_last_encoded: tuple[object, str] = (None, "")


def encode_shared(message: Mapping[str, object]) -> str:
    """:func:`encode_message`, encoded once when one message object goes to every peer.

    A broadcast hands the same object to each connection's ``send`` in turn;
    remembering the last one turns N encodings into one.
    """
    global _last_encoded
    last = _last_encoded
    if last[0] is message:
        return last[1]
    data = encode_message(message)
    _last_encoded = (message, data)
    return data


def decode_message(data: bytes | str, *, max_size: int = MAX_MESSAGE_SIZE) -> dict[str, Any]:
    """Decode one message from a peer; :class:`PeerError` says clearly what is wrong."""
    if len(data) > max_size:
        raise PeerError(f"oversized: {len(data)} bytes > {max_size}")
    try:
        message = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise PeerError("malformed: not UTF-8 JSON") from None
    if not isinstance(message, dict):
        raise PeerError(f"wrong type: expected a JSON object, got {type(message).__name__}")
    kind = message.get("type")
    if not isinstance(kind, str):
        raise PeerError(f"wrong type: 'type' must be a string, got {type(kind).__name__}")
    return message


def check_peer_id(peer: object) -> str:
    """A peer id is a non-empty printable string of at most 128 characters."""
    if not isinstance(peer, str):
        raise PeerError(f"wrong type: 'peer' must be a string, got {type(peer).__name__}")
    if not 0 < len(peer) <= _MAX_PEER_ID or not peer.isprintable():
        raise PeerError(f"bad peer id: 1-{_MAX_PEER_ID} printable characters expected")
    return peer


def parse_hello(data: bytes | str, *, max_size: int = MAX_MESSAGE_SIZE) -> str:
    """The peer id from a connection's first message (``{"type": "hello", "peer": id}``)."""
    message = decode_message(data, max_size=max_size)
    if message["type"] != "hello":
        raise PeerError(f"protocol: expected 'hello' first, got {message['type']!r:.40}")
    return check_peer_id(message.get("peer"))


# -- sessions and the hub ------------------------------------------------------------------


@final
class Session:
    """One tracking episode of one peer on one connection; the monitor's key.

    Hashed by identity, so a reconnecting peer never shares state with its
    previous episode.
    """

    __slots__ = ("connection", "episode", "gone", "peer", "window_count", "window_start")

    def __init__(self, peer: str, episode: int, connection: Connection, now: float) -> None:
        self.peer = peer
        self.episode = episode
        self.connection = connection
        #: The reason this episode ended, once it has.
        self.gone: str | None = None
        self.window_start = now
        self.window_count = 0

    def __repr__(self) -> str:
        return f"Session({self.peer!r}, episode={self.episode})"


@final
class PeerHub:
    """Translates connections into track/beat/untrack and carries out expiry.

    ``PeerHub(monitor)`` registers itself as an expiry callback of ``monitor``.
    ``max_rate`` bounds the messages a connection may send per second (more is
    a flood: the connection is refused). ``notify_others`` broadcasts each
    :class:`PeerGone` to the other open connections.
    """

    __slots__ = (
        "_callbacks",
        "_clock",
        "_episodes",
        "_sessions",
        "max_rate",
        "max_size",
        "monitor",
        "notify_others",
        "refused",
    )

    def __init__(
        self,
        monitor: HeartbeatMonitor,
        *,
        max_rate: int = 100,
        max_size: int = MAX_MESSAGE_SIZE,
        notify_others: bool = True,
        on_gone: GoneCallback | None = None,
    ) -> None:
        self.monitor = monitor
        self.max_rate = max_rate
        self.max_size = max_size
        self.notify_others = notify_others
        #: Refusals of bad input so far, by kind (``oversized``, ``malformed``, ``flood``, ...).
        self.refused: Counter[str] = Counter()
        self._clock = monitor.clock
        self._sessions: dict[str, Session] = {}
        self._episodes = 0
        self._callbacks: list[GoneCallback] = []
        if on_gone is not None:
            self._callbacks.append(on_gone)
        monitor.on_expire(self._expired)

    def on_gone(self, callback: GoneCallback) -> GoneCallback:
        """Register a callback for every :class:`PeerGone`; usable as a decorator."""
        self._callbacks.append(callback)
        return callback

    def __len__(self) -> int:
        return len(self._sessions)

    def __contains__(self, peer: object) -> bool:
        return peer in self._sessions

    def session(self, peer: str) -> Session | None:
        """The open episode of ``peer``, if any."""
        return self._sessions.get(peer)

    def sessions(self) -> list[Session]:
        """A snapshot of the open episodes."""
        return list(self._sessions.values())

    def close_all(self, reason: str = "server shutdown", *, transport: str | None = None) -> int:
        """End every open episode (of one ``transport``, or all): the server is stopping.

        Each gets its one :class:`PeerGone`; the others are not told (they are going too).
        """
        notify, self.notify_others = self.notify_others, False
        ended = 0
        try:
            for session in self.sessions():
                if transport is None or session.connection.transport == transport:
                    ended += self._end(session, reason, expired=False)
                    session.connection.close(reason)
        finally:
            self.notify_others = notify
        return ended

    # -- what transports call --------------------------------------------------------------

    def open(self, peer: str, connection: Connection) -> Session | None:
        """A peer said hello: start a new episode. ``None`` (refused) if the id is in use.

        A peer id is held by one connection at a time, so no one can take over
        (or keep alive) a live peer by connecting with its id.
        """
        if peer in self._sessions:
            self.refuse_input(connection.transport, "peer id in use", peer=peer)
            return None
        self._episodes += 1
        session = Session(peer, self._episodes, connection, self._clock.now())
        self._sessions[peer] = session
        self.monitor.track(session)
        connection.send(
            {
                "type": "welcome",
                "peer": peer,
                "episode": session.episode,
                "timeout": self.monitor.tracker.timeout,
            }
        )
        _logger.debug(
            f"heartbeat_monitor.{connection.transport}.peer_opened",
            peer=peer,
            episode=session.episode,
        )
        return session

    def receive(self, session: Session, data: bytes | str) -> bool:
        """A message from the peer: beat, or refuse it (closing the connection)."""
        if session.gone is not None:
            return False
        try:
            message = decode_message(data, max_size=self.max_size)
            claimed = message.get("peer")
            if claimed is not None and claimed != session.peer:
                raise PeerError(f"spoofed: beat for peer {claimed!r:.60} on {session.peer!r}")
        except PeerError as exc:
            self.refuse(session, str(exc))
            return False
        return self.beat(session)

    def beat(self, session: Session) -> bool:
        """Record traffic from the peer (a flood is refused)."""
        now = self._clock.now()
        if now - session.window_start >= 1.0:
            session.window_start = now
            session.window_count = 0
        session.window_count += 1
        if session.window_count > self.max_rate:
            self.refuse(session, f"flood: more than {self.max_rate} messages per second")
            return False
        return self.monitor.beat(session)

    def close(self, session: Session, reason: str) -> bool:
        """The connection ended; ``False`` if the episode had already ended."""
        return self._end(session, reason, expired=False)

    def refuse(self, session: Session, reason: str) -> None:
        """Bad input on an open episode: log, count, close that connection with ``reason``."""
        if session.gone is not None:
            return
        self.refuse_input(session.connection.transport, reason, peer=session.peer)
        reason = f"refused: {reason}"
        self._end(session, reason, expired=False)
        session.connection.close(reason)

    def refuse_input(self, transport: str, reason: str, **fields: object) -> None:
        """Log and count bad input that belongs to no open episode (or just refused)."""
        self.refused[reason.partition(":")[0]] += 1
        _logger.warning(f"heartbeat_monitor.{transport}.peer_refused", reason=reason, **fields)

    # -- internals -------------------------------------------------------------------------

    def _expired(self, event: Expired) -> None:
        session = event.key
        if not isinstance(session, Session):
            return  # someone else's key on a shared monitor
        reason = f"expired: silent for {event.expired_at - event.last_beat:.3f} s"
        if self._end(session, reason, expired=True):
            session.connection.close(reason)

    def _end(self, session: Session, reason: str, *, expired: bool) -> bool:
        if session.gone is not None:
            return False
        session.gone = reason
        if not expired:
            self.monitor.untrack(session)
        sessions = self._sessions
        if sessions.get(session.peer) is session:
            del sessions[session.peer]
        transport = session.connection.transport
        _logger.info(
            f"heartbeat_monitor.{transport}.peer_gone",
            peer=session.peer,
            episode=session.episode,
            reason=reason,
        )
        event = PeerGone(key=session.peer, episode=session.episode, reason=reason, expired=expired)
        for callback in self._callbacks:
            try:
                callback(event)
            except Exception:
                _logger.exception(
                    "heartbeat_monitor.callback_failed", callback=repr(callback), peer=session.peer
                )
        if self.notify_others and sessions:
            notice = {"type": "gone", "peer": session.peer, "reason": reason}
            for other in tuple(sessions.values()):
                other.connection.send(notice)
        return True


# -- a connection with an outgoing queue (shared by the stream transports) -----------------


class QueuedConnection(abc.ABC):
    """A :class:`Connection` whose ``send``/``close`` feed one writer task (:meth:`run`).

    Subclasses implement ``_write`` (a batch of encoded messages) and ``_end`` (the
    transport's close with a reason). At most ``max_queue`` notices wait; more
    are dropped (a peer that does not read must not grow the server's memory).
    ``_end`` is given ``close_timeout`` seconds before :meth:`run` returns anyway.
    """

    transport: ClassVar[str] = "stream"

    def __init__(self, *, max_queue: int = 1024, close_timeout: float = 1.0) -> None:
        self._queue: deque[str] = deque()
        self._max_queue = max_queue
        self._close_timeout = close_timeout
        self._closing: str | None = None
        self._wake = anyio.Event()
        self.dropped = 0

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

    async def run(self, *, then_cancel: anyio.CancelScope | None = None) -> None:
        """Write queued notices until closed; then close the transport with the reason.

        ``then_cancel``: a scope to cancel afterwards (the connection's reader).
        """
        queue = self._queue
        try:
            while True:
                if queue:
                    batch = list(queue)
                    queue.clear()
                    await self._write(batch)
                    continue
                if self._closing is not None:
                    break
                await self._wake.wait()
                self._wake = anyio.Event()
        except Exception as exc:  # the peer went away while we wrote: the reader reports it
            _logger.debug(f"heartbeat_monitor.{self.transport}.write_failed", error=repr(exc))
        with anyio.move_on_after(self._close_timeout, shield=True):
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
    :func:`serve_connection`); ``bad`` when the transport refused the peer's input
    (an oversized or malformed frame)."""

    def __init__(self, reason: str, *, bad: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.bad = bad


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

    Waits ``hello_timeout`` for the hello, opens the episode, feeds every message
    to the hub, and ends the episode when ``receive`` raises :class:`ConnectionEnded`.
    Runs the connection's writer alongside; returns once the connection is closed.
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
        session = hub.open(peer, connection)
        if session is None:
            connection.close("refused: peer id in use")
            return
        try:
            while True:
                try:
                    data = await receive()
                except ConnectionEnded as exc:
                    if exc.bad:
                        hub.refuse(session, exc.reason)
                    else:
                        hub.close(session, exc.reason)
                        connection.close(exc.reason)
                    return
                if not hub.receive(session, data):
                    return  # the hub ended the episode and is closing the connection
        finally:
            if session.gone is None:  # cancelled: the server is stopping
                hub.close(session, "server shutdown")


# -- the in-memory transport, for tests ----------------------------------------------------


@final
class MemoryClient:
    """A peer of :class:`MemoryTransport`: ``send`` what a real client would, read ``inbox``."""

    transport = "memory"

    def __init__(self, hub: PeerHub, peer: str) -> None:
        self.peer = peer
        self._hub = hub
        #: Every message the server sent to this peer, in order.
        self.inbox: list[Mapping[str, object]] = []
        #: The reason the server closed this connection, once it has.
        self.closed: str | None = None
        self.session = hub.open(peer, self)

    def send(self, message: Mapping[str, object]) -> None:  # server -> peer
        if self.closed is None:
            self.inbox.append(message)

    def close(self, reason: str) -> None:  # server ends the connection
        if self.closed is None:
            self.closed = reason
            if self.session is not None:
                self._hub.close(self.session, reason)

    def deliver(self, data: bytes | str) -> bool:
        """Peer -> server: one raw message."""
        return self.session is not None and self._hub.receive(self.session, data)

    def beat(self) -> bool:
        return self.deliver('{"type":"beat"}')

    def disconnect(self, reason: str = "closed by peer") -> None:
        """The peer closes its end."""
        self.close(reason)


@final
class MemoryTransport:
    """A transport with no I/O: ``connect(peer)`` returns a :class:`MemoryClient`."""

    name: ClassVar[str] = "memory"

    def __init__(self) -> None:
        self.hub: PeerHub | None = None

    async def serve(
        self,
        hub: PeerHub,
        *,
        task_status: anyio.abc.TaskStatus[tuple[str, int]] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        self.hub = hub
        task_status.started(("memory", 0))
        await anyio.sleep_forever()

    def connect(self, peer: str) -> MemoryClient:
        if self.hub is None:
            raise RuntimeError("MemoryTransport.serve() has not started")
        return MemoryClient(self.hub, peer)
