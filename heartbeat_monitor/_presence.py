"""Presence: who is in each watched room, with metadata, told as batched diffs.

Theory of operation
===================

The hub tells the :class:`Roster` when a connection enters a room
(:meth:`~Roster.add`), leaves it (:meth:`~Roster.remove`) or ends
(:meth:`~Roster.drop`). Per room the roster keeps each present peer's *metas*,
one per connection: ``{"conn": <ref>, **the user's fields}``. It tells a
room's connections what changed **at most once per room per window**
(``diff_interval``), however many came and went: N departures cost each
recipient one message per window, not N (``peer_gone``'s N x M).

* A room with a change gets one ``presence_diff`` ``{"room", "seq", "joins",
  "leaves", "updates", "count"}`` numbered ``seq + 1`` (the bookkeeping that
  makes "no peer joins or leaves twice" hold by construction is in
  :mod:`._rooms`). The connections that entered the room, or asked
  ``presence_sync``, since the last flush then get one ``presence_state``
  ``{"room", "seq", "peers", "count"}`` carrying that ``seq``: a client
  applies diffs ``seq + 1``, ``seq + 2``, ... and asks again on a gap.
* **Leave grace** (``leave_grace`` s): a connection that merely dropped
  (:data:`Reason.DROPPED`: not expired, refused or shut down) stays present,
  *held*, that long. A new connection of the same peer within the grace
  resumes the held slot (same ``"conn"``): with the same meta, the others see
  nothing at all. Deadlines are checked at the flushes: no timer per peer.
* **Adaptive window**: a flush that told T connections (a diff to a big
  room, states to newcomers) puts the next flush at least T / 5,000 s after
  it, up to 1 s (:attr:`Roster.window`): a storm in a room of M costs about
  5,000 messages a second, not 20 x M; rooms of up to 250 keep the 50 ms
  window. A change after a quiet spell is told ``diff_interval`` after it.
* One flush job at a time runs in the monitor's callback runner, sleeping
  until the next window or grace deadline; on a virtual clock (tests) the
  clock's moves drive the flushes instead. ``on_join`` / ``on_leave`` run at
  the flush, for what the rooms were told.

Cluster hooks (docs/presence.md): :meth:`Roster.subscribe` (local changes), :meth:`Roster.local`,
:meth:`Roster.put` / :meth:`Roster.discard` (others' slots), :attr:`Roster.partial`.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Awaitable, Callable, Collection, Hashable, Iterator
from typing import TYPE_CHECKING, Final, final

import anyio
import structlog

from ._clock import Clock, VirtualClock
from ._episode import Audience, Connection, Link, Reason
from ._errors import ConfigurationError
from ._rooms import Book, Meta, PeerJoined, PeerLeft, PresenceChange, check_meta, seconds

if TYPE_CHECKING:
    from ._callbacks import CallbackRunner

__all__ = ("JoinCallback", "LeaveCallback", "Roster")

_logger = structlog.get_logger("heartbeat_monitor")

#: A sleeping flush job wakes at least this often (it stays a short job of the runner).
_MAX_NAP: Final = 1.0
#: Adaptive windows: connections told per second at most, in all rooms (a flush that told
#: T makes the next window at least T / _TELL_RATE seconds, up to ``_MAX_WINDOW``).
_TELL_RATE: Final = 5000
_MAX_WINDOW: Final = 1.0

JoinCallback = Callable[[PeerJoined], object] | Callable[[PeerJoined], Awaitable[object]]
LeaveCallback = Callable[[PeerLeft], object] | Callable[[PeerLeft], Awaitable[object]]


@final
class Roster:
    """Who is present in each watched room, with metas; one diff per room per window.

    Made by the hub (``hub.roster``): ``diff_interval`` is the window (seconds),
    ``leave_grace`` how long a dropped connection stays present, ``rooms`` the
    watched rooms (``None``: every room), ``tell`` whether clients are sent
    diffs and states (the Python API and the callbacks work either way).
    """

    __slots__ = (
        "_audience",
        "_book",
        "_clock",
        "_join_callbacks",
        "_leave_callbacks",
        "_partial",
        "_prefix",
        "_runner",
        "_subscribers",
        "_ticking",
        "_unsubscribe",
        "_waiting_until",
        "_wake",
        "diff_interval",
        "diffs",
        "leave_grace",
        "notices",
        "tell",
        "watched",
        "window",
    )

    def __init__(
        self,
        audience: Callable[[], Audience],
        clock: Clock,
        runner: CallbackRunner,
        *,
        diff_interval: float = 0.05,
        leave_grace: float = 0.0,
        rooms: Collection[Hashable] | None = None,
        tell: bool = True,
    ) -> None:
        self.diff_interval = seconds("diff_interval", diff_interval, zero=False)
        self.leave_grace = seconds("leave_grace", leave_grace, zero=True)
        #: The current window: ``diff_interval``, stretched after a flush that told many.
        self.window = self.diff_interval
        #: The watched rooms (``None``: every room).
        self.watched = None if rooms is None else frozenset(rooms)
        self.tell = tell
        self._partial = False
        #: Diffs sent so far (all rooms).
        self.diffs = 0
        #: Presence messages told so far (diffs and states; per room or connection told).
        self.notices = 0
        self._audience = audience
        self._clock = clock
        self._runner = runner
        self._prefix = secrets.token_hex(3) + "."
        self._book = Book(self._prefix)
        self._join_callbacks: list[JoinCallback] = []
        self._leave_callbacks: list[LeaveCallback] = []
        self._subscribers: list[Callable[[PresenceChange], object]] = []
        self._ticking = False
        self._wake: anyio.Event | None = None
        self._waiting_until = math.inf
        self._unsubscribe = (
            clock.subscribe(self._clock_moved) if isinstance(clock, VirtualClock) else None
        )

    # -- reading ---------------------------------------------------------------------------

    def presence(self, room: Hashable) -> dict[Hashable, list[Meta]]:
        """``{peer: [meta, ...]}`` of ``room`` now (held and other nodes' slots included)."""
        entry = self._book.rooms.get(room)
        if entry is None:
            return {}
        return {peer: list(metas.values()) for peer, metas in entry.members.items()}

    def count(self, room: Hashable) -> dict[str, int]:
        """``{"peers": p, "connections": c}`` of ``room`` now."""
        entry = self._book.rooms.get(room)
        return {"peers": 0, "connections": 0} if entry is None else entry.count()

    def rooms(self) -> list[Hashable]:
        """The rooms with anyone present."""
        return [name for name, entry in self._book.rooms.items() if entry.members]

    def seq(self, room: Hashable) -> int:
        """The number of ``room``'s last diff."""
        entry = self._book.rooms.get(room)
        return 0 if entry is None else entry.seq

    @property
    def partial(self) -> bool:
        """``True`` while some node's presence cannot be read: states say ``"partial": true``.
        Each flip re-sends every room its state at the next flush (one message per room)."""
        return self._partial

    @partial.setter
    def partial(self, partial: bool) -> None:
        if partial != self._partial:
            self._partial = partial
            self._book.restate(self._clock.now())
            self._schedule()

    @property
    def pending(self) -> bool:
        """Whether some room has a change (or an owed state) not yet flushed."""
        return bool(self._book.dirty)

    @staticmethod
    def check(fields: object) -> dict[str, object]:
        """A connection's user fields, checked: a small JSON object with string keys, no
        ``"conn"`` (:class:`ConfigurationError` otherwise); ``None`` is ``{}``."""
        return check_meta(fields)

    def watches(self, room: Hashable) -> bool:
        watched = self.watched
        return watched is None or room in watched

    # -- callbacks and cluster hooks -------------------------------------------------------

    def on_join(self, callback: JoinCallback) -> JoinCallback:
        """Run ``callback(PeerJoined)`` for each join a room is told of (plain or async)."""
        if not callable(callback):
            raise ConfigurationError(f"on_join needs a callable, not {callback!r}")
        self._join_callbacks.append(callback)
        return callback

    def on_leave(self, callback: LeaveCallback) -> LeaveCallback:
        """Run ``callback(PeerLeft)`` for each leave a room is told of (plain or async)."""
        if not callable(callback):
            raise ConfigurationError(f"on_leave needs a callable, not {callback!r}")
        self._leave_callbacks.append(callback)
        return callback

    def subscribe(self, callback: Callable[[PresenceChange], object]) -> Callable[[], None]:
        """Call ``callback(change)`` inline for every change of a *local* slot; returns an
        unsubscribe function. (For a cluster: publish them to the other nodes.)"""
        self._subscribers.append(callback)
        self._book.on_change = self._publish

        def unsubscribe() -> None:
            if callback in self._subscribers:
                self._subscribers.remove(callback)
            if not self._subscribers:
                self._book.on_change = None

        return unsubscribe

    def local(self) -> Iterator[tuple[Hashable, Hashable, Meta]]:
        """Every local slot now, as ``(room, peer, meta)`` (for a full rewrite elsewhere)."""
        for name, entry in self._book.rooms.items():
            for peer, metas in entry.members.items():
                for conn, meta in metas.items():
                    if conn.startswith(self._prefix):
                        yield name, peer, meta

    def put(self, room: Hashable, peer: Hashable, meta: Meta) -> None:
        """Another node's connection ``meta["conn"]`` is present in ``room`` (or changed)."""
        conn = meta.get("conn")
        if not isinstance(conn, str) or conn.startswith(self._prefix):
            raise ConfigurationError(f"put() needs another node's meta with a 'conn', not {meta!r}")
        if self.watches(room):
            self._book.put(self._book.room(room), peer, conn, meta, self._clock.now())
            self._schedule()

    def discard(self, room: Hashable, peer: Hashable, conn: str, reason: str) -> bool:
        """Another node's connection ``conn`` left ``room``; ``False`` if it was not there."""
        entry = self._book.rooms.get(room)
        if entry is None or not self._book.remove(
            entry, peer, conn, reason, self._clock.now(), tell=True
        ):
            return False
        self._schedule()
        return True

    # -- what the hub calls ----------------------------------------------------------------

    def opened(self, link: Link, fields: Meta) -> None:
        """A new connection: its ``conn`` (a held one of its peer's, if any) and meta."""
        conn = self._book.resume(link.episode.peer)
        if conn is None and not fields:  # its conn and meta are made when first read
            return link.name_later(self._book)  # (memory: issue 15)
        link.conn = conn = self._book.new_conn() if conn is None else conn
        if fields:  # else ``{"conn": conn}``, made when first read
            link.meta = {"conn": conn, **fields}

    def add(self, link: Link, room: Hashable) -> None:
        """``link`` entered ``room``: present there; owed a state at the next flush."""
        if not self.watches(room):
            return
        book = self._book
        entry = book.room(room)
        book.unhold(link.conn, room)  # if it resumes a held slot there
        book.put(entry, link.episode.peer, link.conn, link.meta, self._clock.now())
        entry.owed[link.connection] = None
        self._schedule()

    def remove(self, link: Link, room: Hashable, reason: str) -> None:
        """``link`` left ``room`` (its episode goes on): no grace."""
        entry = self._book.rooms.get(room)
        if entry is not None:
            entry.owed.pop(link.connection, None)
            if self._book.remove(
                entry, link.episode.peer, link.conn, reason, self._clock.now(), tell=True
            ):
                self._schedule()

    def drop(self, link: Link, reason: str, *, grace: bool, tell: bool = True) -> None:
        """``link`` ended: it leaves its rooms, or with ``grace`` (and a reason in
        :data:`Reason.DROPPED`) is held there for ``leave_grace`` seconds.

        ``tell=False`` (the server is stopping): removed without a diff; the room's
        ``seq`` moves on, so a client still listening sees a gap and asks again.
        """
        if not link.rooms:
            return
        book = self._book
        now = self._clock.now()
        peer = link.episode.peer
        hold = grace and tell and self.leave_grace > 0 and reason in Reason.DROPPED
        for room in link.rooms:
            entry = book.rooms.get(room)
            if entry is None:
                continue
            entry.owed.pop(link.connection, None)
            if not hold:
                book.remove(entry, peer, link.conn, reason, now, tell=tell)
            elif link.conn in entry.members.get(peer, ()):
                book.hold(link.conn, peer, reason, now + self.leave_grace).rooms.add(room)
        self._schedule()

    def sync(self, link: Link, room: Hashable | None = None) -> bool:
        """The client asked ``presence_sync``: a fresh state of ``room`` (or of each of its
        watched rooms) at the next flush. ``False`` if it is in no such room."""
        rooms = link.rooms or set()
        owed = False
        for name in (room,) if room is not None else tuple(rooms):
            entry = self._book.rooms.get(name)
            if entry is not None and name in rooms:
                entry.owed[link.connection] = None
                self._book.mark(entry, self._clock.now())
                owed = True
        if owed:
            self._schedule()
        return owed

    def update(
        self, peer: Hashable, fields: Meta, links: Collection[Link], *, conn: str | None = None
    ) -> bool:
        """New user fields for ``links`` (of ``peer``) and its held slots (``conn`` only)."""
        book = self._book
        now = self._clock.now()
        found = False
        for link in links:
            found = True
            link.meta = meta = {"conn": link.conn, **fields}
            for room in link.rooms or ():
                entry = book.rooms.get(room)
                if entry is not None and link.conn in entry.members.get(peer, ()):
                    book.put(entry, peer, link.conn, meta, now)
        for held in tuple(book.held.values()):
            if held.peer == peer and conn in (None, held.conn):
                found = True
                for room in held.rooms:
                    book.put(book.rooms[room], peer, held.conn, {"conn": held.conn, **fields}, now)
        self._schedule()
        return found

    # -- flushing --------------------------------------------------------------------------

    def next_flush(self) -> float | None:
        """When the next flush is due (clock time), or ``None`` if nothing is pending."""
        return self._book.next_flush(self.diff_interval, self.window)

    def flush(self, *, force: bool = False) -> int:
        """Tell what is due now (everything pending with ``force``); the number of diffs."""
        now = self._clock.now()
        due = self.next_flush()
        if due is None or (due > now and not force):
            return 0
        sent = told = 0
        call = self._runner.call
        for entry in self._book.take(now, release_until=math.inf if force else now):
            out = self._book.flush_room(entry, partial=self._partial)
            if out.diff is not None:
                sent += 1
                told += entry.connections - entry.remote  # this node's, not a cluster's
                if self.tell:
                    self._say("presence_diff", out.diff)
            if out.state is not None and self.tell:
                told += len(out.owed) if out.owed else entry.connections - entry.remote
                self._say("presence_state", out.state, out.owed)
            for event in out.events:
                joined = isinstance(event, PeerJoined)
                for callback in self._join_callbacks if joined else self._leave_callbacks:
                    call(callback, event)
        self.diffs += sent
        stretched = min(told / _TELL_RATE, _MAX_WINDOW) if self.tell else 0.0
        self.window = max(self.diff_interval, stretched)
        return sent

    def close(self) -> None:
        """Stop following a virtual clock."""
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _say(
        self, event: str, payload: dict[str, object], connections: tuple[Connection, ...] = ()
    ) -> None:
        try:
            audience = self._audience()
            if connections:
                audience.send(event, payload, connections)
            else:
                audience.tell(event, payload, rooms=(payload["room"],), exclude=())
            self.notices += 1
        except Exception:
            _logger.exception("heartbeat_monitor.presence.notify_failed", room=payload["room"])

    def _publish(self, change: PresenceChange) -> None:
        for callback in tuple(self._subscribers):
            try:
                callback(change)
            except Exception:
                _logger.exception("heartbeat_monitor.presence.subscriber_failed")

    # -- the flush driver ------------------------------------------------------------------

    def _schedule(self) -> None:
        if self._unsubscribe is not None:
            return  # a virtual clock: its moves drive the flushes
        if not self._ticking:
            if self.next_flush() is not None:
                self._ticking = True
                self._runner.spawn(self._tick)
            return
        wake = self._wake
        if wake is not None:
            due = self.next_flush()
            if due is not None and due < self._waiting_until:
                wake.set()

    async def _tick(self) -> None:
        """The one flush job: wait for what is due next, flush it, hand over to the next."""
        try:
            due = self.next_flush()
            if due is None:
                return
            delay = due - self._clock.now()
            if delay > 0:
                self._wake = wake = anyio.Event()
                self._waiting_until = due
                with anyio.move_on_after(min(delay, _MAX_NAP)):
                    await wake.wait()
                self._wake = None
                self._waiting_until = math.inf
            self.flush()
        finally:
            self._ticking = False
            self._schedule()

    def _clock_moved(self) -> None:
        due = self.next_flush()
        if due is not None and due <= self._clock.now():
            self.flush()

    def __repr__(self) -> str:
        book = self._book
        return f"<Roster rooms={len(book.rooms)} held={len(book.held)} diffs={self.diffs}>"
