"""Several ``serve`` nodes sharing one Redis: presence, node liveness, a dead node's peers.

Theory of operation
===================

Beats stay local. Each node's :class:`SocketIOAdapter` watches its own
connections exactly as on one node; Redis never sees a client's heartbeat.
Once every ``sync_interval`` a node makes **one** Redis round trip (a
pipeline) that

* beats for the node itself: ``HINCRBY <p>nodes <node> 1``;
* writes what changed in its presence since the last sync
  (``HDEL``/``HSET <p>presence:<node>``: peers that left, peers that joined);
* reads every node's beat counter (``HGETALL <p>nodes``) and whether it was
  declared dead while it could not reach Redis (``EXISTS <p>dead:<node>``).

The other nodes are watched by the same core as the peers: a second
:class:`~heartbeat_monitor.HeartbeatMonitor` (timeout ``node_timeout``) that is
beaten whenever a node's counter has changed since the last read. Time is
this node's monotonic clock only: no wall clock crosses the network.

A node whose counter stands still for ``node_timeout`` expires. Then:

1. ``SET <p>lease:<dead> <me> NX PX <lease>``: the one node that wins the
   lease ends the dead node; the others re-check later (if the winner dies
   mid-way, its lease runs out and the next expiry of the dead node on some
   survivor takes over from where it stopped).
2. The winner reads the dead node's counter again; if it moved, the node is
   alive after all (we were the slow one): lease released, nothing declared.
3. It walks ``<p>presence:<dead>`` in chunks; a Lua script, atomic in Redis,
   removes each peer from the dead node's presence, skips peers still present
   on another node (an identity connected to several nodes), and marks the
   rest in ``SADD <p>announced:<dead>``. Only peers newly marked are announced
   -- with the adapter's own ``on_gone`` callbacks and ``peer_gone``
   notification (reason ``"node gone"``), which reach clients on every node
   through python-socketio's Redis manager. So each peer is announced at most
   once cluster-wide even when the lease changes hands; the one window that can
   lose an announcement is a winner dying between the script and its emit.
4. It removes the node (``HDEL <p>nodes``) and leaves ``<p>dead:<dead>``: a
   node that was only cut off from Redis finds the marker when it returns and
   writes its presence again.

While Redis fails, nothing is declared: a node expiring while the last sync
failed is watched again (it gets a fresh ``node_timeout``), and after the
first good sync every node gets a fresh ``node_timeout`` too. Local
monitoring and local notifications go on; after an outage the node rewrites
its whole presence in one ``MULTI`` (Redis may have lost it), and events that
could not be published are sent from the manager's outbox once ``PUBSUB
NUMSUB`` shows every node listening again (pub/sub drops what nobody hears).

An identity connected to several nodes is one peer cluster-wide: when its
last connection on a node ends, a Lua script removes it from that node's
presence and checks the others; only if it is present nowhere else do the
``on_gone`` callbacks run and ``peer_gone`` go out. When a node shuts down
cleanly, its peers end with ``"server shutdown"`` as on one node, and since the
other nodes' clients remain, they are told (``peer_gone``).

The keys and scripts are in :mod:`._cluster_keys`.
"""

from __future__ import annotations

import json
import math
import os
import socket
import time
import uuid
from collections.abc import Hashable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Self, final

import anyio
import anyio.abc
import structlog
from redis import asyncio as aioredis

from heartbeat_monitor import ConfigurationError, Expired, HeartbeatMonitor

from ._adapter import Reason, SocketIOAdapter, _Peer
from ._cluster_keys import (
    CHUNK,
    LEAVE,
    ClusterStats,
    Keys,
    RemoteKey,
    decode,
    encode,
    text,
)
from ._cluster_takeover import Takeover
from ._redis_manager import ClusterRedisManager

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

__all__ = ("ClusterStats", "RedisCluster")

_logger = structlog.get_logger("heartbeat_monitor")

_LOG_EVERY: Final = 20


@final
class RedisCluster:
    """Make one :class:`SocketIOAdapter` a node of a cluster that shares ``redis_url``.

    ``async with RedisCluster(adapter, url):`` (outside the adapter's and the
    server's own ``async with``) registers the node, syncs every
    ``sync_interval`` seconds, watches the other nodes and, for one that stays
    silent ``node_timeout`` seconds, ends its peers once cluster-wide. The
    server's ``client_manager`` should be a :class:`ClusterRedisManager` on the
    same Redis, so that ``peer_gone`` reaches the clients of every node.

    ``presence_event`` (default ``"presence"``; ``None`` for none) lets a
    client ask any node, with an acknowledgement, which peers are alive where.
    """

    __slots__ = (
        "__weakref__",
        "_ending",
        "_healthy",
        "_joined",
        "_keys",
        "_leave_script",
        "_left",
        "_listeners_expected",
        "_manager",
        "_monitor",
        "_outage_started",
        "_redis",
        "_resync",
        "_seen",
        "_takeover",
        "_task_group",
        "adapter",
        "node_id",
        "node_timeout",
        "op_timeout",
        "prefix",
        "stats",
        "sync_interval",
    )

    def __init__(
        self,
        adapter: SocketIOAdapter,
        redis_url: str,
        *,
        node_id: str | None = None,
        node_timeout: float = 10.0,
        sync_interval: float | None = None,
        op_timeout: float | None = None,
        lease: float | None = None,
        prefix: str | None = None,
        presence_event: str | None = "presence",
    ) -> None:
        if not (isinstance(node_timeout, int | float) and math.isfinite(node_timeout)):
            raise ConfigurationError(f"node_timeout must be seconds, not {node_timeout!r}")
        if node_timeout <= 0:
            raise ConfigurationError(f"node_timeout must be > 0, not {node_timeout!r}")
        if sync_interval is None:
            sync_interval = min(node_timeout / 5, 1.0)
        if not (math.isfinite(sync_interval) and 0 < sync_interval <= node_timeout / 3):
            raise ConfigurationError(
                f"sync_interval must be > 0 and at most node_timeout / 3, not {sync_interval!r}"
            )
        if op_timeout is None:
            op_timeout = min(max(sync_interval, 0.5), node_timeout / 2)
        if lease is None:
            lease = max(node_timeout, 5 * op_timeout)
        if adapter._cluster is not None:
            raise ConfigurationError("this adapter already belongs to a cluster")
        self.adapter = adapter
        self.node_id = node_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.node_timeout = float(node_timeout)
        self.sync_interval = float(sync_interval)
        self.op_timeout = float(op_timeout)
        self.prefix = f"heartbeat_monitor:{adapter.namespace}:" if prefix is None else prefix
        self._keys = Keys(self.prefix)
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            redis_url, socket_timeout=op_timeout, socket_connect_timeout=op_timeout
        )
        self._leave_script: AsyncScript = self._redis.register_script(LEAVE)
        manager = adapter.sio.manager
        self._manager = manager if isinstance(manager, ClusterRedisManager) else None
        if isinstance(manager, ClusterRedisManager):
            manager.gate = self._all_listening
            manager.gate_max_wait = max(self.node_timeout, 5.0)  # a dead node never listens
        if not isinstance(manager, ClusterRedisManager):
            _logger.warning(
                "heartbeat_monitor.cluster.local_notifications_only",
                manager=type(manager).__name__,
                hint="socketio.AsyncServer(client_manager=ClusterRedisManager(url))",
            )
        self._monitor = HeartbeatMonitor(self.node_timeout, on_expire=self._on_node_expired)
        #: Each other node's last counter, as read.
        self._seen: dict[str, int] = {}
        #: Nodes being ended here (not re-tracked by the sync meanwhile).
        self._ending: set[str] = set()
        self._joined: dict[Hashable, _Peer] = {}
        self._left: set[str] = set()
        self._resync = True
        self._healthy = True
        self._outage_started: float | None = None
        self._listeners_expected = 0
        self._task_group: anyio.abc.TaskGroup | None = None
        self.stats = ClusterStats()
        self._takeover = Takeover(
            self._redis,
            self._keys,
            adapter,
            self.stats,
            node_id=self.node_id,
            lease_ms=max(1, round(lease * 1000)),
            op_timeout=self.op_timeout,
        )
        adapter._cluster = self
        if presence_event is not None:
            adapter.sio.on(presence_event, self._answer_presence, namespace=adapter.namespace)

    # -- public ----------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """Whether the last sync with Redis succeeded."""
        return self._healthy

    def nodes(self) -> list[str]:
        """The nodes this node believes alive (itself included), without asking Redis."""
        alive = [node for node in self._seen if node in self._monitor and node not in self._ending]
        return sorted([self.node_id, *alive])

    async def presence(self) -> dict[Hashable, frozenset[str]]:
        """Every peer present on a live node, with the nodes it is connected to (one round trip)."""
        nodes = self.nodes()
        async with self._pipeline(transaction=False) as pipe:
            for node in nodes:
                pipe.hkeys(self._keys.presence(node))
            replies = await self._execute(pipe, len(nodes))
        where: dict[Hashable, set[str]] = {}
        for node, fields in zip(nodes, replies, strict=True):
            for field in fields:
                try:
                    peer = decode(field)
                except ValueError:
                    continue
                where.setdefault(peer, set()).add(node)
        return {peer: frozenset(found) for peer, found in where.items()}

    async def locate(self, peer: Hashable) -> frozenset[str]:
        """The live nodes ``peer`` is connected to (empty: not present anywhere)."""
        nodes = self.nodes()
        field = encode(peer)
        async with self._pipeline(transaction=False) as pipe:
            for node in nodes:
                pipe.hexists(self._keys.presence(node), field)
            replies = await self._execute(pipe, len(nodes))
        return frozenset(node for node, found in zip(nodes, replies, strict=True) if found)

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        await self._monitor.__aenter__()
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        await self._takeover.end_previous()
        await self._sync()
        self._task_group.start_soon(self._sync_loop)
        _logger.info(
            "heartbeat_monitor.cluster.started",
            node=self.node_id,
            node_timeout=self.node_timeout,
            sync_interval=self.sync_interval,
            prefix=self.prefix,
            healthy=self._healthy,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task_group, self._task_group = self._task_group, None
        try:
            if task_group is not None:
                task_group.cancel_scope.cancel()
                await task_group.__aexit__(None, None, None)
        finally:
            try:
                with anyio.CancelScope(shield=True):
                    await self._leave_cluster()
                    if self._manager is not None:
                        await self._manager.aclose()
                    await self._redis.aclose()
            finally:
                self.adapter._cluster = None
                await self._monitor.__aexit__(exc_type, exc, tb)

    async def _leave_cluster(self) -> None:
        """A clean exit: the node and its presence leave Redis (the adapter ended its peers)."""
        try:
            async with self._pipeline(transaction=True) as pipe:
                pipe.hdel(self._keys.nodes, self.node_id)
                pipe.delete(self._keys.presence(self.node_id))
                await self._execute(pipe, 2)
        except Exception as exc:
            _logger.error(
                "heartbeat_monitor.cluster.leave_failed", node=self.node_id, error=repr(exc)
            )
        _logger.info("heartbeat_monitor.cluster.stopped", node=self.node_id, stats=repr(self.stats))

    # -- the adapter's hooks ---------------------------------------------------------------

    def joined(self, peer: _Peer) -> None:
        """A new peer on this node (written to Redis at the next sync)."""
        self._joined[peer.key] = peer

    async def left(self, peer: _Peer, reason: str) -> bool:
        """A peer ended on this node: ``True`` if it is gone cluster-wide (announce it)."""
        gone = await self._gone_everywhere(peer, reason)
        if (
            gone
            and reason == Reason.SERVER_SHUTDOWN
            and not isinstance(peer.key, RemoteKey)
            and self.adapter._notify != "none"
        ):
            # One node shuts down: unlike on a single node, other nodes' clients remain.
            await self.adapter._send_gone(peer, reason)
        return gone

    async def _gone_everywhere(self, peer: _Peer, reason: str) -> bool:
        if isinstance(peer.key, RemoteKey):
            return True
        field = self._field(peer.id)
        if field is None:
            return True
        if self._joined.pop(peer.key, None) is not None and peer.key == peer.id:
            return True  # a connection's own peer, never written to Redis
        if peer.key == peer.id:
            self._left.add(field)  # a connection's own peer lives on one node only
            return True
        try:
            with anyio.fail_after(self.op_timeout):
                gone = await self._leave_script(
                    keys=[self._keys.nodes, self._keys.presence(self.node_id)],
                    args=[self._keys.presence_prefix, self.node_id, field],
                )
            self.stats.commands += 1
        except Exception as exc:
            # Redis cannot tell: fall back to one node's view, and fix presence at the next sync.
            self._left.add(field)
            _logger.error(
                "heartbeat_monitor.cluster.leave_check_failed",
                node=self.node_id,
                peer=peer.id,
                error=repr(exc),
            )
            return True
        if not gone:
            _logger.info(
                "heartbeat_monitor.cluster.peer_left_node",
                node=self.node_id,
                peer=peer.id,
                reason=reason,
            )
        return bool(gone)

    # -- sync ------------------------------------------------------------------------------

    def _field(self, peer_id: Hashable) -> str | None:
        try:
            return encode(peer_id)
        except (TypeError, ValueError):
            _logger.error("heartbeat_monitor.cluster.peer_not_json", peer=repr(peer_id)[:80])
            return None

    def _rooms(self, peer: _Peer) -> str:
        adapter = self.adapter
        rooms: set[str] = set()
        for sid in peer.sids:
            try:
                rooms.update(adapter.sio.rooms(sid, namespace=adapter.namespace))
            except Exception:
                continue
        rooms.difference_update(peer.members)
        return json.dumps(sorted(rooms, key=str), default=str)

    def _pipeline(self, *, transaction: bool) -> Any:
        return self._redis.pipeline(transaction=transaction)

    async def _execute(self, pipe: Any, commands: int) -> list[Any]:
        with anyio.fail_after(self.op_timeout):
            replies: list[Any] = await pipe.execute()
        self.stats.commands += commands
        return replies

    async def _sync_loop(self) -> None:
        while True:
            await anyio.sleep(self.sync_interval)
            try:
                await self._sync()
            except Exception:  # a bug or bad data must not stop the node: log, go on
                _logger.exception("heartbeat_monitor.cluster.sync_crashed", node=self.node_id)

    async def _sync(self) -> None:
        """One round trip: beat, presence changes, every node's counter, the dead marker."""
        resync = self._resync
        joined, self._joined = self._joined, {}
        left, self._left = self._left, set()
        nodes_key = self._keys.nodes
        own = self._keys.presence(self.node_id)
        commands = 3
        try:
            async with self._pipeline(transaction=resync) as pipe:
                if resync:
                    pipe.delete(own)
                    pipe.delete(self._keys.dead(self.node_id))
                    commands += 2
                    peers = [peer for peer in self.adapter._peers.values() if peer.gone is None]
                elif left:
                    pipe.hdel(own, *left)
                    commands += 1
                    peers = [peer for peer in joined.values() if peer.gone is None]
                else:
                    peers = [peer for peer in joined.values() if peer.gone is None]
                for start in range(0, len(peers), CHUNK):
                    mapping = {}
                    for peer in peers[start : start + CHUNK]:
                        field = self._field(peer.id)
                        if field is not None:
                            mapping[field] = self._rooms(peer)
                    if mapping:
                        pipe.hset(own, mapping=mapping)
                        commands += 1
                pipe.hincrby(nodes_key, self.node_id, 1)
                pipe.hgetall(nodes_key)
                pipe.exists(self._keys.dead(self.node_id))
                replies = await self._execute(pipe, commands)
        except Exception as exc:
            self._sync_failed(exc)
            return
        counter, counters, declared_dead = replies[-3:]
        if resync:
            self._resync = False
            self.stats.resyncs += 1
            _logger.info(
                "heartbeat_monitor.cluster.presence_written", node=self.node_id, peers=len(peers)
            )
        elif counter == 1 and self.stats.syncs > 0:
            self._resync = True  # Redis lost our data (restarted empty): write it all again
            _logger.warning("heartbeat_monitor.cluster.redis_state_lost", node=self.node_id)
        if declared_dead and not resync:
            self._resync = True
            _logger.warning("heartbeat_monitor.cluster.declared_dead_rejoining", node=self.node_id)
        self.stats.syncs += 1
        self._observe(self._counters(counters))
        if not self._healthy:
            self._recovered()
        if self._manager is not None and self._manager.pending:
            await self._manager.flush()

    def _counters(self, raw: dict[Any, Any]) -> dict[str, int]:
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

    def _sync_failed(self, exc: BaseException) -> None:
        self.stats.sync_failures += 1
        self._resync = True  # a partial pipeline or a Redis restart: rewrite presence
        if self._healthy:
            self._healthy = False
            self._outage_started = time.monotonic()
            # Redis may come back empty, before every node has rejoined: expect them all.
            self._listeners_expected = len(self.nodes())
            _logger.error(
                "heartbeat_monitor.cluster.redis_unavailable", node=self.node_id, error=repr(exc)
            )
        elif self.stats.sync_failures % _LOG_EVERY == 0:
            _logger.error(
                "heartbeat_monitor.cluster.redis_still_unavailable",
                node=self.node_id,
                error=repr(exc),
                failures=self.stats.sync_failures,
            )

    def _recovered(self) -> None:
        self._healthy = True
        started, self._outage_started = self._outage_started, None
        # The outage does not count against anybody: every node gets a fresh node_timeout.
        for node in self._seen:
            self._monitor.beat(node)
        _logger.info(
            "heartbeat_monitor.cluster.redis_recovered",
            node=self.node_id,
            outage=None if started is None else round(time.monotonic() - started, 3),
        )

    def _observe(self, counters: dict[str, int]) -> None:
        monitor = self._monitor
        seen = self._seen
        for node, counter in counters.items():
            if node == self.node_id or node in self._ending:
                continue
            last = seen.get(node)
            if node not in monitor:
                monitor.track(node)
                if last is None:
                    _logger.info(
                        "heartbeat_monitor.cluster.node_joined", node=self.node_id, other=node
                    )
            elif counter != last:
                monitor.beat(node)
            seen[node] = counter
        for node in [node for node in seen if node not in counters and node not in self._ending]:
            del seen[node]
            monitor.untrack(node)
            _logger.info("heartbeat_monitor.cluster.node_left", node=self.node_id, other=node)

    async def _all_listening(self) -> bool:
        """Whether every live node is subscribed to python-socketio's channel again."""
        assert self._manager is not None
        with anyio.fail_after(self.op_timeout):
            [(_, listening)] = await self._redis.pubsub_numsub(self._manager.channel)
        self.stats.commands += 1
        return int(listening) >= max(len(self.nodes()), self._listeners_expected)

    # -- a dead node ---------------------------------------------------------------------

    async def _on_node_expired(self, event: Expired) -> None:
        node = str(event.key)
        if not self._healthy:
            # We cannot read Redis: its silence may be ours. Look again later.
            self._monitor.track(node)
            _logger.warning(
                "heartbeat_monitor.cluster.node_check_deferred", node=self.node_id, other=node
            )
            return
        self._ending.add(node)
        try:
            ended, moved = await self._takeover.end(
                node, self._seen.get(node), event.expired_at - event.last_beat
            )
            if ended:
                self._seen.pop(node, None)
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
            self._monitor.track(node)  # someone else holds the lease, or Redis failed: re-check

    # -- presence over Socket.IO -----------------------------------------------------------

    async def _answer_presence(self, sid: str, *args: Any) -> dict[str, Any]:
        try:
            where = await self.presence()
        except Exception as exc:
            _logger.error(
                "heartbeat_monitor.cluster.presence_failed", node=self.node_id, error=repr(exc)
            )
            return {"node": self.node_id, "error": "redis unavailable"}
        return {
            "node": self.node_id,
            "nodes": self.nodes(),
            "peers": [[peer, sorted(nodes)] for peer, nodes in where.items()],
        }

    def __repr__(self) -> str:
        return (
            f"<RedisCluster node={self.node_id!r} nodes={len(self.nodes())} "
            f"healthy={self._healthy} node_timeout={self.node_timeout!r}>"
        )
