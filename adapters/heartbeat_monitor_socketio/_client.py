"""The client side: emit heartbeats from a python-socketio ``AsyncClient``."""

from __future__ import annotations

import asyncio
import math
import random
from types import TracebackType
from typing import Any, Self, final

import socketio
import structlog

from heartbeat_monitor import ConfigurationError

__all__ = ("HeartbeatClient",)

_logger = structlog.get_logger("heartbeat_monitor")


@final
class HeartbeatClient:
    """Emits ``event`` on ``client`` every ``interval`` seconds (minus up to ``jitter``).

    Jitter only makes beats *earlier* (each wait is ``interval * U(1 - jitter, 1)``),
    so a server that allows ``misses`` intervals is never surprised, while
    thousands of clients started together spread out. Beats are skipped while
    the client is not connected to ``namespace`` (python-socketio reconnects on
    its own). ``async with HeartbeatClient(client, 5):`` or ``start()`` /
    ``await stop()``.
    """

    __slots__ = (
        "_task",
        "beats_sent",
        "client",
        "event",
        "interval",
        "jitter",
        "namespace",
        "payload",
    )

    def __init__(
        self,
        client: socketio.AsyncClient,
        interval: float,
        *,
        event: str = "heartbeat",
        namespace: str = "/",
        jitter: float = 0.1,
        payload: Any = None,
    ) -> None:
        if not (isinstance(interval, int | float) and math.isfinite(interval) and interval > 0):
            raise ConfigurationError(f"interval must be a finite number > 0, not {interval!r}")
        if not (isinstance(jitter, int | float) and 0 <= jitter < 1):
            raise ConfigurationError(f"jitter must be in [0, 1), not {jitter!r}")
        self.client = client
        self.interval = float(interval)
        self.event = event
        self.namespace = namespace
        self.jitter = float(jitter)
        self.payload = payload
        #: Heartbeats emitted so far.
        self.beats_sent = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start beating in a background task (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        """Stop beating and wait until the task has ended (idempotent)."""
        task, self._task = self._task, None
        if task is None:
            return
        task.cancel()
        # asyncio.wait, not ``await task``: a CancelledError here is then always the
        # caller's own (e.g. an anyio cancel scope's), never swallowed by mistake.
        await asyncio.wait({task})
        if not task.cancelled() and (error := task.exception()) is not None:
            raise error

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    async def beat(self) -> bool:
        """Emit one heartbeat now; ``False`` if not connected."""
        client = self.client
        if not client.connected or self.namespace not in client.namespaces:
            return False
        try:
            await client.emit(self.event, self.payload, namespace=self.namespace)
        except socketio.exceptions.SocketIOError as exc:
            _logger.debug("heartbeat_monitor.socketio.beat_not_sent", error=str(exc))
            return False
        self.beats_sent += 1
        return True

    async def _run(self) -> None:
        uniform = random.uniform
        low = 1.0 - self.jitter
        while True:
            await self.beat()
            await asyncio.sleep(self.interval * uniform(low, 1.0))

    async def __aenter__(self) -> Self:
        self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()
