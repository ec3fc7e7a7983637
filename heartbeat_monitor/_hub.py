"""The hub: the one place where a peer's life is decided, for every transport.

Theory of operation
===================

A transport translates its connections into a few calls and nothing else::

    link = hub.open(connection, peer)     a connection is identified as ``peer``
    hub.receive(link, data) / hub.beat(link)    it sent something: beat (or refuse)
    hub.join(link, room) / hub.leave(link, room)    it entered or left a room
    hub.close(link, reason)               it ended (the client left, the socket broke)
    hub.refuse(link, reason)              it sent bad input: end it with ``refused: <kind>``
    hub.refuse_input(transport, reason)   bad input that belongs to no link (counted, logged)

The hub answers through the connection (``send`` a message, ``close`` with a
reason) and tells the other peers through one :class:`Audience`.

An **episode** is one tracking of a peer, from its first connection to its
end; it is the monitor's key. A peer id has at most one open episode. A second
connection with the same id joins it when the transport opened it ``shared``
(an authenticated identity, e.g. several browser tabs of one user) and is
refused as ``peer id in use`` otherwise (an unauthenticated hello cannot take
over or keep alive someone else's peer). Each connection of an episode is a
:class:`Link`.

An episode ends **exactly once**, synchronously, in :meth:`PeerHub._end` —
whichever comes first of: its last link closing, a refusal of its last link,
expiry by the monitor, :meth:`PeerHub.end`, or :meth:`PeerHub.close_all`. The
end is marked before anything else happens, so every later path finds it
ended and stops. Then, once: every remaining connection is asked to close
with the reason; its connections leave the presence of their rooms (the
:class:`Roster` tells each room in one diff per window); its :class:`PeerGone`
is published (:mod:`._notices`: gates, ``on_gone``, then ``peer_gone`` if
``notify`` asks for it).

Reasons are one vocabulary across transports (:class:`Reason`).
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Mapping
from typing import final

import structlog

from ._episode import (
    Audience,
    Connection,
    Episode,
    GoneCallback,
    Link,
    OpenCallback,
    PeerGone,
    PeerOpened,
    Reason,
)
from ._errors import PeerError
from ._events import Expired
from ._hubstate import HubState, Notify
from ._rooms import check_meta
from ._wire import decode_message

__all__ = (  # the words of the hub (from ._episode) are re-exported with it
    "Audience",
    "Connection",
    "Episode",
    "GoneCallback",
    "Link",
    "Notify",
    "OpenCallback",
    "PeerGone",
    "PeerHub",
    "PeerOpened",
    "Reason",
)

_logger = structlog.get_logger("heartbeat_monitor")


@final
class PeerHub(HubState):
    """Episodes, identities, refusals and ends for every transport of one monitor.

    ``PeerHub(monitor)`` registers itself for the monitor's expiries. Options:

    * ``max_rate``: messages a connection may send per second. A connection
      over the limit for two one-second windows in a row is a flood and is
      refused; a burst that waited in socket buffers during a stall of the
      server is one window, not a flood, and its beats still count;
    * ``min_beat_gap``: beats closer together than this are not passed to the
      monitor (they prove nothing new); ``max_size``: largest message, bytes;
    * ``timeout``: this hub's peers' timeout, if not the monitor's;
    * ``notify``: what the others are told: ``"presence"`` (batched diffs, see
      :class:`Roster`), ``"peer_gone"`` (one message per departure per
      recipient), ``"both"`` or ``"none"``; ``scope``: who hears ``peer_gone``:
      the departed peer's rooms (``"rooms"``) or every connection (``"all"``);
    * ``room``: the room every connection enters when it opens (the stream
      transports have no rooms of their own; ``None``: none);
    * ``diff_interval``, ``leave_grace``, ``presence_rooms``: see :class:`Roster`;
    * ``audience``: how to tell them (default: each connection's ``send``).
    """

    __slots__ = ()

    # -- what transports call --------------------------------------------------------------

    def open(
        self,
        connection: Connection,
        peer: Hashable,
        *,
        shared: bool = False,
        meta: Mapping[str, object] | None = None,
    ) -> Link | None:
        """``connection`` is identified as ``peer``: its link, or ``None`` if refused.

        A new episode begins unless ``peer`` has an open one: a ``shared`` one (an
        authenticated identity) gains this connection, which counts as a beat;
        otherwise the id is in use and the connection is refused (``None``; the
        refusal is counted and logged, the caller closes the connection). While the
        server is overloaded (``monitor.overload``) every new connection is refused
        at once: counted as ``overloaded``, logged, and closed with the reason.
        ``meta``: this connection's presence fields (a small JSON object; a bad
        one is a :class:`ConfigurationError`, raised before anything changes).
        The connection enters the hub's ``room``, if any.
        """
        fields = check_meta(meta)
        overloaded = self.monitor.overload.refusal()
        if overloaded is not None:
            self.refuse_input(connection.transport, overloaded, peer=peer)
            connection.close(f"refused: {overloaded}")
            return None
        episode = self._episodes.get(peer)
        now = self._clock.now()
        if episode is not None:
            if not (shared and episode.shared):
                self.refuse_input(connection.transport, "peer id in use", peer=peer)
                return None
            link = Link(connection, episode, now)
            episode.add(link)
            self.monitor.beat(episode)
        else:
            self._number += 1
            episode = Episode(peer, self._number, shared=shared)
            link = Link(connection, episode, now)
            episode.add(link)
            self._episodes[peer] = episode
            self.monitor.track(episode, timeout=self._timeout)
            _logger.debug(
                f"heartbeat_monitor.{connection.transport}.peer_opened",
                peer=peer,
                episode=episode.number,
            )
            if self._open_callbacks:
                event = PeerOpened(key=peer, episode=episode.number, transport=connection.transport)
                call = self._runner.call
                for callback in self._open_callbacks:
                    call(callback, event)
        self.roster.opened(link, fields)
        if self.room is not None:
            self.join(link, self.room)
        return link

    def receive(self, link: Link, data: bytes | str) -> bool:
        """A wire message from the peer: beat, or refuse it (closing the connection).

        ``True`` while the link stays open (keep reading), ``False`` once it ended.
        """
        if link.episode.reason is not None:
            return False
        try:
            message = decode_message(data, max_size=self.max_size)
            claimed = message.get("peer")
            if claimed is not None and claimed != link.episode.peer:
                raise PeerError(f"spoofed: beat for peer {claimed!r:.60} on {link.episode.peer!r}")
            sync = message["type"] == "presence_sync"
            room = message.get("room") if sync else None
            if room is not None and not isinstance(room, str):
                raise PeerError(f"wrong type: 'room' must be a string, got {type(room).__name__}")
        except PeerError as exc:
            self.refuse(link, str(exc))
            return False
        self.beat(link)
        if link.ended:
            return False
        if sync:
            self.sync(link, room)
        return True

    def beat(self, link: Link) -> bool:
        """Traffic from the peer: ``True`` if it counted as a beat.

        A second one-second window in a row over ``max_rate`` refuses the
        connection as a flood; beats closer than ``min_beat_gap`` are not counted.
        """
        now = self._now()
        max_rate = self.max_rate
        if max_rate is not None:
            if now - link.window_start >= 1.0:
                link.over = link.over + 1 if link.window_count > max_rate else 0
                link.window_start = now
                link.window_count = 0
            link.window_count += 1
            if link.window_count > max_rate and link.over:
                self.refuse(link, f"flood: more than {max_rate} messages per second")
                return False
        gap = self.min_beat_gap
        if gap:
            if now - link.last_beat < gap:
                return False
            link.last_beat = now
        if self.monitor.beat_at(link.episode, now):  # one clock read: rate window and beat
            self.beats += 1
            return True
        return False

    def close(self, link: Link, reason: str, *, detail: str = "") -> bool:
        """The connection ended (``reason`` from :class:`Reason`); ``False`` if already ended.

        The episode ends with ``reason`` when this was its last connection.
        """
        episode = link.episode
        if episode.reason is not None or not episode.has(link):
            return False
        if len(episode.links) > 1:
            episode.discard(link)
            self.roster.drop(link, reason, grace=True)
            return True
        return self._end(episode, reason, detail=detail)

    def refuse(self, link: Link, reason: str) -> None:
        """Bad input on ``link``: count and log it, end the link, close its connection.

        ``reason`` starts with the kind (``"malformed: not JSON"``); the episode
        ends with ``refused: <kind>`` when this was its last connection, and the
        peer is told the whole reason.
        """
        episode = link.episode
        if episode.reason is not None or not episode.has(link):
            return
        connection = link.connection
        self.refuse_input(connection.transport, reason, peer=episode.peer)
        told = f"refused: {reason}"
        if len(episode.links) > 1:
            episode.discard(link)
            self.roster.drop(link, Reason.refused(reason), grace=False)
        else:
            self._end(episode, Reason.refused(reason), detail=reason, close=False)
        connection.close(told)

    def refuse_input(self, transport: str, reason: str, **fields: object) -> None:
        """Count and log (paced) bad input that belongs to no link, or to one being refused."""
        self.refused.add(transport, reason, **fields)

    def join(self, link: Link, room: Hashable) -> None:
        """``link``'s connection is in ``room``: present there (if watched), told of it."""
        if link.ended:
            return
        if link.rooms is None:
            link.rooms = {room}
        elif room in link.rooms:
            return
        else:
            link.rooms.add(room)
        self.roster.add(link, room)

    def leave(self, link: Link, room: Hashable) -> None:
        """``link``'s connection left ``room``."""
        if link.rooms is not None and room in link.rooms and not link.ended:
            link.rooms.discard(room)
            self.roster.remove(link, room, Reason.LEFT_ROOM)

    def sync(self, link: Link, room: Hashable | None = None) -> bool:
        """The client asked ``presence_sync``: a fresh ``presence_state`` of ``room`` (or of
        each of its rooms) at the next flush; ``False`` if it is in no such watched room."""
        return not link.ended and self.roster.sync(link, room)

    def retime(
        self, episode: Episode, timeout: float | None, *, expiry: str = Reason.HEARTBEAT_TIMEOUT
    ) -> bool:
        """Hold ``episode`` to ``timeout`` (``None``: the hub's own) from now on.

        For a message from the peer that changes how long it may stay silent
        (a browser page saying it is hidden): it counts as a beat. If the
        monitor expires the episode under this timeout, it ends with
        ``expiry``. ``False`` if the episode has ended.
        """
        if episode.reason is not None or self._episodes.get(episode.peer) is not episode:
            return False
        episode.expiry = expiry
        self.monitor.track(episode, timeout=self._timeout if timeout is None else timeout)
        return True

    # -- what applications call ------------------------------------------------------------

    def update_meta(
        self, peer: Hashable, meta: Mapping[str, object], *, conn: str | None = None
    ) -> bool:
        """Replace ``peer``'s presence fields (of its connection ``conn`` only, if given).

        The rooms are told in their next diff. ``False`` if ``peer`` has no
        connection (nor a held one) here; a bad ``meta`` is a :class:`ConfigurationError`.
        """
        fields = check_meta(meta)
        episode = self._episodes.get(peer)
        links = [] if episode is None else episode.links
        if conn is not None:
            links = [link for link in links if link.conn == conn]
        return self.roster.update(peer, fields, links, conn=conn)

    def end(self, peer: Hashable, reason: str = Reason.SERVER_DISCONNECT) -> bool:
        """End ``peer``'s episode now, closing its connections; ``False`` if none is open."""
        episode = self._episodes.get(peer)
        return episode is not None and self._end(episode, reason)

    def close_all(
        self,
        reason: str = Reason.SERVER_SHUTDOWN,
        *,
        transport: str | None = None,
        notify: bool = False,
    ) -> int:
        """End every open episode (of one ``transport``, or all): the server is stopping.

        Each gets its one :class:`PeerGone`; the others are told only with
        ``notify=True`` (on one node everyone is leaving; in a cluster they are not).
        """
        ended = 0
        for episode in self.episodes():
            if transport is None or any(
                link.connection.transport == transport for link in episode.links
            ):
                ended += self._end(episode, reason, tell=notify)
        return ended

    def announce(self, event: PeerGone, *, rooms: Collection[Hashable] | None = None) -> None:
        """Publish a departure that has no local episode (a peer of a dead node, say).

        The ``on_gone`` callbacks run and the others are told, as for a local end;
        gates are skipped (whoever calls this has decided).
        """
        self._departures.publish(event, rooms, (), tell=True, gated=False)

    # -- the end of an episode -------------------------------------------------------------

    def _expired(self, event: Expired) -> None:
        episode = event.key
        if type(episode) is not Episode or self._episodes.get(episode.peer) is not episode:
            return  # someone else's key on a shared monitor, or another hub's
        silent = event.expired_at - event.last_beat
        self._end(episode, episode.expiry, detail=f"silent for {silent:.3f} s", expired=True)

    def _end(
        self,
        episode: Episode,
        reason: str,
        *,
        detail: str = "",
        expired: bool = False,
        close: bool = True,
        tell: bool = True,
    ) -> bool:
        """The one place an episode ends: ``True`` the first time only."""
        if episode.reason is not None:
            return False
        episode.reason = reason
        if not expired:
            self.monitor.untrack(episode)
        if self._episodes.get(episode.peer) is episode:
            del self._episodes[episode.peer]
        self.gone[reason] += 1
        links, episode.links = episode.links, ()
        rooms: set[Hashable] = set()
        connections: list[Connection] = []
        for link in links:
            connections.append(link.connection)
            if link.rooms:
                rooms |= link.rooms
        grace = not expired
        for link in links:
            self.roster.drop(link, reason, grace=grace, tell=tell)
        transport = connections[0].transport if connections else "hub"
        _logger.info(
            "heartbeat_monitor.peer_gone",
            transport=transport,
            peer=episode.peer,
            episode=episode.number,
            reason=reason,
            **({"detail": detail} if detail else {}),
        )
        if close:
            timeout = reason.startswith(Reason.HEARTBEAT_TIMEOUT)  # also "... (hidden)"
            told = f"{reason}: {detail}" if detail and not timeout else reason
            for connection in connections:
                connection.close(told)
        event = PeerGone(
            key=episode.peer, episode=episode.number, reason=reason, expired=expired, detail=detail
        )
        scope = rooms if self.scope == "rooms" else None
        self._departures.publish(event, scope, connections, tell=tell)
        return True

    def __repr__(self) -> str:
        return f"<PeerHub peers={len(self._episodes)} refused={dict(self.refused)}>"
