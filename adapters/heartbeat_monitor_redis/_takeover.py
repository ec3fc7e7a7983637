"""Announcing a node's peers once cluster-wide, under a Redis lease.

The one who holds ``<p>lease:<node>`` (``SET NX PX``) ends ``node``'s peers: a
survivor for a dead node, or the node itself for its previous incarnation or the
peers it fenced. The peers come from the node's presence in Redis or, when Redis
lost it, from a copy kept in memory; the ``END`` script takes them in chunks,
skips peers present on another node, and marks the rest in
``<p>announced:<node>``, so that no peer is announced twice even when the lease
changes hands. Each newly marked peer is published with ``hub.announce`` (the
``on_gone`` callbacks here, ``peer_gone`` to every node's clients). The lease is
renewed between chunks.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Mapping
from typing import TYPE_CHECKING, Any, final

import anyio
import structlog

from heartbeat_monitor import PeerGone, PeerHub, Reason

from ._keys import CHUNK, END, LEASE, MARKER_TTL, ClusterStats, Keys, decode, frozen

if TYPE_CHECKING:
    from redis import asyncio as aioredis
    from redis.commands.core import AsyncScript

__all__ = ("Takeover",)

_logger = structlog.get_logger("heartbeat_monitor")


@final
class Takeover:
    """One node's side of the lease protocol (its Redis client, keys, hub and counters)."""

    __slots__ = (
        "_end_script",
        "_lease_script",
        "_redis",
        "hub",
        "keys",
        "lease_ms",
        "node_id",
        "op_timeout",
        "stats",
    )

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        hub: PeerHub,
        stats: ClusterStats,
        *,
        node_id: str,
        lease_ms: int,
        op_timeout: float,
    ) -> None:
        self._redis = redis
        self._end_script: AsyncScript = redis.register_script(END)
        self._lease_script: AsyncScript = redis.register_script(LEASE)
        self.keys = keys
        self.hub = hub
        self.stats = stats
        self.node_id = node_id
        self.lease_ms = lease_ms
        self.op_timeout = op_timeout

    async def acquire(self, node: str) -> bool:
        """Take ``node``'s lease; ``False`` if another node holds it."""
        with anyio.fail_after(self.op_timeout):
            won = await self._redis.set(
                self.keys.lease(node), self.node_id, nx=True, px=self.lease_ms
            )
        self.stats.commands += 1
        return bool(won)

    async def release(self, node: str) -> None:
        """Give ``node``'s lease back, even while cancelled; a failure only logs (it runs out)."""
        with anyio.CancelScope(shield=True):
            try:
                await self._lease(node, release=True)
            except Exception as exc:
                _logger.debug("heartbeat_monitor.cluster.release_failed", error=repr(exc))

    async def end(
        self,
        node: str,
        last_counter: int | None,
        silent_for: float,
        copy: Mapping[str, str],
    ) -> tuple[bool, int | None]:
        """Try to end a silent node: ``(ended, counter)``.

        ``ended`` once it is ended, here or by another node (or it left cleanly);
        ``counter`` when its counter has moved since ``last_counter`` (it is alive
        after all). ``copy`` is what this node last read of its presence: used when
        Redis no longer has it (restarted empty after the node died).
        """
        keys = self.keys
        if not await self.acquire(node):
            _logger.info(
                "heartbeat_monitor.cluster.lease_held_elsewhere", node=self.node_id, other=node
            )
            return False, None
        try:
            with anyio.fail_after(self.op_timeout):
                async with self._redis.pipeline(transaction=False) as pipe:
                    pipe.hget(keys.nodes, node)
                    pipe.exists(keys.dead(node), keys.left(node))
                    counter, markers = await pipe.execute()
            self.stats.commands += 2
            source: Mapping[str, str] | None = None
            if counter is None:
                if markers or not copy:
                    return True, None  # ended by another node, or left cleanly
                # Not in the nodes hash, yet it never left: Redis lost its data (restarted
                # empty) after it died. Its peers are known only from the copy kept here.
                _logger.warning(
                    "heartbeat_monitor.cluster.node_state_lost",
                    node=self.node_id,
                    other=node,
                    peers_known=len(copy),
                )
                source = copy
            elif int(counter) != last_counter:
                _logger.warning(
                    "heartbeat_monitor.cluster.node_alive_after_all", node=self.node_id, other=node
                )
                return False, int(counter)
            _logger.warning(
                "heartbeat_monitor.cluster.node_expired",
                node=self.node_id,
                other=node,
                silent_for=round(silent_for, 6),
            )
            announced = await self.end_peers(node, source, Reason.NODE_GONE)
            if announced is None:
                return False, None
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hdel(keys.nodes, node)
                pipe.delete(keys.presence(node), keys.changes(node), keys.slots(node))
                pipe.set(keys.dead(node), self.node_id, ex=MARKER_TTL)
                with anyio.fail_after(self.op_timeout):
                    await pipe.execute()
            self.stats.commands += 3
            self.stats.nodes_ended += 1
            _logger.warning(
                "heartbeat_monitor.cluster.node_ended",
                node=self.node_id,
                other=node,
                peers_announced=announced,
            )
            return True, None
        finally:
            # Released, not left to run out: a node restarted under this id may die again soon.
            await self.release(node)

    async def end_peers(
        self, node: str, source: Mapping[str, str] | None, reason: str
    ) -> int | None:
        """Announce ``node``'s peers with ``reason`` (holding its lease).

        ``source`` maps presence fields to their rooms; ``None`` walks the node's
        presence in Redis. Returns how many were announced here, ``None`` if the
        lease was lost on the way.
        """
        keys = self.keys
        presence = keys.presence(node)
        announced = 0
        cursor = 0
        pending = list(source.items()) if source is not None else None
        while True:
            batch: dict[Any, Any]
            if pending is None:
                with anyio.fail_after(self.op_timeout):
                    cursor, reply = await self._redis.hscan(presence, cursor, count=CHUNK)
                batch = dict(reply)  # type: ignore[arg-type]  # a dict without no_values
                self.stats.commands += 1
            else:
                batch = dict(pending[:CHUNK])
                del pending[:CHUNK]
            ending: list[bytes] = []
            if batch:
                with anyio.fail_after(self.op_timeout):
                    ending = await self._end_script(
                        keys=[keys.nodes, presence, keys.announced(node)],
                        args=[keys.presence_prefix, node, MARKER_TTL, *batch],
                    )
                self.stats.commands += 1
            for field in ending:
                rooms = batch.get(field)
                if rooms is None:  # the source's own keys are str, Redis answers bytes
                    rooms = batch.get(field.decode(), "[]")
                self._announce(node, field, rooms, reason)
                announced += 1
            if not await self._lease(node):
                _logger.error("heartbeat_monitor.cluster.lease_lost", node=self.node_id, other=node)
                return None
            if (cursor == 0) if pending is None else not pending:
                return announced

    async def _lease(self, node: str, *, release: bool = False) -> bool:
        with anyio.fail_after(self.op_timeout):
            held = await self._lease_script(
                keys=[self.keys.lease(node)], args=[self.node_id, 0 if release else self.lease_ms]
            )
        self.stats.commands += 1
        return bool(held)

    def _announce(self, node: str, field: bytes | str, rooms: bytes | str, reason: str) -> None:
        try:
            peer = decode(field)
            room_list: list[Hashable] = [frozen(room) for room in json.loads(rooms)]
        except (TypeError, ValueError):
            _logger.error(
                "heartbeat_monitor.cluster.bad_presence_entry", other=node, field=repr(field)[:80]
            )
            return
        self.stats.peers_announced += 1
        hub = self.hub
        event = PeerGone(key=peer, episode=0, reason=reason, detail=f"node {node}")
        hub.announce(event, rooms=room_list if hub.scope == "rooms" else None)
