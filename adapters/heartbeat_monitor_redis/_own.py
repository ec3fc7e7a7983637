"""This node's own peers, as the cluster sees them: the hub's hooks and the writing half of a sync.

``hub.on_open`` records a new peer; the next sync writes it to
``<p>presence:<node>`` (and the same change to ``<p>changes:<node>``, for the
others' copies). ``hub.add_gate`` decides, before a departure is published,
whether the peer is gone cluster-wide:

* a connection's own peer (its sid) lives on this node only: gone, and removed
  from the presence at the next sync (or never written, if it came and went
  between two syncs);
* an identity (a shared episode) may be connected to other nodes too: a Lua
  script removes it from this node's presence and looks at the others'; if it
  is present elsewhere, the departure stays quiet;
* a fenced peer's departure (``"node isolated"``) is held back: it is announced
  once Redis answers, by this node or by a survivor (see :mod:`._cluster`).
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, final

import anyio
import structlog

from heartbeat_monitor import Episode, PeerGone, PeerHub, PeerOpened, Reason

from ._copies import STREAM_LENGTH, change_entries
from ._keys import CHUNK, LEAVE, ClusterStats, Keys, decode, encode
from ._slots import LocalSlots, SlotWrite

if TYPE_CHECKING:
    from redis import asyncio as aioredis
    from redis.commands.core import AsyncScript

__all__ = ("OwnPeers", "Write")

_logger = structlog.get_logger("heartbeat_monitor")


@final
class Write:
    """What one sync writes of this node's presence (kept to settle the books after it)."""

    __slots__ = ("episodes", "left", "resync", "seq", "slots")

    def __init__(self, slots: SlotWrite, *, resync: bool) -> None:
        #: A full rewrite.
        self.resync = resync
        #: Peers written, with their episodes.
        self.episodes: dict[Hashable, Episode] = {}
        #: Roster slots written.
        self.slots = slots
        #: Fields removed.
        self.left: set[str] = set()
        #: The ``seq`` of the last change entry, if any was written.
        self.seq: int | None = None


@final
class OwnPeers:
    """This node's peers in Redis: what to write at the next sync, and the departure gate."""

    __slots__ = (
        "_fenced",
        "_joined",
        "_leave_script",
        "_left",
        "_seq",
        "_shared",
        "active",
        "gone",
        "hub",
        "keys",
        "node_id",
        "op_timeout",
        "slots",
        "stats",
    )

    def __init__(
        self,
        hub: PeerHub,
        redis: aioredis.Redis,
        keys: Keys,
        stats: ClusterStats,
        *,
        node_id: str,
        op_timeout: float,
    ) -> None:
        self.hub = hub
        self.keys = keys
        self.stats = stats
        self.node_id = node_id
        self.op_timeout = op_timeout
        self._leave_script: AsyncScript = redis.register_script(LEAVE)
        #: Whether the cluster runs (before and after, the hooks do nothing).
        self.active = False
        #: Peers opened since they were last written to Redis (their episodes).
        self._joined: dict[Hashable, Episode] = {}
        #: Open identities (shared episodes): peer -> episode number.
        self._shared: dict[Hashable, int] = {}
        #: Fields to remove from this node's presence at the next sync.
        self._left: set[str] = set()
        #: The fenced peers (field -> rooms) whose departure waits for Redis.
        self._fenced: dict[str, str] = {}
        #: The ``seq`` of this node's last change entry.
        self._seq = 0
        #: This node's roster slots (the cluster-wide presence), and the reason the next
        #: rewrite gives the slots it no longer has (a previous incarnation's: node gone).
        self.slots = LocalSlots(hub.roster, node_id)
        self.gone = ""
        hub.on_open(self.opened)
        hub.add_gate(self.gate)

    def start(self) -> None:
        """The cluster starts: peers already connected count as new."""
        self.active = True
        for episode in self.hub.episodes():
            self._opened(episode)

    def stop(self) -> None:
        """The cluster stopped: the hooks do nothing from now on."""
        self.active = False
        self.slots.close()

    # -- the hub's hooks -------------------------------------------------------------------

    def opened(self, event: PeerOpened) -> None:
        """A new peer on this node (written to Redis at the next sync)."""
        if self.active:
            episode = self.hub.episode(event.key)
            if episode is not None and episode.number == event.episode:
                self._opened(episode)

    def _opened(self, episode: Episode) -> None:
        self._joined[episode.peer] = episode
        if episode.shared:
            self._shared[episode.peer] = episode.number

    async def gate(self, event: PeerGone) -> bool:
        """Before a departure is published: ``True`` if the peer is gone cluster-wide."""
        peer = event.key
        shared = self._shared.get(peer) == event.episode
        if shared:
            del self._shared[peer]
        if not self.active:
            return True
        field = self.field(peer)
        if field is None:
            return True
        if event.reason == Reason.NODE_ISOLATED and field in self._fenced:
            return False  # announced once Redis answers: by this node or by a survivor
        joined = self._joined.get(peer)
        if joined is not None and joined.number == event.episode:
            del self._joined[peer]
            if not shared:
                return True  # never written to Redis
        if peer in self.hub:
            return True  # a newer episode of this peer is open here: it stays present
        if not shared:
            self._left.add(field)  # a connection's own peer lives on one node only
            return True
        me = self.node_id
        try:
            with anyio.fail_after(self.op_timeout):
                gone = await self._leave_script(
                    keys=[self.keys.nodes, self.keys.presence(me)],
                    args=[self.keys.presence_prefix, me, field],
                )
            self.stats.commands += 1
        except Exception as exc:
            # Redis cannot tell: fall back to one node's view, and fix presence at the next sync.
            self._left.add(field)
            _logger.error(
                "heartbeat_monitor.cluster.leave_check_failed", node=me, peer=peer, error=repr(exc)
            )
            return True
        if not gone:
            _logger.info(
                "heartbeat_monitor.cluster.peer_left_node", node=me, peer=peer, reason=event.reason
            )
        return bool(gone)

    def field(self, peer: Hashable) -> str | None:
        """``peer`` as a presence field; ``None`` (logged) if it is not JSON."""
        try:
            return encode(peer)
        except (TypeError, ValueError):
            _logger.error("heartbeat_monitor.cluster.peer_not_json", peer=repr(peer)[:80])
            return None

    def _rooms(self, episode: Episode) -> str:
        return json.dumps(sorted(self.hub.rooms_of(episode), key=str), default=str)

    # -- the writing half of a sync --------------------------------------------------------

    def write(self, pipe: Any, *, resync: bool) -> tuple[Write, int]:
        """Queue this sync's presence changes on ``pipe``: what is written, and how many commands.

        A resync rewrites the whole presence (``DEL`` first); otherwise only the
        peers opened and the fields removed since the last good sync.
        """
        own = self.keys.presence(self.node_id)
        slots_key = self.keys.slots(self.node_id)
        write = Write(self.slots.write(resync=resync), resync=resync)
        put, dropped = write.slots.put, write.slots.dropped
        if resync:
            episodes = self.hub.episodes()
            removed: list[str] = []
        else:
            episodes = [episode for episode in self._joined.values() if episode.reason is None]
            removed = sorted(self._left)
        write.left = set(self._left)
        added: dict[str, str] = {}
        for episode in episodes:
            field = self.field(episode.peer)
            if field is not None:
                added[field] = self._rooms(episode)
                write.episodes[episode.peer] = episode
        commands = 0
        if resync:
            pipe.delete(own, slots_key)
            commands += 1
        else:
            for key, fields in ((own, removed), (slots_key, sorted(dropped))):
                if fields:
                    pipe.hdel(key, *fields)
                    commands += 1
        for key, mapping in ((own, added), (slots_key, put)):
            items = list(mapping.items())
            for start in range(0, len(items), CHUNK):
                pipe.hset(key, mapping=dict(items[start : start + CHUNK]))
                commands += 1
        if resync or added or removed or put or dropped:
            changes = self.keys.changes(self.node_id)
            gone = self.gone if resync else ""
            for seq, entry in change_entries(
                self._seq,
                reset=resync,
                added=added,
                removed=removed,
                put=put,
                dropped=dropped,
                gone=gone,
            ):
                pipe.xadd(changes, {"d": entry}, maxlen=STREAM_LENGTH, approximate=True)
                commands += 1
                write.seq = seq
        return write, commands

    def written(self, write: Write) -> None:
        """The sync succeeded: those peers are in Redis now, those fields are gone."""
        for peer, episode in write.episodes.items():
            if self._joined.get(peer) is episode:
                del self._joined[peer]
        self._left -= write.left
        self.slots.written(write.slots)
        if write.seq is not None:
            self._seq = write.seq
        if write.resync:
            self.gone = ""

    # -- fencing ---------------------------------------------------------------------------

    def fence(self) -> int:
        """Hold back the departures of every open peer (they are about to be disconnected)."""
        for episode in self.hub.episodes():
            field = self.field(episode.peer)
            if field is not None:
                self._fenced[field] = self._rooms(episode)
        self._joined.clear()  # the rewrite after rejoining writes whoever is open then
        return len(self._fenced)

    def to_announce(self) -> dict[str, str]:
        """The fenced peers to announce on rejoining: all but those connected here again."""
        return {field: rooms for field, rooms in self._fenced.items() if not self._here(field)}

    def _here(self, field: str) -> bool:
        try:
            return decode(field) in self.hub
        except ValueError:
            return False

    def rejoined(self, gone: str) -> None:
        """Announced, and this node's presence deleted from Redis: start afresh (the other
        nodes' rosters drop the slots the rewrite no longer has, by default for ``gone``)."""
        self._fenced.clear()
        self._left.clear()
        self.gone = gone
