"""What the hub's lifecycle is made of: episodes and links, departures, the reason vocabulary.

The types a transport and an application see; the decisions are in :mod:`._hub`.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable, Collection, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Final, Protocol, final

from ._events import PeerEvent
from ._refusals import kind_of

__all__ = (
    "Audience",
    "Connection",
    "Episode",
    "Gate",
    "GoneCallback",
    "Link",
    "Namer",
    "OpenCallback",
    "PeerGone",
    "PeerOpened",
    "Reason",
)


@final
class Reason:
    """Why an episode ended: one vocabulary for every transport (see docs/reasons.md)."""

    #: Silent for longer than its timeout: the monitor expired it.
    HEARTBEAT_TIMEOUT: Final = "heartbeat timeout"
    #: Silent for longer than the longer timeout it was held to while its page was hidden.
    HIDDEN_TIMEOUT: Final = "heartbeat timeout (hidden)"
    #: The client said goodbye (a clean close, a ``bye``, ``socket.disconnect()``).
    CLIENT_DISCONNECT: Final = "client disconnect"
    #: The connection ended without a goodbye (end of stream, a closed socket).
    TRANSPORT_CLOSE: Final = "transport close"
    #: The connection broke (a reset, a frame cut short).
    TRANSPORT_ERROR: Final = "transport error"
    #: The server is stopping.
    SERVER_SHUTDOWN: Final = "server shutdown"
    #: The application disconnected it (python-socketio's ``sio.disconnect(sid)``).
    SERVER_DISCONNECT: Final = "server disconnect"
    #: engine.io's own ping went unanswered (Socket.IO only).
    PING_TIMEOUT: Final = "ping timeout"
    #: Its node stopped beating into Redis; another node ended it.
    NODE_GONE: Final = "node gone"
    #: Its node was cut off from Redis too long to know it is still a cluster member.
    NODE_ISOLATED: Final = "node isolated"
    #: Bad input: ``refused: <kind>`` (``malformed``, ``oversized``, ``flood``, ...).
    REFUSED: Final = "refused"
    #: Presence only: the connection left the room, its episode goes on.
    LEFT_ROOM: Final = "left room"

    #: The ends of a connection that merely dropped: presence holds them for ``leave_grace``.
    DROPPED: Final = frozenset({CLIENT_DISCONNECT, TRANSPORT_CLOSE, TRANSPORT_ERROR})

    @staticmethod
    def refused(reason: str) -> str:
        """``"refused: <kind>"`` for a refusal reason such as ``"malformed: not JSON"``."""
        return f"refused: {kind_of(reason)}"


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerGone(PeerEvent):
    """An episode ended: exactly one per episode. ``key`` is the peer id."""

    #: Which episode of this peer id ended (1, 2, ... within one hub; 0 for a remote peer).
    episode: int
    #: Why, in the :class:`Reason` vocabulary.
    reason: str
    #: True when the monitor expired the peer (it went silent).
    expired: bool = False
    #: More about the reason, where there is more (what was malformed, for how long silent).
    detail: str = ""

    @property
    def peer(self) -> Hashable:
        """The peer id (the same as ``key``)."""
        return self.key


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerOpened(PeerEvent):
    """A new episode began (a peer id's first connection). ``key`` is the peer id."""

    episode: int
    #: The transport of its first connection.
    transport: str


#: A callback for each :class:`PeerGone` (plain or ``async def``; run by the callback runner).
GoneCallback = Callable[[PeerGone], object] | Callable[[PeerGone], Awaitable[object]]
#: A callback for each :class:`PeerOpened`.
OpenCallback = Callable[[PeerOpened], object] | Callable[[PeerOpened], Awaitable[object]]
#: An async check before a departure is published: ``False`` keeps it quiet.
Gate = Callable[[PeerGone], Awaitable[bool]]


class Connection(Protocol):
    """What the hub needs from one connection. Both methods return at once."""

    @property
    def transport(self) -> str:
        """The transport's name, for log events (``heartbeat_monitor.<transport>.*``)."""

    def send(self, message: Mapping[str, object]) -> None:
        """Queue a message to the peer (may be dropped if the peer does not read)."""

    def close(self, reason: str) -> None:
        """Start ending the connection, telling the peer ``reason`` where possible."""


class Audience(Protocol):
    """How the hub tells the others: given by the transport."""

    def tell(
        self,
        event: str,
        payload: Mapping[str, object],
        *,
        rooms: Collection[Hashable] | None,
        exclude: Collection[Connection],
    ) -> None:
        """Send ``event`` with ``payload`` to every connection in ``rooms`` (all: ``None``)."""

    def send(
        self, event: str, payload: Mapping[str, object], connections: Collection[Connection]
    ) -> None:
        """Send ``event`` with one ``payload`` to each of ``connections`` (encoded once)."""


class Namer(Protocol):
    """Who names a connection's presence slot (the roster)."""

    def new_conn(self) -> str:
        """A fresh ``conn`` ref."""


@final
class Episode:
    """One tracking of one peer, from its first connection to its end; the monitor's key.

    Hashed by identity, so a peer that comes back never shares state with its
    previous episode. Once ended it holds no connection.

    Memory (issue 15): an episode of one connection, the usual case, holds that
    :class:`Link` itself rather than a list of one (:attr:`links` is a tuple
    made on reading); two or more are a tuple.
    """

    __slots__ = ("_links", "_number", "expiry", "peer", "reason")

    def __init__(self, peer: Hashable, number: int, *, shared: bool) -> None:
        self.peer = peer
        self._number = number << 1 | shared  # one int for both (memory: issue 15)
        self._links: Link | tuple[Link, ...] = ()
        #: The reason it ended, once it has.
        self.reason: str | None = None
        #: The reason it ends with if the monitor expires it (see :meth:`PeerHub.retime`).
        self.expiry: str = Reason.HEARTBEAT_TIMEOUT

    @property
    def number(self) -> int:
        """Which episode of its hub this is (1, 2, ...)."""
        return self._number >> 1

    @property
    def shared(self) -> bool:
        """Whether other connections of the same peer id may join it (an identity)."""
        return bool(self._number & 1)

    @property
    def links(self) -> tuple[Link, ...]:
        """The open connections of this episode (a snapshot)."""
        links = self._links
        return (links,) if type(links) is Link else links

    @links.setter
    def links(self, links: Iterable[Link]) -> None:
        links = tuple(links)
        self._links = links[0] if len(links) == 1 else links

    def add(self, link: Link) -> None:
        """``link`` is a connection of this episode now."""
        links = self._links
        self._links = link if links == () else (*self.links, link)

    def discard(self, link: Link) -> None:
        """``link`` is no longer a connection of this episode."""
        self.links = [other for other in self.links if other is not link]

    def has(self, link: Link) -> bool:
        """Whether ``link`` is one of this episode's open connections."""
        links = self._links
        return links is link or (type(links) is tuple and link in links)

    def __repr__(self) -> str:
        return f"Episode({self.peer!r}, {self.number})"


#: "Never beat": the ``last_beat`` of a new link (one float shared by all).
_NEVER: Final = -math.inf


@final
class Link:
    """One connection of an episode: what a transport holds and hands back to the hub.

    Memory (issue 15): no per-link object is made until it is needed; the
    presence meta of a connection without fields of its own is built on its
    first reading (when it enters a watched room).
    """

    __slots__ = (
        "_presence",
        "connection",
        "episode",
        "last_beat",
        "over",
        "rooms",
        "window_count",
        "window_start",
    )

    def __init__(self, connection: Connection, episode: Episode, now: float) -> None:
        self.connection = connection
        self.episode = episode
        #: Its ``conn`` (a str), or its meta (which holds it), or who names it when asked.
        self._presence: str | Mapping[str, object] | Namer = ""
        #: The rooms this connection is in (``None``: none yet).
        self.rooms: set[Hashable] | None = None
        self.window_start = now
        self.window_count = 0
        #: Consecutive one-second windows over ``max_rate`` so far.
        self.over = 0
        #: When this connection's last counted beat was (for ``min_beat_gap``).
        self.last_beat = _NEVER

    @property
    def conn(self) -> str:
        """This connection's presence ref (the ``"conn"`` of its metas), given by the roster."""
        held = self._presence
        if isinstance(held, str):
            return held
        if isinstance(held, Mapping):
            return str(held["conn"])
        conn = self._presence = held.new_conn()
        return conn

    @conn.setter
    def conn(self, conn: str) -> None:
        self._presence = conn

    def name_later(self, namer: Namer) -> None:
        """Its ``conn`` is ``namer.new_conn()``, asked when first read (memory: issue 15)."""
        self._presence = namer

    @property
    def meta(self) -> Mapping[str, object]:
        """Its presence meta: ``{"conn": ..., **the user's fields}`` (replaced, never mutated)."""
        held = self._presence
        if isinstance(held, Mapping):
            return held
        meta = self._presence = {"conn": self.conn}
        return meta

    @meta.setter
    def meta(self, meta: Mapping[str, object]) -> None:
        """Its meta: its ``"conn"`` must be this link's ``conn``."""
        self._presence = meta

    @property
    def peer(self) -> Hashable:
        return self.episode.peer

    @property
    def ended(self) -> bool:
        """Whether this link no longer beats for its episode."""
        episode = self.episode
        return episode.reason is not None or not episode.has(self)

    def __repr__(self) -> str:
        return f"Link({self.episode.peer!r}, {self.connection.transport})"
