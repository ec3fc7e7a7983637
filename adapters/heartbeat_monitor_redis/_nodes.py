"""The other nodes, as one node sees them: liveness, copies of their presence, their end.

The other nodes are watched by the same core as the peers: a
:class:`~heartbeat_monitor.HeartbeatMonitor` (timeout ``node_timeout``) beaten
whenever a node's counter in ``<p>nodes`` has moved since the last read. Time is
this node's monotonic clock only: no wall clock crosses the network.

A node once seen stays **known** until it is ended, here or elsewhere, or left
cleanly. Missing from ``<p>nodes`` is not enough to forget it: only a marker says
how it went (``<p>left:<node>`` for a clean leave, ``<p>dead:<node>`` once ended).
Without one -- Redis restarted empty after the node died -- it stays watched, its
counter stands still, it expires, and its peers are announced from this node's
copy of its presence (:mod:`._copies`).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from typing import TYPE_CHECKING, Any, final

import anyio
import structlog

from heartbeat_monitor import Expired, HeartbeatMonitor, Reason, Roster

from ._copies import Copies
from ._keys import ClusterStats, Keys, decode, text
from ._slots import Mirror
from ._takeover import Takeover

if TYPE_CHECKING:
    from redis import asyncio as aioredis

__all__ = ("Nodes",)

_logger = structlog.get_logger("heartbeat_monitor")


@final
class Nodes:
    """The other nodes of the cluster: who is alive, what they hold, ending a silent one."""

    __slots__ = (
        "_ending",
        "_missing",
        "_redis",
        "_seen",
        "copies",
        "keys",
        "may_end",
        "monitor",
        "node_id",
        "op_timeout",
        "stats",
        "takeover",
    )

    def __init__(
        self,
        redis: aioredis.Redis,
        keys: Keys,
        takeover: Takeover,
        stats: ClusterStats,
        *,
        node_id: str,
        node_timeout: float,
        op_timeout: float,
        may_end: Callable[[], bool],
        roster: Roster,
    ) -> None:
        self._redis = redis
        self.keys = keys
        self.takeover = takeover
        self.stats = stats
        self.node_id = node_id
        self.op_timeout = op_timeout
        #: Whether this node may end others now (its own view of Redis is sound).
        self.may_end = may_end
        self.monitor = HeartbeatMonitor(node_timeout, on_expire=self._expired)
        self.copies = Copies(keys, stats, node_id, Mirror(roster, node_id))
        #: Each known node's last counter, as read.
        self._seen: dict[str, int] = {}
        #: Known nodes missing from the nodes hash (already logged).
        self._missing: set[str] = set()
        #: Nodes being ended here (not re-tracked by the sync meanwhile).
        self._ending: set[str] = set()

    def alive(self) -> list[str]:
        """The other nodes believed alive (no I/O)."""
        monitor = self.monitor
        return [
            node
            for node in self._seen
            if node in monitor and node not in self._ending and node not in self._missing
        ]

    def refresh(self) -> None:
        """An outage of our own is nobody's fault: every node gets a fresh timeout."""
        for node in self._seen:
            if node in self.monitor:
                self.monitor.beat(node)

    def observe(self, counters: dict[str, int]) -> list[str]:
        """Every node's counter, as just read: the known nodes missing from it."""
        monitor = self.monitor
        seen = self._seen
        for node, counter in counters.items():
            if node == self.node_id or node in self._ending:
                continue
            last = seen.get(node)
            self._missing.discard(node)
            if node not in monitor:
                monitor.track(node)
                self.copies.watch(node)
                if last is None:
                    _logger.info(
                        "heartbeat_monitor.cluster.node_joined", node=self.node_id, other=node
                    )
            elif counter != last:
                monitor.beat(node)
            seen[node] = counter
        return [node for node in seen if node not in counters and node not in self._ending]

    async def settle(self, missing: list[str]) -> None:
        """Known nodes missing from the nodes hash: forget those that left or were ended."""
        if not missing:
            return
        with anyio.fail_after(self.op_timeout):
            async with self._redis.pipeline(transaction=False) as pipe:
                for node in missing:
                    pipe.exists(self.keys.left(node))
                    pipe.exists(self.keys.dead(node))
                replies = await pipe.execute()
        self.stats.commands += 2 * len(missing)
        for index, node in enumerate(missing):
            left, ended = replies[2 * index], replies[2 * index + 1]
            if left or ended:
                self.forget(node, Reason.SERVER_SHUTDOWN if left else Reason.NODE_GONE)
                _logger.info(
                    "heartbeat_monitor.cluster.node_left",
                    node=self.node_id,
                    other=node,
                    how="left cleanly" if left else "ended by another node",
                )
            elif node not in self._missing:
                self._missing.add(node)
                _logger.warning(
                    "heartbeat_monitor.cluster.node_missing",
                    node=self.node_id,
                    other=node,
                    hint="not in Redis and never left: watched until it expires",
                )

    def last_known(self, node: str) -> frozenset[Hashable]:
        """``node``'s peers in this node's copy of its presence."""
        peers: set[Hashable] = set()
        for field in self.copies.of(node):
            try:
                peers.add(decode(field))
            except ValueError:
                continue
        return frozenset(peers)

    async def presence(self, nodes: list[str]) -> dict[Hashable, frozenset[str]]:
        """Every peer present on one of ``nodes``, with the nodes it is on (one round trip)."""
        with anyio.fail_after(self.op_timeout):
            async with self._redis.pipeline(transaction=False) as pipe:
                for node in nodes:
                    pipe.hkeys(self.keys.presence(node))
                replies = await pipe.execute()
        self.stats.commands += len(nodes)
        where: dict[Hashable, set[str]] = {}
        for node, fields in zip(nodes, replies, strict=True):
            for field in fields:
                try:
                    peer = decode(field)
                except ValueError:
                    continue
                where.setdefault(peer, set()).add(node)
        return {peer: frozenset(found) for peer, found in where.items()}

    async def locate(self, nodes: list[str], field: str) -> frozenset[str]:
        """Which of ``nodes`` have ``field`` in their presence (one round trip)."""
        with anyio.fail_after(self.op_timeout):
            async with self._redis.pipeline(transaction=False) as pipe:
                for node in nodes:
                    pipe.hexists(self.keys.presence(node), field)
                replies = await pipe.execute()
        self.stats.commands += len(nodes)
        return frozenset(node for node, found in zip(nodes, replies, strict=True) if found)

    async def answer(self, nodes: list[str]) -> dict[str, Any]:
        """The ``presence`` event's acknowledgement: who is alive where, as JSON."""
        try:
            where = await self.presence(nodes)
        except Exception as exc:
            _logger.error(
                "heartbeat_monitor.cluster.presence_failed", node=self.node_id, error=repr(exc)
            )
            return {"node": self.node_id, "error": "redis unavailable"}
        return {
            "node": self.node_id,
            "nodes": nodes,
            "peers": [[peer, sorted(found)] for peer, found in where.items()],
        }

    def forget(self, node: str, reason: str) -> None:
        """``node`` is gone for ``reason``: its peers leave this node's presence."""
        self._seen.pop(node, None)
        self._missing.discard(node)
        self.monitor.untrack(node)
        self.copies.forget(node, reason)

    async def read_copies(self) -> None:
        """Read in full the copies that need it (first sight, or a gap in the changes)."""
        for node in self.copies.to_read_in_full():
            await self.copies.read_full(self._redis, node, self.op_timeout)

    async def _expired(self, event: Expired) -> None:
        node = str(event.key)
        if not self.may_end():
            # We cannot trust our view of Redis: its silence may be ours. Look again later.
            self.monitor.track(node)
            _logger.warning(
                "heartbeat_monitor.cluster.node_check_deferred", node=self.node_id, other=node
            )
            return
        self._ending.add(node)
        try:
            ended, moved = await self.takeover.end(
                node,
                self._seen.get(node),
                event.expired_at - event.last_beat,
                self.copies.of(node),
            )
            if ended:
                self.forget(node, Reason.NODE_GONE)
            elif moved is not None:
                self._seen[node] = moved
        except Exception as exc:
            ended = False
            _logger.error(
                "heartbeat_monitor.cluster.node_end_failed",
                node=self.node_id,
                other=node,
                error=repr(exc),
            )
        finally:
            self._ending.discard(node)
        if not ended and node in self._seen:
            self.monitor.track(node)  # someone else holds the lease, or Redis failed: re-check

    def counters(self, raw: dict[Any, Any]) -> dict[str, int]:
        """``HGETALL <p>nodes`` as ``{node: counter}`` (bad entries logged and skipped)."""
        counters: dict[str, int] = {}
        for node, value in raw.items():
            try:
                counters[text(node)] = int(value)
            except (TypeError, ValueError, UnicodeDecodeError):
                _logger.error(
                    "heartbeat_monitor.cluster.bad_node_entry",
                    node=self.node_id,
                    entry=repr((node, value))[:80],
                )
        return counters
