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

__all__ = ("Copies", "change_entries")

_logger = structlog.get_logger("heartbeat_monitor")

#: Entries kept per node's change stream (approximately; a reader that falls further
#: behind reads the presence in full).
STREAM_LENGTH: Final = 1000
#: Entries read per node per sync.
READ_COUNT: Final = 200


def change_entries(
    seq: int, *, reset: bool, added: Mapping[str, str], removed: Collection[str]
) -> Iterator[tuple[int, str]]:
    """This node's change entries for one sync, ``(seq, JSON)``, at most :data:`CHUNK` peers each.

    Removals come first, as in the pipeline (``HDEL`` before ``HSET``): a peer that
    left and came back within one sync stays present.
    """
    changes: list[tuple[str, str | None]] = [(field, None) for field in removed]
    changes += added.items()
    for start in range(0, max(len(changes), 1), CHUNK):
        chunk = changes[start : start + CHUNK]
        seq += 1
        entry = {
            "seq": seq,
            "reset": reset and start == 0,
            "del": [field for field, rooms in chunk if rooms is None],
            "set": {field: rooms for field, rooms in chunk if rooms is not None},
        }
        yield seq, json.dumps(entry, separators=(",", ":"))


@final
class _Copy:
    __slots__ = ("fields", "last_id", "seq", "stale")

    def __init__(self) -> None:
        #: Presence field (peer as JSON) -> its rooms (JSON list), as the node wrote them.
        self.fields: dict[str, str] = {}
        #: The last stream entry applied, and its ``seq`` (``None``: none yet).
        self.last_id = "0-0"
        self.seq: int | None = None
        #: Read it in full before trusting entries again.
        self.stale = True


@final
class Copies:
    """The other nodes' presence as this node last read it (see the module)."""

    __slots__ = ("_copies", "keys", "node_id", "stats")

    def __init__(self, keys: Keys, stats: ClusterStats, node_id: str) -> None:
        self.keys = keys
        self.stats = stats
        self.node_id = node_id
        self._copies: dict[str, _Copy] = {}

    def watch(self, node: str) -> None:
        """Keep a copy of ``node``'s presence from now on."""
        if node not in self._copies:
            self._copies[node] = _Copy()

    def forget(self, node: str) -> None:
        self._copies.pop(node, None)

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

    def _apply_entry(self, node: str, copy: _Copy, values: Mapping[Any, Any]) -> bool:
        try:
            entry = json.loads(_data(values))
            seq = int(entry["seq"])
            reset = bool(entry.get("reset"))
            added: dict[str, str] = {str(k): str(v) for k, v in entry.get("set", {}).items()}
            removed = [str(field) for field in entry.get("del", [])]
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
        for field in removed:
            copy.fields.pop(field, None)
        copy.fields.update(added)
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
                pipe.xrevrange(self.keys.changes(node), count=1)
                presence, last = await pipe.execute()
        self.stats.commands += 2
        self.stats.full_reads += 1
        copy.fields = {text(field): text(rooms) for field, rooms in presence.items()}
        copy.last_id, copy.seq = "0-0", None
        if last:
            [(entry_id, values)] = last
            copy.last_id = text(entry_id)
            try:
                copy.seq = int(json.loads(_data(values))["seq"])
            except (TypeError, ValueError, KeyError):
                copy.seq = None
        copy.stale = False


def _data(values: Mapping[Any, Any]) -> str | bytes:
    """The ``d`` field of a stream entry (bytes keys unless the client decodes)."""
    data = values.get(b"d", values.get("d"))
    if not isinstance(data, str | bytes):
        raise TypeError(f"no 'd' field in {values!r:.80}")
    return data
