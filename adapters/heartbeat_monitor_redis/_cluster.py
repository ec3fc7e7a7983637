"""Several Socket.IO nodes sharing one Redis, built on the hub's public hooks.

Beats stay local: each node's hub decides its own peers' lives exactly as on
one node. The cluster uses the hub's ``on_open``, ``add_gate``, ``announce``,
``episodes`` and ``rooms_of`` (:mod:`._own`, :mod:`._takeover`), and the
adapter's ``aclose``. Once every ``sync_interval`` a node makes **one** Redis
round trip: its beat, its presence changes, every node's counter, its own dead
marker, and the others' presence changes (:mod:`._nodes`, :mod:`._copies`).

**Fencing.** The others declare this node dead once its counter has stood still
``node_timeout``. So a node without a good sync for ``node_timeout -
sync_interval`` can no longer know it is still a member: it stops claiming its
peers (each is disconnected with ``"node isolated"``; their departures wait).
When Redis answers again it takes its own lease, announces the fenced peers no
survivor has announced, and writes its presence again. The whole protocol, with
its reasoning: ``docs/redis.md``.
"""

from __future__ import annotations

import os
import socket
import time
import uuid
import weakref
from collections.abc import Hashable
from types import TracebackType
from typing import Any, Final, Literal, Self, final

import anyio
import anyio.abc
import structlog
from redis import asyncio as aioredis

from heartbeat_monitor import ConfigurationError, Reason
from heartbeat_monitor_socketio import SocketIOAdapter

from ._fence import Fence
from ._keys import MARKER_TTL, ClusterStats, Keys, encode
from ._manager import ClusterRedisManager
from ._nodes import Nodes
from ._options import ClusterOptions
from ._own import OwnPeers
from ._takeover import Takeover

__all__ = ("RedisCluster",)

_logger = structlog.get_logger("heartbeat_monitor")

_LOG_EVERY: Final = 20
#: Adapters that belong to a running or constructed cluster.
_MEMBERS: weakref.WeakSet[SocketIOAdapter] = weakref.WeakSet()


@final
class RedisCluster:
    """Make one :class:`SocketIOAdapter` a node of a cluster that shares ``redis_url``.

    ``async with RedisCluster(adapter, url):`` (outside the server's own
    ``async with``) registers the node, syncs every ``sync_interval`` seconds,
    watches the other nodes and, for one that stays silent ``node_timeout``
    seconds, ends its peers once cluster-wide. The server's ``client_manager``
    should be a :class:`ClusterRedisManager` on the same Redis, so that
    ``peer_gone`` reaches the clients of every node.

    ``fence`` (default on): after ``node_timeout - sync_interval`` without a
    good sync, disconnect this node's peers (``"node isolated"``) rather than
    keep serving peers the others may be announcing gone. ``presence_event``
    (default ``"presence"``; ``None`` for none) lets a client ask any node, with
    an acknowledgement, which peers are alive where.
    """

    __slots__ = (
        "__weakref__",
        "_fence",
        "_healthy",
        "_listeners_expected",
        "_manager",
        "_nodes",
        "_outage_started",
        "_own",
        "_redis",
        "_rejoin",
        "_resync",
        "_takeover",
        "_task_group",
        "adapter",
        "hub",
        "keys",
        "node_id",
        "options",
        "prefix",
        "stats",
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
        fence: bool = True,
    ) -> None:
        self.options = options = ClusterOptions.build(
            node_timeout=node_timeout,
            sync_interval=sync_interval,
            op_timeout=op_timeout,
            lease=lease,
            fence=fence,
        )
        if adapter in _MEMBERS:
            raise ConfigurationError("this adapter already belongs to a cluster")
        self.adapter = adapter
        self.hub = hub = adapter.hub
        self.node_id = node_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        op_timeout = options.op_timeout
        self.prefix = f"heartbeat_monitor:{adapter.namespace}:" if prefix is None else prefix
        self.keys = keys = Keys(self.prefix)
        self._redis: aioredis.Redis = aioredis.Redis.from_url(
            redis_url, socket_timeout=op_timeout, socket_connect_timeout=op_timeout
        )
        # A dead node never listens: the outbox waits for all at most max(node_timeout, 5 s).
        self._manager = ClusterRedisManager.of(
            adapter.sio, gate=self._all_listening, max_wait=max(options.node_timeout, 5.0)
        )
        self.stats = ClusterStats()
        self._takeover = Takeover(
            self._redis,
            keys,
            hub,
            self.stats,
            node_id=self.node_id,
            lease_ms=max(1, round(options.lease * 1000)),
            op_timeout=op_timeout,
        )
        self._nodes = Nodes(
            self._redis,
            keys,
            self._takeover,
            self.stats,
            node_id=self.node_id,
            node_timeout=options.node_timeout,
            op_timeout=op_timeout,
            may_end=self._may_end,
            roster=hub.roster,
        )
        self._own = OwnPeers(  # this node's peers in Redis (the hub's on_open and gate hooks)
            hub, self._redis, keys, self.stats, node_id=self.node_id, op_timeout=op_timeout
        )
        #: Why this node must (re)join before its next sync: at start, after fencing itself,
        #: or (not fencing) after finding that another node declared it dead.
        self._rejoin: Literal["start", "fenced", "declared"] | None = "start"
        self._resync = True
        self._fence = Fence(
            enabled=options.fence,
            after=options.fence_after,
            sync_interval=options.sync_interval,
            fence=self._fenced,
        )
        self._healthy = True
        self._outage_started: float | None = None
        self._listeners_expected = 0
        self._task_group: anyio.abc.TaskGroup | None = None
        _MEMBERS.add(adapter)
        if presence_event is not None:
            adapter.sio.on(presence_event, self._answer_presence, namespace=adapter.namespace)

    # -- public ----------------------------------------------------------------------------

    @property
    def healthy(self) -> bool:
        """Whether the last sync with Redis succeeded."""
        return self._healthy

    @property
    def fenced(self) -> bool:
        """Whether this node has fenced itself and not rejoined yet."""
        return self._rejoin == "fenced"

    def nodes(self) -> list[str]:
        """The nodes this node believes alive (itself included), without asking Redis."""
        return sorted([self.node_id, *self._nodes.alive()])

    def last_known(self, node: str) -> frozenset[Hashable]:
        """``node``'s peers as this node last read them (announced from here if Redis lost them)."""
        return self._nodes.last_known(node)

    async def presence(self) -> dict[Hashable, frozenset[str]]:
        """Every peer present on a live node, with the nodes it is connected to (one round trip)."""
        return await self._nodes.presence(self.nodes())

    async def locate(self, peer: Hashable) -> frozenset[str]:
        """The live nodes ``peer`` is connected to (empty: not present anywhere)."""
        return await self._nodes.locate(self.nodes(), encode(peer))

    # -- lifecycle -------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        self._own.start()  # peers that connected before the cluster started count as new
        await self._nodes.monitor.__aenter__()
        self._task_group = anyio.create_task_group()
        await self._task_group.__aenter__()
        await self._step()
        self._task_group.start_soon(self._sync_loop)
        if self.options.fence:
            self._task_group.start_soon(self._fence.run)
        _logger.info(
            "heartbeat_monitor.cluster.started",
            node=self.node_id,
            node_timeout=self.options.node_timeout,
            sync_interval=self.options.sync_interval,
            prefix=self.prefix,
            healthy=self._healthy,
            fence=self.options.fence,
        )
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        task_group, self._task_group = self._task_group, None
        me = self.node_id
        try:
            if task_group is not None:
                task_group.cancel_scope.cancel()
                await task_group.__aexit__(None, None, None)
        finally:
            try:
                with anyio.CancelScope(shield=True):
                    # The other nodes' clients remain: they are told of this node's peers
                    # (nothing left to do if the server has closed the adapter already).
                    try:
                        await self.adapter.aclose(notify=True)
                    except Exception:
                        _logger.exception("heartbeat_monitor.cluster.close_failed", node=me)
                    if self._rejoin == "fenced":
                        await self._rejoin_cluster()  # Redis may answer now: announce the fenced
                    if self._rejoin is None:
                        await self._leave_cluster()
                    if self._manager is not None:
                        await self._manager.aclose()
                    await self._redis.aclose()
            finally:
                self._own.stop()
                _MEMBERS.discard(self.adapter)
                await self._nodes.monitor.__aexit__(exc_type, exc, tb)

    async def _leave_cluster(self) -> None:
        """A clean exit: the node leaves Redis, with a marker saying so (its peers were told)."""
        me = self.node_id
        try:
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.hdel(self.keys.nodes, me)
                pipe.delete(self.keys.presence(me), self.keys.changes(me), self.keys.slots(me))
                pipe.set(self.keys.left(me), me, ex=MARKER_TTL)
                await self._execute(pipe, 3)
        except Exception as exc:
            _logger.error("heartbeat_monitor.cluster.leave_failed", node=me, error=repr(exc))
        _logger.info("heartbeat_monitor.cluster.stopped", node=me, stats=repr(self.stats))

    # -- sync ------------------------------------------------------------------------------

    async def _execute(self, pipe: Any, commands: int) -> list[Any]:
        with anyio.fail_after(self.options.op_timeout):
            replies: list[Any] = await pipe.execute()
        self.stats.commands += commands
        return replies

    async def _sync_loop(self) -> None:
        while True:
            await anyio.sleep(self.options.sync_interval)
            try:
                await self._step()
            except Exception:  # a bug or bad data must not stop the node: log, go on
                _logger.exception("heartbeat_monitor.cluster.sync_crashed", node=self.node_id)

    async def _step(self) -> None:
        self._fence.check()
        try:
            await (self._rejoin_cluster() if self._rejoin is not None else self._sync())
        finally:  # presence states say "partial": true while some node's presence is unread
            unread = not self._healthy or self._rejoin is not None
            self.hub.roster.partial = unread or self._nodes.copies.unsettled()

    async def _sync(self) -> None:
        """One round trip: beat, presence changes, every node's counter, our dead marker."""
        resync = self._resync
        started = time.monotonic()
        me = self.node_id
        try:
            async with self._redis.pipeline(transaction=resync) as pipe:
                write, commands = self._own.write(pipe, resync=resync)
                pipe.hincrby(self.keys.nodes, me, 1)
                pipe.hgetall(self.keys.nodes)
                pipe.exists(self.keys.dead(me))
                reading = self._nodes.copies.read(pipe)
                replies = await self._execute(pipe, commands + 3 + reading)
        except Exception as exc:
            self._sync_failed(exc)
            return
        self._own.written(write)
        if self._rejoin is not None:
            return  # fenced while this sync was on its way: rejoin first
        self._fence.synced(started)
        if reading:
            *replies, read = replies
        counter, counters, declared_dead = replies[-3:]
        self.stats.syncs += 1
        if counter == 1 and self.stats.syncs > 1:
            self._nodes.copies.restart()  # the others' streams may have started again too
        if resync:
            self._resync = False
            self.stats.resyncs += 1
            peers = len(write.episodes)
            _logger.info("heartbeat_monitor.cluster.presence_written", node=me, peers=peers)
        elif counter == 1 and self.stats.syncs > 1:
            self._resync = True  # Redis lost our data (restarted empty): write it all again
            _logger.warning("heartbeat_monitor.cluster.redis_state_lost", node=me)
        missing = self._nodes.observe(self._nodes.counters(counters))
        if reading:
            self._nodes.copies.apply(read)
        if not self._healthy:
            self._recovered()
        if declared_dead:
            # Another node ended us (we were silent too long): our peers were announced.
            if self.options.fence:
                self._fenced("declared dead by another node")
            else:
                self._rejoin = "declared"  # keep serving them, and join again
                _logger.warning("heartbeat_monitor.cluster.declared_dead_rejoining", node=me)
            return
        try:
            await self._nodes.settle(missing)
            await self._nodes.read_copies()
        except Exception as exc:  # tried again at the next sync
            _logger.error("heartbeat_monitor.cluster.follow_up_failed", node=me, error=repr(exc))
        if self._manager is not None and self._manager.pending:
            await self._manager.flush()

    def _sync_failed(self, exc: BaseException) -> None:
        self.stats.sync_failures += 1
        self._resync = True  # a partial pipeline or a Redis restart: rewrite presence
        if self._healthy:
            self._healthy = False
            self._outage_started = time.monotonic()
            # Redis may come back empty, before every node has rejoined: expect them all.
            self._listeners_expected = len(self.nodes())
            if self._manager is not None:
                self._manager.suspend()  # the others' listeners are down too
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
        self._nodes.refresh()  # the outage does not count against anybody
        _logger.info(
            "heartbeat_monitor.cluster.redis_recovered",
            node=self.node_id,
            outage=None if started is None else round(time.monotonic() - started, 3),
        )

    def _may_end(self) -> bool:
        """Whether this node may end others: its last sync succeeded and it is a member."""
        return self._healthy and self._rejoin is None

    async def _all_listening(self) -> bool:
        """Whether every live node is subscribed to python-socketio's channel again."""
        assert self._manager is not None
        with anyio.fail_after(self.options.op_timeout):
            [(_, listening)] = await self._redis.pubsub_numsub(self._manager.channel)
        self.stats.commands += 1
        return int(listening) >= max(len(self.nodes()), self._listeners_expected)

    # -- fencing and (re)joining -----------------------------------------------------------

    def _fenced(self, why: str) -> None:
        """Stop claiming this node's peers: disconnect them; their departure waits for Redis."""
        peers = self._own.fence()
        self._rejoin = "fenced"
        self._fence.disarm()
        self.stats.fences += 1
        _logger.warning("heartbeat_monitor.cluster.fenced", node=self.node_id, why=why, peers=peers)
        self.hub.close_all(Reason.NODE_ISOLATED, notify=False)

    async def _rejoin_cluster(self) -> None:
        """Under our own lease: announce what nobody announced yet, clear the markers, resync."""
        me = self.node_id
        why = self._rejoin
        try:
            if not await self._takeover.acquire(me):
                _logger.info("heartbeat_monitor.cluster.rejoin_waits_for_lease", node=me)
                return  # another node is ending us: its announcements first
        except Exception as exc:
            self._sync_failed(exc)
            return
        try:
            source: dict[str, str] | None
            if why == "start":  # a previous incarnation's peers, if it died
                source, reason = None, Reason.NODE_GONE
            else:  # fenced peers, but those that came back here meanwhile: they never left
                source, reason = self._own.to_announce(), Reason.NODE_ISOLATED
            announced = await self._takeover.end_peers(me, source, reason)
            if announced is None:
                return
            async with self._redis.pipeline(transaction=True) as pipe:
                pipe.delete(self.keys.presence(me), self.keys.changes(me), self.keys.slots(me))
                pipe.delete(self.keys.announced(me), self.keys.dead(me), self.keys.left(me))
                await self._execute(pipe, 2)
            self._rejoin = None
            self._own.rejoined(reason)
            self._resync = True
            if why == "fenced" or announced:
                event = "rejoined" if why == "fenced" else "previous_incarnation_ended"
                _logger.warning(
                    f"heartbeat_monitor.cluster.{event}", node=me, peers_announced=announced
                )
            await self._sync()  # holding the lease: nobody starts ending us meanwhile
        except Exception as exc:
            self._sync_failed(exc)
        finally:
            await self._takeover.release(me)

    # -- presence over Socket.IO -----------------------------------------------------------

    async def _answer_presence(self, sid: str, *args: Any) -> dict[str, Any]:
        return await self._nodes.answer(self.nodes())

    def __repr__(self) -> str:
        return (
            f"<RedisCluster node={self.node_id!r} nodes={len(self.nodes())} "
            f"healthy={self._healthy} fenced={self.fenced}>"
        )
