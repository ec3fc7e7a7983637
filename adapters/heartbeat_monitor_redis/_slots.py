"""Cluster-wide presence: each node's roster slots in Redis, the others' shown in every roster.

The hub's :class:`~heartbeat_monitor.Roster` keeps, per watched room, one
*slot* per connection: ``(room, peer, conn, meta)``. A node writes its own
(local) slots to ``<p>slots:<node>`` (field ``[room, conn]``, value ``[peer,
fields]``, both JSON) and appends the same changes to its change stream, in the
sync's one pipeline (:class:`LocalSlots`, fed by ``roster.subscribe``; after a
failure, a full rewrite from ``roster.local()``). The other nodes read them with
the copies they already keep (:mod:`._copies`) and :class:`Mirror` puts them
into their own roster (``roster.put`` / ``roster.discard``), with the conn
prefixed by the node id, ``"<node>/<conn>"``: unique cluster-wide. So a client on
any node sees every node's peers in its ``presence_state`` and diffs, batched by
its own roster's window, and a peer connected to two nodes joins and leaves once
(the roster counts peers, not slots).

A node that is ended (dead, here or by another node) or that left cleanly is
forgotten: its slots leave every roster at once, with ``"node gone"`` (or
``"server shutdown"``), so one diff per room per window on each node. A slot
leaves a roster only if it is shown there, and is shown only from a live copy:
nobody leaves twice, whoever runs the takeover and however often.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Hashable, Mapping
from typing import Final, NamedTuple, final

import structlog

from heartbeat_monitor import ConfigurationError, PresenceChange, Reason, Roster

from ._keys import frozen

__all__ = ("LocalSlots", "Mirror", "SlotWrite")

_logger = structlog.get_logger("heartbeat_monitor")

#: The reason of a slot that vanished from a copy without a known one (its drop was
#: trimmed from the stream before this node read it).
UNKNOWN_REASON: Final = Reason.TRANSPORT_CLOSE


def slot_field(room: Hashable, conn: str) -> str:
    """A slot's field in ``<p>slots:<node>``: ``[room, conn]`` as JSON."""
    return json.dumps([room, conn], separators=(",", ":"))


@final
class SlotWrite(NamedTuple):
    """What one sync writes of this node's slots (kept to settle the books after it)."""

    #: field -> ``[peer, fields]`` (JSON): slots present (new or changed; all on a resync).
    put: dict[str, str]
    #: field -> reason: slots gone since the last good sync.
    dropped: dict[str, str]
    #: The pending changes this write covers (cleared once it succeeded).
    covered: dict[str, tuple[str | None, str]]


@final
class LocalSlots:
    """This node's slots: the roster's local changes, pending until a sync writes them."""

    __slots__ = ("_pending", "_unsubscribe", "node_id", "roster")

    def __init__(self, roster: Roster, node_id: str) -> None:
        self.roster = roster
        self.node_id = node_id
        #: field -> (``[peer, fields]`` JSON, or ``None`` if dropped; the drop's reason).
        self._pending: dict[str, tuple[str | None, str]] = {}
        self._unsubscribe: Callable[[], None] | None = roster.subscribe(self._changed)

    def close(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None

    def _changed(self, change: PresenceChange) -> None:
        try:
            field = slot_field(change.room, change.conn)
            value = None if change.kind == "drop" else self._value(change.peer, change.meta)
        except (TypeError, ValueError):
            _logger.error(
                "heartbeat_monitor.cluster.slot_not_json",
                node=self.node_id,
                room=repr(change.room)[:80],
                peer=repr(change.peer)[:80],
            )
            return
        self._pending[field] = (value, change.reason)

    @staticmethod
    def _value(peer: Hashable, meta: Mapping[str, object] | None) -> str:
        fields = {key: value for key, value in (meta or {}).items() if key != "conn"}
        return json.dumps([peer, fields], separators=(",", ":"))

    def write(self, *, resync: bool) -> SlotWrite:
        """The slots to write now: the pending changes, or every local slot on a resync."""
        covered = dict(self._pending)
        dropped = {field: reason for field, (value, reason) in covered.items() if value is None}
        put: dict[str, str] = {}
        if resync:
            for room, peer, meta in self.roster.local():
                try:
                    put[slot_field(room, str(meta["conn"]))] = self._value(peer, meta)
                except (TypeError, ValueError):
                    continue  # logged when it changed
            for field in put:
                dropped.pop(field, None)
        else:
            put = {field: value for field, (value, _) in covered.items() if value is not None}
        return SlotWrite(put, dropped, covered)

    def written(self, write: SlotWrite) -> None:
        """That write succeeded: its changes are in Redis (later changes stay pending)."""
        pending = self._pending
        for field, change in write.covered.items():
            if pending.get(field) is change:
                del pending[field]


@final
class _Shown(NamedTuple):
    room: Hashable
    peer: Hashable
    meta: dict[str, object]
    value: str

    @property
    def conn(self) -> str:
        return str(self.meta["conn"])


@final
class Mirror:
    """The other nodes' slots, shown in this node's roster (see the module)."""

    __slots__ = ("_shown", "node_id", "roster")

    def __init__(self, roster: Roster, node_id: str) -> None:
        self.roster = roster
        self.node_id = node_id
        #: node -> field -> the slot as put into the roster.
        self._shown: dict[str, dict[str, _Shown]] = {}

    def shown(self, node: str) -> int:
        """How many of ``node``'s slots this node's roster shows."""
        return len(self._shown.get(node, ()))

    def reconcile(
        self,
        node: str,
        slots: Mapping[str, str],
        touched: set[str] | None,
        reasons: Mapping[str, str],
        gone: str,
    ) -> None:
        """Make the roster show ``slots`` for ``node`` (only ``touched`` fields, or all if
        ``None``): what vanished leaves with its reason from ``reasons`` (else ``gone``)."""
        shown = self._shown.setdefault(node, {})
        roster = self.roster
        fields = (shown.keys() | slots.keys()) if touched is None else touched
        for field in fields:
            value = slots.get(field)
            old = shown.get(field)
            if old is not None and old.value == value:
                continue
            new = None if value is None else self._decode(node, field, value)
            if old is not None and (new is None or (new.room, new.peer) != (old.room, old.peer)):
                del shown[field]
                reason = reasons.get(field) or gone or UNKNOWN_REASON
                roster.discard(old.room, old.peer, old.conn, reason)
            if new is not None:
                try:
                    roster.put(new.room, new.peer, new.meta)
                except ConfigurationError as exc:
                    self._bad(node, field, exc)
                    continue
                shown[field] = new

    def _decode(self, node: str, field: str, value: str) -> _Shown | None:
        try:
            room, conn = json.loads(field)
            peer, fields = json.loads(value)
            if not isinstance(conn, str) or not isinstance(fields, dict):
                raise ValueError("a slot is [room, conn] -> [peer, {fields}]")
            meta = {**fields, "conn": f"{node}/{conn}"}
            return _Shown(frozen(room), frozen(peer), meta, value)
        except (TypeError, ValueError) as exc:
            self._bad(node, field, exc)
            return None

    def _bad(self, node: str, field: str, exc: Exception) -> None:
        _logger.error(
            "heartbeat_monitor.cluster.bad_slot",
            node=self.node_id,
            other=node,
            field=field[:80],
            error=repr(exc)[:120],
        )

    def forget(self, node: str, reason: str) -> int:
        """``node`` is gone (ended, or left cleanly): its slots leave, each with ``reason``."""
        shown = self._shown.pop(node, {})
        for slot in shown.values():
            self.roster.discard(slot.room, slot.peer, slot.conn, reason)
        if shown:
            _logger.info(
                "heartbeat_monitor.cluster.slots_forgotten",
                node=self.node_id,
                other=node,
                slots=len(shown),
                reason=reason,
            )
        return len(shown)
