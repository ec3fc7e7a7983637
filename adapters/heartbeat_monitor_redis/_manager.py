"""python-socketio's ``AsyncRedisManager``, hardened for Redis faults.

python-socketio carries events between nodes through Redis pub/sub
(``AsyncRedisManager``); we use it as is for everything it does (rooms,
emits, disconnects across nodes) and override only its two Redis-facing
private methods, both marked ``pragma: no cover`` upstream:

* ``_publish``: upstream tries twice and then drops the event (and has no
  timeout, so a slow Redis blocks the caller). Here each attempt is bounded by
  ``op_timeout``; an event that cannot be published waits in a bounded outbox
  (``outbox_size`` events, ``outbox_max_age`` seconds) and is sent, in order,
  once Redis answers again (the next publish, or :meth:`flush` which the
  cluster calls after each good sync) and, if a ``gate`` is set, once it says
  every node listens again (the cluster checks ``PUBSUB NUMSUB``): Redis
  pub/sub drops a message nobody is subscribed to. Local clients get the event at once
  either way (python-socketio emits locally before it publishes).
* ``_redis_listen_with_retries``: upstream backs off up to 60 s (1, 2, 4, ...)
  after Redis drops, so a node could stay deaf long after Redis is back. Here
  the back-off is capped at ``retry_cap`` (1 s), and failures are logged
  through structlog (``heartbeat_monitor.cluster.pubsub_*``).

``tests/redis/test_manager.py`` pins both against the installed python-socketio.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Final, final

import anyio
import socketio
import structlog
from redis import asyncio as aioredis

__all__ = ("ClusterRedisManager",)

_logger = structlog.get_logger("heartbeat_monitor")
_LOG_EVERY: Final = 100


@final
class ClusterRedisManager(socketio.AsyncRedisManager):  # type: ignore[misc]
    """``socketio.AsyncRedisManager`` with bounded Redis calls, an outbox and quick re-subscribe.

    Pass it as ``socketio.AsyncServer(client_manager=ClusterRedisManager(url))``
    on every node; every node must use the same ``url`` and ``channel``.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        channel: str = "socketio",
        *,
        op_timeout: float = 1.0,
        retry_cap: float = 1.0,
        outbox_size: int = 10_000,
        outbox_max_age: float = 60.0,
    ) -> None:
        super().__init__(url, channel=channel)
        self.op_timeout = op_timeout
        self.retry_cap = retry_cap
        self.outbox_max_age = outbox_max_age
        self._outbox: deque[tuple[float, str]] = deque(maxlen=outbox_size)
        self._flushing = asyncio.Lock()
        self._publisher: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_timeout=op_timeout, socket_connect_timeout=op_timeout
        )
        self._listener: aioredis.Redis = aioredis.Redis.from_url(
            url, socket_connect_timeout=op_timeout
        )
        #: After a failure, the outbox waits until ``await gate()`` is true (all nodes
        #: subscribed again: pub/sub drops what nobody listens to), ``gate_max_wait`` at most.
        self.gate: Callable[[], Awaitable[bool]] | None = None
        self.gate_max_wait = 10.0
        self._failed_since: float | None = None
        self._gate_closed_since: float | None = None
        self._last_attempt = -math.inf
        #: Events published, and attempts that failed (plain ints).
        self.published = 0
        self.publish_failures = 0
        self.dropped = 0

    @classmethod
    def of(
        cls, sio: socketio.AsyncServer, *, gate: Callable[[], Awaitable[bool]], max_wait: float
    ) -> ClusterRedisManager | None:
        """``sio``'s client manager, given ``gate`` (``None``, logged, if it is not one of ours)."""
        manager = sio.manager
        if isinstance(manager, cls):
            manager.gate = gate
            manager.gate_max_wait = max_wait
            return manager
        _logger.warning(
            "heartbeat_monitor.cluster.local_notifications_only",
            manager=type(manager).__name__,
            hint="socketio.AsyncServer(client_manager=ClusterRedisManager(url))",
        )
        return None

    @property
    def pending(self) -> int:
        """Events waiting in the outbox for Redis to come back."""
        return len(self._outbox)

    def suspend(self) -> None:
        """Redis failed for someone else (the cluster's sync): queue events from now on.

        They are published once Redis answers and the ``gate`` says every node
        listens again, as after a failure of our own: the other nodes' listeners
        are down too, and pub/sub would drop what they cannot hear.
        """
        if self._failed_since is None:
            self._failed_since = time.monotonic()

    async def _publish(self, data: Any) -> None:
        message = self.json.dumps(data)
        if len(self._outbox) == self._outbox.maxlen:
            self.dropped += 1
            _logger.error(
                "heartbeat_monitor.cluster.outbox_full", dropped=self.dropped, channel=self.channel
            )
        now = time.monotonic()
        self._outbox.append((now, message))
        if self._failed_since is not None and now - self._last_attempt < self.retry_cap:
            return  # Redis failed a moment ago: do not make every emit wait for it
        await self.flush()

    async def flush(self) -> bool:
        """Publish what waits in the outbox, oldest first; ``False`` if Redis still fails."""
        if not self._outbox:
            return True
        async with self._flushing:
            self._last_attempt = time.monotonic()
            if not await self._gate_open():
                return False
            outbox = self._outbox
            while outbox:
                queued_at, message = outbox[0]
                if time.monotonic() - queued_at > self.outbox_max_age:
                    outbox.popleft()
                    self.dropped += 1
                    _logger.error(
                        "heartbeat_monitor.cluster.outbox_expired",
                        dropped=self.dropped,
                        max_age=self.outbox_max_age,
                    )
                    continue
                try:
                    with anyio.fail_after(self.op_timeout):
                        await self._publisher.publish(self.channel, message)
                except Exception as exc:
                    if self._failed_since is None:
                        self._failed_since = time.monotonic()
                    self.publish_failures += 1
                    if self.publish_failures % _LOG_EVERY == 1:
                        _logger.error(
                            "heartbeat_monitor.cluster.publish_failed",
                            error=repr(exc),
                            failures=self.publish_failures,
                            pending=len(outbox),
                        )
                    return False
                outbox.popleft()
                self.published += 1
            if self._failed_since is not None:
                self._failed_since = None
                _logger.info("heartbeat_monitor.cluster.outbox_flushed", channel=self.channel)
        return True

    async def _gate_open(self) -> bool:
        gate = self.gate
        if gate is None or self._failed_since is None:
            return True
        try:
            if await gate():
                self._gate_closed_since = None
                return True
        except Exception:
            return False  # Redis still fails: the wait below starts once it answers
        now = time.monotonic()
        if self._gate_closed_since is None:
            self._gate_closed_since = now
        if now - self._gate_closed_since <= self.gate_max_wait:
            return False
        _logger.warning("heartbeat_monitor.cluster.outbox_gate_timeout", channel=self.channel)
        return True

    async def _redis_listen_with_retries(self) -> AsyncIterator[dict[str, Any]]:
        delay = 0.1
        failed = False
        while True:
            pubsub = self._listener.pubsub(ignore_subscribe_messages=True)
            self.pubsub = pubsub
            try:
                await pubsub.subscribe(self.channel)
                if failed:
                    _logger.info(
                        "heartbeat_monitor.cluster.pubsub_resubscribed", channel=self.channel
                    )
                    failed = False
                delay = 0.1
                async for message in pubsub.listen():
                    yield message
            except Exception as exc:
                if not failed:
                    _logger.error(
                        "heartbeat_monitor.cluster.pubsub_failed",
                        error=repr(exc),
                        channel=self.channel,
                    )
                failed = True
                try:
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
                except Exception as close_exc:  # the connection is already broken
                    _logger.debug("heartbeat_monitor.cluster.close_failed", error=repr(close_exc))
                await asyncio.sleep(delay)
                delay = min(delay * 2, self.retry_cap)

    async def aclose(self) -> None:
        """Stop listening and close the Redis connections (idempotent)."""
        thread = getattr(self, "thread", None)
        if thread is not None and not thread.done():
            thread.cancel()
            await asyncio.wait([thread])
        for client in (self._publisher, self._listener):
            try:
                await client.aclose()
            except Exception as exc:  # Redis already gone: nothing left to close
                _logger.debug("heartbeat_monitor.cluster.close_failed", error=repr(exc))
