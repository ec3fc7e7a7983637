"""Each node's copy of the other nodes' presence, kept in memory from their change streams.

Why: when a node dies and Redis restarts empty before anyone ended it, its
presence is gone from Redis; the survivors announce its peers from these copies.

How: a node appends every change of its own presence to ``<p>changes:<node>``
(``XADD``, trimmed to about :data:`STREAM_LENGTH` entries) in the same pipeline
that writes the presence; each entry is JSON ``{"seq", "reset", "set", "del"}``.
``seq`` counts the node's entries; ``reset`` starts a full rewrite (its start, a
resync). Every sync, one ``XREAD`` brings what the others appended since the
last read. A copy is read in full (``HGETALL`` of the presence and the stream's
last entry, in one ``MULTI``) the first time a node is seen and whenever its
entries skip a number (trimmed away, or lost with Redis); otherwise applying the
entries in order keeps it equal to the node's presence as of its last sync.
A copy is kept while its node is known, dead or not: Redis restarting empty
loses the node's stream, not the copy.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Final, final

import anyio
import structlog

from ._keys import CHUNK, ClusterStats, Keys, text

if TYPE_CHECKING:
    from redis import asyncio as aioredis

    from ._slots import Mirror

__all__ = ("Copies", "change_entries")

_logger = structlog.get_logger("heartbeat_monitor")

#: Entries kept per node's change stream (approximately; a reader that falls further
#: behind reads the presence in full).
STREAM_LENGTH: Final = 1000
#: Entries read per node per sync.
READ_COUNT: Final = 200


def change_entries(
    seq: int,
    *,
    reset: bool,
    added: Mapping[str, str],
    removed: Collection[str],
    put: Mapping[str, str] | None = None,
    dropped: Mapping[str, str] | None = None,
    gone: str = "",
) -> Iterator[tuple[int, str]]:
    """This node's change entries for one sync, ``(seq, JSON)``, at most :data:`CHUNK` changes each.

    Removals come first, as in the pipeline (``HDEL`` before ``HSET``): a peer that
    left and came back within one sync stays present. Roster slots follow: ``drop``
    (field -> reason) and ``put`` (field -> ``[peer, fields]``). Every entry but the
    last of a sync says ``"more": true``; a reset's first entry may name ``gone``, the
    reason of the slots it no longer has (the node's previous incarnation died).
    """
    changes: list[tuple[str, str, str | None]] = [("del", field, None) for field in removed]
    changes += [("set", field, rooms) for field, rooms in added.items()]
    changes += [("drop", field, reason) for field, reason in (dropped or {}).items()]
    changes += [("put", field, value) for field, value in (put or {}).items()]
    for start in range(0, max(len(changes), 1), CHUNK):
        chunk = changes[start : start + CHUNK]
        seq += 1
        entry: dict[str, object] = {
            "seq": seq,
            "reset": reset and start == 0,
            "del": [field for kind, field, _ in chunk if kind == "del"],
            "set": {field: rooms for kind, field, rooms in chunk if kind == "set"},
        }
        for kind in ("drop", "put"):
            part = {field: value for k, field, value in chunk if k == kind}
            if part:
                entry[kind] = part
        if start + CHUNK < len(changes):
            entry["more"] = True
        if reset and start == 0 and gone:
            entry["gone"] = gone
        yield seq, json.dumps(entry, separators=(",", ":"))


@final
class _Copy:
    __slots__ = (
        "fields",
        "gone",
        "last_id",
        "midway",
        "reasons",
        "seq",
        "slots",
        "stale",
        "touched",
    )

    def __init__(self) -> None:
        #: Presence field (peer as JSON) -> its rooms (JSON list), as the node wrote them.
        self.fields: dict[str, str] = {}
        #: Roster slots: ``[room, conn]`` -> ``[peer, fields]`` (JSON), as the node wrote them.
        self.slots: dict[str, str] = {}
        #: Since the copy was last settled: slots changed (``None``: all), drop reasons, and
        #: the reason of slots a reset no longer has.
        self.touched: set[str] | None = None
        self.reasons: dict[str, str] = {}
        self.gone = ""
        #: In the middle of one sync's entries (``"more"``): not settled.
        self.midway = False
        #: The last stream entry applied, and its ``seq`` (``None``: none yet).
        self.last_id = "0-0"
        self.seq: int | None = None
        #: Read it in full before trusting entries again.
        self.stale = True


@final
class Copies:
    """The other nodes' presence as this node last read it (see the module)."""

    __slots__ = ("_copies", "keys", "mirror", "node_id", "stats")

    def __init__(self, keys: Keys, stats: ClusterStats, node_id: str, mirror: Mirror) -> None:
        self.keys = keys
        self.stats = stats
        self.node_id = node_id
        #: Where a copy's roster slots are shown, each time it is settled.
        self.mirror = mirror
        self._copies: dict[str, _Copy] = {}

    def watch(self, node: str) -> None:
        """Keep a copy of ``node``'s presence from now on."""
        if node not in self._copies:
            self._copies[node] = _Copy()

    def forget(self, node: str, reason: str) -> None:
        """``node`` is gone: its copy is dropped, its slots leave this node's roster."""
        self._copies.pop(node, None)
        self.mirror.forget(node, reason)

    def unsettled(self) -> bool:
        """Whether some copy cannot be trusted now (unread, or read half-way)."""
        return any(copy.stale or copy.midway for copy in self._copies.values())

    def of(self, node: str) -> dict[str, str]:
        """``node``'s presence as last read (field -> rooms); empty if unknown."""
        copy = self._copies.get(node)
        return {} if copy is None else dict(copy.fields)

    def restart(self) -> None:
        """Redis lost its data: streams start again from the beginning (copies are kept)."""
        for copy in self._copies.values():
            copy.last_id = "0-0"
            copy.seq = None

    def read(self, pipe: Any) -> bool:
        """Queue one ``XREAD`` of every copy's new entries on ``pipe``; ``False`` if none."""
        streams = {
            self.keys.changes(node): copy.last_id
            for node, copy in self._copies.items()
            if not copy.stale
        }
        if streams:
            pipe.xread(streams, count=READ_COUNT)
        return bool(streams)

    def apply(self, reply: Any) -> None:
        """Apply an ``XREAD`` reply (RESP2 list or RESP3 dict)."""
        items = reply.items() if isinstance(reply, dict) else (reply or ())
        prefix = self.keys.changes_prefix
        for key, entries in items:
            node = text(key).removeprefix(prefix)
            copy = self._copies.get(node)
            if copy is None or copy.stale:
                continue
            for entry_id, values in entries:
                if not self._apply_entry(node, copy, values):
                    copy.stale = True
                    break
                copy.last_id = text(entry_id)
            if not copy.stale:
                self._settle(node, copy)

    def _settle(self, node: str, copy: _Copy) -> None:
        """Show the copy's slots in this node's roster, once it is at the end of a sync."""
        if copy.midway or (copy.touched is not None and not copy.touched):
            return
        touched, copy.touched = copy.touched, set()
        reasons, copy.reasons = copy.reasons, {}
        gone, copy.gone = copy.gone, ""
        self.mirror.reconcile(node, copy.slots, touched, reasons, gone)

    def _apply_entry(self, node: str, copy: _Copy, values: Mapping[Any, Any]) -> bool:
        try:
            entry = json.loads(_data(values))
            seq = int(entry["seq"])
            reset = bool(entry.get("reset"))
            added: dict[str, str] = {str(k): str(v) for k, v in entry.get("set", {}).items()}
            removed = [str(field) for field in entry.get("del", [])]
            put = {str(k): str(v) for k, v in entry.get("put", {}).items()}
            dropped = {str(k): str(v) for k, v in entry.get("drop", {}).items()}
            more = bool(entry.get("more"))
            gone = str(entry.get("gone") or "")
        except (TypeError, ValueError, KeyError, AttributeError):
            _logger.error(
                "heartbeat_monitor.cluster.bad_change_entry",
                node=self.node_id,
                other=node,
                entry=repr(values)[:80],
            )
            return False
        if not reset and (copy.seq is None or seq != copy.seq + 1):
            return False  # a gap: read it in full
        if reset:
            copy.fields = {}
            copy.slots = {}
            copy.touched = None
            copy.gone = gone
        for field in removed:
            copy.fields.pop(field, None)
        copy.fields.update(added)
        for field in dropped:
            copy.slots.pop(field, None)
        copy.slots.update(put)
        copy.reasons.update(dropped)
        if copy.touched is not None:
            copy.touched.update(dropped, put)
        copy.midway = more
        copy.seq = seq
        return True

    def to_read_in_full(self) -> list[str]:
        """The nodes whose copy must be read in full."""
        return [node for node, copy in self._copies.items() if copy.stale]

    async def read_full(self, redis: aioredis.Redis, node: str, op_timeout: float) -> None:
        """Read ``node``'s presence and its stream's last entry at once (one ``MULTI``)."""
        copy = self._copies.get(node)
        if copy is None:
            return
        with anyio.fail_after(op_timeout):
            async with redis.pipeline(transaction=True) as pipe:
                pipe.hgetall(self.keys.presence(node))
                pipe.hgetall(self.keys.slots(node))
                pipe.xrevrange(self.keys.changes(node), count=1)
                presence, slots, last = await pipe.execute()
        self.stats.commands += 3
        self.stats.full_reads += 1
        copy.fields = {text(field): text(rooms) for field, rooms in presence.items()}
        copy.slots = {text(field): text(value) for field, value in slots.items()}
        copy.touched, copy.midway = None, False
        copy.last_id, copy.seq = "0-0", None
        if last:
            [(entry_id, values)] = last
            copy.last_id = text(entry_id)
            try:
                copy.seq = int(json.loads(_data(values))["seq"])
            except (TypeError, ValueError, KeyError):
                copy.seq = None
        copy.stale = False
        self._settle(node, copy)


def _data(values: Mapping[Any, Any]) -> str | bytes:
    """The ``d`` field of a stream entry (bytes keys unless the client decodes)."""
    data = values.get(b"d", values.get("d"))
    if not isinstance(data, str | bytes):
        raise TypeError(f"no 'd' field in {values!r:.80}")
    return data
