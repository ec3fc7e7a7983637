"""Presence bookkeeping, sans I/O: who is in each room, what its clients saw, held slots.

The :class:`~heartbeat_monitor.Roster` drives this book (it owns the clock, the
audience and the callbacks); the book only records and computes. Times are
passed in; nothing here sends, sleeps or logs.

* Per room, each present peer has one meta per connection slot (``conn ->
  meta``; a meta is ``{"conn": ref, **the user's fields}``, replaced, never
  mutated).
* The first time a peer is touched in a window, the book notes what the
  room's clients saw of it (``prior``). A flush compares that with now:
  absent -> present is a join, present -> absent a leave (with the reason of
  its last removal), other metas an update, the same as before nothing. So no
  peer joins or leaves twice, whatever happened in between.
* A held slot (a dropped connection within its grace) stays a member of its
  rooms until :meth:`Book.release` passes its deadline; a new connection of
  the same peer resumes it (:meth:`Book.resume`). Deadlines sit in one heap.
"""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass
from typing import Final, Literal, final

from ._episode import Connection, Reason
from ._errors import ConfigurationError
from ._events import PeerEvent

__all__ = (
    "Book",
    "PeerJoined",
    "PeerLeft",
    "PresenceChange",
    "check_meta",
    "seconds",
    "wire_id",
)

Meta = Mapping[str, object]
#: Longest encoded user meta of one connection, in bytes.
MAX_META_SIZE: Final = 1024


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerJoined(PeerEvent):
    """A peer became present in a room (as the room's clients were told). ``key``: the peer."""

    room: Hashable
    #: Its metas, one per connection.
    metas: tuple[Meta, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerLeft(PeerEvent):
    """A peer stopped being present in a room (as the room's clients were told)."""

    room: Hashable
    #: The metas it had.
    metas: tuple[Meta, ...]
    #: Why its last connection went (the :class:`~heartbeat_monitor.Reason` vocabulary).
    reason: str


@dataclass(frozen=True, slots=True, kw_only=True)
class PresenceChange:
    """A local connection's presence in a room changed (see ``Roster.subscribe``)."""

    #: ``"put"``: present with ``meta`` (new or changed); ``"drop"``: gone for ``reason``.
    kind: Literal["put", "drop"]
    room: Hashable
    peer: Hashable
    conn: str
    meta: Meta | None = None
    reason: str = ""


def wire_id(peer: Hashable) -> str:
    """A peer id as a JSON object key: itself if a string, else ``str(peer)``."""
    return peer if isinstance(peer, str) else str(peer)


def check_meta(fields: object, *, max_size: int = MAX_META_SIZE) -> dict[str, object]:
    """A user's meta fields: a JSON object with string keys (not ``"conn"``), small."""
    if fields is None:
        return {}
    if not isinstance(fields, Mapping) or not all(isinstance(key, str) for key in fields):
        raise ConfigurationError(f"a meta must be a mapping with string keys, not {fields!r:.80}")
    if "conn" in fields:
        raise ConfigurationError("a meta may not set 'conn': the roster names connections")
    try:
        size = len(json.dumps(fields, separators=(",", ":")))
    except (TypeError, ValueError) as exc:
        raise ConfigurationError(f"a meta must be JSON-serializable: {exc}") from None
    if size > max_size:
        raise ConfigurationError(f"a meta must encode to at most {max_size} bytes, not {size}")
    return dict(fields)


def seconds(name: str, value: object, *, zero: bool) -> float:
    """``value`` as seconds, finite and >= 0 (> 0 unless ``zero``)."""
    if (
        isinstance(value, bool)
        or not isinstance(value, int | float)
        or not (0 <= value < math.inf)
        or (value == 0 and not zero)
    ):
        bound = ">= 0" if zero else "> 0"
        raise ConfigurationError(f"{name} must be finite seconds {bound}, not {value!r}")
    return float(value)


@final
class Room:
    __slots__ = (
        "connections",
        "members",
        "name",
        "owed",
        "prior",
        "reasons",
        "remote",
        "restate",
        "seq",
    )

    def __init__(self, name: Hashable) -> None:
        self.name = name
        #: peer -> conn -> meta: who is present now (held slots included).
        self.members: dict[Hashable, dict[str, Meta]] = {}
        self.connections = 0
        #: Of those, other nodes' (a cluster's): present, but not this node's to tell.
        self.remote = 0
        #: The number of the last diff sent.
        self.seq = 0
        #: peer -> its metas as the clients last saw them (``None``: absent); this window.
        self.prior: dict[Hashable, tuple[Meta, ...] | None] = {}
        #: peer -> the reason of its last removal, this window.
        self.reasons: dict[Hashable, str] = {}
        #: Connections owed a ``presence_state`` at the next flush (an ordered set), and
        #: whether the whole room is (its ``partial`` changed).
        self.owed: dict[Connection, None] = {}
        self.restate = False

    def count(self) -> dict[str, int]:
        return {"peers": len(self.members), "connections": self.connections}


@final
class Held:
    """The slots of one dropped connection, kept present until ``until``."""

    __slots__ = ("conn", "peer", "reason", "rooms", "until")

    def __init__(self, conn: str, peer: Hashable, until: float, reason: str) -> None:
        self.conn = conn
        self.peer = peer
        self.until = until
        self.reason = reason
        self.rooms: set[Hashable] = set()


@final
class Flushed:
    """What one room has to say after a flush."""

    __slots__ = ("diff", "events", "owed", "state")

    def __init__(self) -> None:
        self.diff: dict[str, object] | None = None
        self.state: dict[str, object] | None = None
        self.owed: tuple[Connection, ...] = ()
        self.events: list[PeerJoined | PeerLeft] = []


@final
class Book:
    """Rooms, their members and pending changes, and the held slots (see the module notes).

    ``local``: the prefix of this node's conns; ``on_change`` is called for each
    change of a local slot (set it only when someone listens).
    """

    __slots__ = (
        "dirty",
        "dirty_since",
        "heap",
        "held",
        "held_by_peer",
        "last_flush",
        "local",
        "named",
        "on_change",
        "rooms",
    )

    def __init__(self, local: str) -> None:
        self.local = local
        #: Connections named so far (``conn`` refs are ``<local><number>``).
        self.named = 0
        self.on_change: Callable[[PresenceChange], None] | None = None
        self.rooms: dict[Hashable, Room] = {}
        #: Rooms with something to tell at the next flush (an ordered set).
        self.dirty: dict[Room, None] = {}
        #: When the first of those changes came (``None``: nothing pending).
        self.dirty_since: float | None = None
        self.last_flush = -math.inf
        self.held: dict[str, Held] = {}
        #: peer -> its held conns, oldest first (a new connection resumes the oldest).
        self.held_by_peer: dict[Hashable, list[str]] = {}
        self.heap: list[tuple[float, str]] = []

    def new_conn(self) -> str:
        """A fresh ``conn`` ref of this node."""
        self.named += 1
        return f"{self.local}{self.named}"

    def room(self, name: Hashable) -> Room:
        entry = self.rooms.get(name)
        if entry is None:
            entry = self.rooms[name] = Room(name)
        return entry

    def mark(self, entry: Room, now: float) -> None:
        """``entry`` has something to tell at the next flush."""
        if entry not in self.dirty:
            self.dirty[entry] = None
        if self.dirty_since is None:
            self.dirty_since = now

    def _touch(self, entry: Room, peer: Hashable, now: float) -> dict[str, Meta] | None:
        """Note what the clients saw of ``peer`` before its first change this window."""
        metas = entry.members.get(peer)
        if peer not in entry.prior:
            entry.prior[peer] = None if metas is None else tuple(metas.values())
        self.mark(entry, now)
        return metas

    def put(self, entry: Room, peer: Hashable, conn: str, meta: Meta, now: float) -> None:
        """``conn`` of ``peer`` is present in ``entry`` with ``meta`` (new or changed)."""
        metas = self._touch(entry, peer, now)
        if metas is None:
            metas = entry.members[peer] = {}
        if conn not in metas:
            entry.connections += 1
            if not conn.startswith(self.local):
                entry.remote += 1
        metas[conn] = meta
        if self.on_change is not None and conn.startswith(self.local):
            self.on_change(
                PresenceChange(kind="put", room=entry.name, peer=peer, conn=conn, meta=meta)
            )

    def remove(
        self, entry: Room, peer: Hashable, conn: str, reason: str, now: float, *, tell: bool
    ) -> bool:
        """``conn`` of ``peer`` left ``entry``; ``False`` if it was not there.

        ``tell=False``: removed unseen (the server is stopping). The clients'
        view is then wrong, so the room skips a number: the next diff shows a gap.
        """
        metas = entry.members.get(peer)
        if metas is None or conn not in metas:
            return False
        if tell:
            self._touch(entry, peer, now)
            entry.reasons[peer] = reason
        del metas[conn]
        entry.connections -= 1
        if not conn.startswith(self.local):
            entry.remote -= 1
        if not metas:
            del entry.members[peer]
        if not tell:
            entry.prior.pop(peer, None)
            entry.seq += 1
        if self.on_change is not None and conn.startswith(self.local):
            self.on_change(
                PresenceChange(kind="drop", room=entry.name, peer=peer, conn=conn, reason=reason)
            )
        return True

    # -- held slots ----------------------------------------------------------------------

    def hold(self, conn: str, peer: Hashable, reason: str, until: float) -> Held:
        """Keep ``conn``'s slots present until ``until`` (add its rooms to the result)."""
        held = self.held.get(conn)
        if held is None:
            held = self.held[conn] = Held(conn, peer, until, reason)
        else:
            held.until, held.reason = until, reason
        conns = self.held_by_peer.setdefault(peer, [])
        if conn not in conns:
            conns.append(conn)
        heapq.heappush(self.heap, (until, conn))
        return held

    def resume(self, peer: Hashable) -> str | None:
        """A new connection of ``peer``: the oldest of its held conns, if any, to take over."""
        conns = self.held_by_peer.get(peer)
        if not conns:
            return None
        conn = conns.pop(0)
        if not conns:
            del self.held_by_peer[peer]
        return conn

    def unhold(self, conn: str, room: Hashable) -> None:
        """``conn``'s slot in ``room`` is live again."""
        held = self.held.get(conn)
        if held is not None:
            held.rooms.discard(room)
            if not held.rooms:
                del self.held[conn]

    def release(self, now: float) -> None:
        """Held slots whose grace is over leave their rooms (with the reason of their drop)."""
        heap = self.heap
        while heap and heap[0][0] <= now:
            until, conn = heapq.heappop(heap)
            held = self.held.get(conn)
            if held is None or held.until != until:
                continue  # resumed, or held again later
            del self.held[conn]
            conns = self.held_by_peer.get(held.peer)
            if conns is not None and conn in conns:
                conns.remove(conn)
                if not conns:
                    del self.held_by_peer[held.peer]
            for room in held.rooms:
                entry = self.rooms.get(room)
                if entry is not None:
                    self.remove(entry, held.peer, conn, held.reason, now, tell=True)

    # -- flushing --------------------------------------------------------------------------

    def next_flush(self, interval: float, window: float) -> float | None:
        """When the next flush is due, or ``None``: ``interval`` after the first pending
        change, or a held slot's deadline; never sooner than ``window`` (``interval`` or
        stretched) after the last flush: a rate, not a delay after a quiet spell."""
        due = math.inf
        if self.dirty_since is not None:
            due = self.dirty_since + interval
        heap = self.heap
        while heap and self.held.get(heap[0][1]) is None:
            heapq.heappop(heap)  # resumed or released since
        if heap:
            due = min(due, heap[0][0])
        if due == math.inf:
            return None
        return max(due, self.last_flush + window)

    def take(self, now: float, *, release_until: float) -> list[Room]:
        """Start a flush at ``now``: release the held slots due, return the rooms to tell."""
        self.release(release_until)
        self.last_flush = now
        self.dirty_since = None
        dirty, self.dirty = self.dirty, {}
        return list(dirty)

    def restate(self, now: float) -> None:
        """Every room owes its whole audience a state at the next flush."""
        for entry in self.rooms.values():
            entry.restate = True
            self.mark(entry, now)

    def flush_room(self, entry: Room, *, partial: bool) -> Flushed:
        """One room's diff (``None`` if nothing changed), and a state if one is owed (to
        the whole room if it is restated: ``out.owed`` is then empty)."""
        out = Flushed()
        joins: dict[str, object] = {}
        leaves: dict[str, object] = {}
        updates: dict[str, object] = {}
        members = entry.members
        for peer, before in entry.prior.items():
            metas = members.get(peer)
            after = None if metas is None else tuple(metas.values())
            if after == before:
                continue
            key = wire_id(peer)
            if before is None:
                assert after is not None
                joins[key] = {"metas": list(after)}
                out.events.append(PeerJoined(key=peer, room=entry.name, metas=after))
            elif after is None:
                reason = entry.reasons.get(peer, Reason.LEFT_ROOM)
                leaves[key] = {"metas": list(before), "reason": reason}
                out.events.append(PeerLeft(key=peer, room=entry.name, metas=before, reason=reason))
            else:
                updates[key] = {"metas": list(after)}
        entry.prior.clear()
        entry.reasons.clear()
        count = entry.count()
        if joins or leaves or updates:
            entry.seq += 1
            out.diff = {
                "room": entry.name,
                "seq": entry.seq,
                "joins": joins,
                "leaves": leaves,
                "updates": updates,
                "count": count,
            }
        if entry.owed or entry.restate:
            out.owed = () if entry.restate else tuple(entry.owed)
            entry.owed, entry.restate = {}, False
            out.state = {
                "room": entry.name,
                "seq": entry.seq,
                "peers": {wire_id(p): {"metas": list(m.values())} for p, m in members.items()},
                "count": count,
            }
            if partial:
                out.state["partial"] = True
        if not members and self.rooms.get(entry.name) is entry:
            del self.rooms[entry.name]  # an empty room costs nothing (its seq restarts at 0)
        return out
