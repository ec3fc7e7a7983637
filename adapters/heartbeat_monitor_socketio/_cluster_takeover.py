"""Ending a dead node's peers once cluster-wide, under a Redis lease.

The protocol (see :mod:`._cluster` for the whole picture): the winner of
``SET <p>lease:<dead> NX PX`` re-reads the dead node's counter, walks its presence
in chunks through the ``END`` script (which removes each peer, skips peers present
on another node, and marks the rest in ``<p>announced:<dead>`` so no peer is
announced twice even when the lease changes hands), announces the newly marked
peers with the adapter's own ``on_gone`` callbacks and ``peer_gone``, renews the
lease between chunks, then removes the node and releases the lease.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterable
from typing import TYPE_CHECKING, Any, final

import anyio
import structlog

from ._adapter import Reason, SocketIOAdapter, _Peer
from ._cluster_keys import (
    CHUNK,
    END,
    LEASE,
    MARKER_TTL,
    ClusterStats,
    Keys,
    RemoteKey,
    decode,
    frozen,
)

if TYPE_CHECKING:
    from redis import asyncio as aioredis
    from redis.commands.core import AsyncScript

__all__ = ("Takeover",)

_logger = structlog.get_logger("heartbeat_monitor")


@final
class Takeover:
    """One node's side of the lease protocol (its Redis client, keys and counters)."""

    __slots__ = (
        "_end_script",
        "_lease_script",
        "_redis",
        "adapter",
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
        adapter: SocketIOAdapter,
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
        self.adapter = adapter
        self.stats = stats
        self.node_id = node_id
        self.lease_ms = lease_ms
        self.op_timeout = op_timeout

    async def end(
        self, node: str, last_counter: int | None, silent_for: float
    ) -> tuple[bool, int | None]:
        """Try to end a silent node: ``(ended, counter)``.

        ``ended`` once it is ended, here or by another node; ``counter`` when its
        counter has moved since ``last_counter`` (it is alive after all).
        """
        keys = self.keys
        with anyio.fail_after(self.op_timeout):
            won = await self._redis.set(keys.lease(node), self.node_id, nx=True, px=self.lease_ms)
            counter = await self._redis.hget(keys.nodes, node)
        self.stats.commands += 2
        if not won:
            _logger.info(
                "heartbeat_monitor.cluster.lease_held_elsewhere", node=self.node_id, other=node
            )
            return False, None
        if counter is None:  # another node ended it (we won the lease after theirs ran out)
            await self._lease(keys.lease(node), release=True)
            return True, None
        if int(counter) != last_counter:
            await self._lease(keys.lease(node), release=True)
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
        announced = await self.end_peers(node)
        if announced is None:
            return False, None
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hdel(keys.nodes, node)
            pipe.delete(keys.presence(node))
            pipe.set(keys.dead(node), self.node_id, ex=MARKER_TTL)
            with anyio.fail_after(self.op_timeout):
                await pipe.execute()
        self.stats.commands += 3
        # Released, not left to run out: a node restarted under this id may die again soon.
        await self._lease(keys.lease(node), release=True)
        self.stats.nodes_ended += 1
        _logger.warning(
            "heartbeat_monitor.cluster.node_ended",
            node=self.node_id,
            other=node,
            peers_announced=announced,
        )
        return True, None

    async def end_peers(self, node: str) -> int | None:
        """Announce ``node``'s peers (holding its lease); ``None`` if the lease was lost."""
        keys = self.keys
        presence = keys.presence(node)
        announced = 0
        cursor = 0
        while True:
            with anyio.fail_after(self.op_timeout):
                cursor, reply = await self._redis.hscan(presence, cursor, count=CHUNK)
            batch: dict[Any, Any] = dict(reply)  # type: ignore[arg-type]  # a dict without no_values
            self.stats.commands += 1
            ending: list[bytes] = []
            if batch:
                with anyio.fail_after(self.op_timeout):
                    ending = await self._end_script(
                        keys=[keys.nodes, presence, keys.announced(node)],
                        args=[keys.presence_prefix, node, MARKER_TTL, *batch],
                    )
                self.stats.commands += 1
            for field in ending:
                await self._announce(node, field, batch.get(field, b"[]"))
                announced += 1
            if not await self._lease(keys.lease(node)):
                _logger.error("heartbeat_monitor.cluster.lease_lost", node=self.node_id, other=node)
                return None
            if cursor == 0:
                return announced

    async def end_previous(self) -> None:
        """Restarted under the same id: the previous incarnation's peers are gone, announce them."""
        keys = self.keys
        try:
            with anyio.fail_after(self.op_timeout):
                if not await self._redis.exists(keys.presence(self.node_id)):
                    return
                won = await self._redis.set(
                    keys.lease(self.node_id), self.node_id, nx=True, px=self.lease_ms
                )
            if won:
                announced = await self.end_peers(self.node_id)
                _logger.warning(
                    "heartbeat_monitor.cluster.previous_incarnation_ended",
                    node=self.node_id,
                    peers_announced=announced,
                )
        except Exception as exc:
            _logger.error(
                "heartbeat_monitor.cluster.previous_incarnation_failed",
                node=self.node_id,
                error=repr(exc),
            )

    async def _lease(self, key: str, *, release: bool = False) -> bool:
        with anyio.fail_after(self.op_timeout):
            held = await self._lease_script(
                keys=[key], args=[self.node_id, 0 if release else self.lease_ms]
            )
        self.stats.commands += 1
        return bool(held)

    async def _announce(self, node: str, field: bytes | str, rooms: bytes | str) -> None:
        try:
            peer_id = decode(field)
            room_list: Iterable[Hashable] = [frozen(room) for room in json.loads(rooms)]
        except (TypeError, ValueError):
            _logger.error(
                "heartbeat_monitor.cluster.bad_presence_entry", other=node, field=repr(field)[:80]
            )
            return
        peer = _Peer(peer_id, RemoteKey(node, peer_id))
        peer.rooms.update(room_list)
        peer.gone = Reason.NODE_GONE
        self.stats.peers_announced += 1
        gone = self.adapter.stats.gone
        gone[Reason.NODE_GONE] = gone.get(Reason.NODE_GONE, 0) + 1
        await self.adapter._finish(peer, Reason.NODE_GONE)
