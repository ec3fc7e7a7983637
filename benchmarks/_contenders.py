"""The contenders: our tracker and driver, and what users would otherwise write.

Every contender offers the same small surface so one harness can drive them all
in lockstep on one simulated clock (see ``_workloads``):

* ``track``/``untrack``/``beat_many`` — what a server does when peers connect,
  leave and send heartbeats (``beat_many`` is the plain loop a user would write);
* ``due(now)`` — whether the contender has maintenance work at ``now`` (the
  moment its timer, scan period or heap head says so);
* ``maintain()`` — do that work once; returns the expired keys with the time
  each was declared expired, and, for the async driver, the longest stretch it
  held the event loop.

Each naive contender is written the way a careful user would write it (one
``now`` per scan, a comprehension, no per-peer ``time.monotonic()`` calls):
the comparison is with good code, not with a straw man.
"""

from __future__ import annotations

import asyncio
import heapq
import sys
import time
from collections.abc import Callable, Hashable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

import structlog

from heartbeat_monitor import Clock, Expired, HeartbeatMonitor, LivenessTracker

__all__ = (
    "AsyncioTimers",
    "Contender",
    "DictFloor",
    "FullScan",
    "HeapDeadlines",
    "Maintained",
    "MonitorContender",
    "TrackerContender",
    "quiet_structlog",
)

Now = Callable[[], float]


def quiet_structlog() -> None:
    """Drop log records below warning: measure the monitor, not the printing of its logs."""
    import logging

    structlog.configure(
        wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),  # stdout is for the results
    )


@dataclass(slots=True)
class Maintained:
    """What one maintenance step did."""

    #: (key, clock time at which it was declared expired)
    expired: list[tuple[Hashable, float]] = field(default_factory=list)
    #: Longest time the step held the event loop, if the contender measures it itself (ns).
    block_ns: int | None = None


class Contender(Protocol):
    """The surface the harness drives (see the module docstring)."""

    #: Short, stable name (table rows, JSON keys, plot legends).
    name: str
    #: How late an expiry may be by design (seconds); ``None`` if it never expires anyone.
    lateness_bound: float | None

    def track(self, key: Hashable) -> None: ...
    def untrack(self, key: Hashable) -> None: ...
    def beat_many(self, keys: Iterable[Hashable]) -> None: ...
    def due(self, now: float) -> bool: ...
    def maintain(self) -> Maintained: ...
    def close(self) -> None: ...


class DictFloor:
    """The floor: ``last_seen[key] = time.monotonic()`` inline in the loop; never expires anyone."""

    lateness_bound: float | None = None

    def __init__(self, timeout: float, now: Now, *, name: str = "floor: dict write") -> None:
        self.name = name
        self.last: dict[Hashable, float] = {}
        self._now = now

    def track(self, key: Hashable) -> None:
        self.last[key] = self._now()

    def untrack(self, key: Hashable) -> None:
        self.last.pop(key, None)

    def beat_many(self, keys: Iterable[Hashable]) -> None:
        last = self.last
        now = self._now
        for key in keys:
            last[key] = now()

    def due(self, now: float) -> bool:
        return False

    def maintain(self) -> Maintained:
        return Maintained()

    def close(self) -> None:
        self.last.clear()


class FullScan:
    """The source article: a dict of last-seen times, scanned in full every ``interval``."""

    def __init__(self, timeout: float, now: Now, *, interval: float, name: str) -> None:
        self.name = name
        self.lateness_bound: float | None = interval
        self.timeout = timeout
        self.interval = interval
        self.last: dict[Hashable, float] = {}
        self._now = now
        self._next_scan = now() + interval

    def track(self, key: Hashable) -> None:
        self.last[key] = self._now()

    def untrack(self, key: Hashable) -> None:
        self.last.pop(key, None)

    def beat(self, key: Hashable) -> None:
        """The article's heartbeat handler: one dict write."""
        self.last[key] = self._now()

    def beat_many(self, keys: Iterable[Hashable]) -> None:
        beat = self.beat
        for key in keys:
            beat(key)

    def due(self, now: float) -> bool:
        return now >= self._next_scan

    def maintain(self) -> Maintained:
        now = self._now()
        limit = now - self.timeout
        last = self.last
        dead = [key for key, seen in last.items() if seen < limit]
        for key in dead:
            del last[key]
        while self._next_scan <= now:
            self._next_scan += self.interval
        return Maintained([(key, now) for key in dead])

    def close(self) -> None:
        self.last.clear()


class _SimulatedLoop(asyncio.SelectorEventLoop):
    """An asyncio loop whose timers follow a simulated clock (it is only ever run for one step)."""

    def __init__(self, now: Now) -> None:
        super().__init__()
        self._sim_now = now

    def time(self) -> float:
        return self._sim_now()


class AsyncioTimers:
    """One ``loop.call_later`` per peer, cancelled and re-armed on every beat."""

    lateness_bound: float | None = 0.0

    def __init__(
        self, timeout: float, now: Now, *, simulated: bool, name: str = "asyncio timer per peer"
    ) -> None:
        self.name = name
        self.timeout = timeout
        self.loop: asyncio.AbstractEventLoop = (
            _SimulatedLoop(now) if simulated else asyncio.new_event_loop()
        )
        self.handles: dict[Hashable, asyncio.TimerHandle] = {}
        self._expired: list[tuple[Hashable, float]] = []

    def _expire(self, key: Hashable) -> None:
        del self.handles[key]
        self._expired.append((key, self.loop.time()))

    def track(self, key: Hashable) -> None:
        self.handles[key] = self.loop.call_later(self.timeout, self._expire, key)

    def untrack(self, key: Hashable) -> None:
        handle = self.handles.pop(key, None)
        if handle is not None:
            handle.cancel()

    def beat_many(self, keys: Iterable[Hashable]) -> None:
        handles = self.handles
        call_later = self.loop.call_later
        timeout = self.timeout
        expire = self._expire
        for key in keys:
            handles[key].cancel()
            handles[key] = call_later(timeout, expire, key)

    def due(self, now: float) -> bool:
        # asyncio's own timer heap (it rebuilds the list when it purges cancelled timers).
        scheduled: list[asyncio.TimerHandle] = self.loop._scheduled  # type: ignore[attr-defined]
        return bool(scheduled) and scheduled[0].when() <= now

    def run_once(self) -> None:
        """One loop iteration, zero select timeout (the documented ``stop()`` + ``run_forever``)."""
        self.loop.stop()
        self.loop.run_forever()

    def maintain(self) -> Maintained:
        self.run_once()
        expired, self._expired = self._expired, []
        return Maintained(expired)

    def close(self) -> None:
        for handle in self.handles.values():
            handle.cancel()
        self.handles.clear()
        self.loop.close()


class HeapDeadlines:
    """A heapq of (deadline, key): push on every beat, skip stale entries when they surface."""

    lateness_bound: float | None = 0.0

    def __init__(self, timeout: float, now: Now, *, name: str = "heapq + lazy deletion") -> None:
        self.name = name
        self.timeout = timeout
        self.heap: list[tuple[float, Hashable]] = []
        self.deadline: dict[Hashable, float] = {}
        self._now = now

    def track(self, key: Hashable) -> None:
        self.beat(key)

    def untrack(self, key: Hashable) -> None:
        self.deadline.pop(key, None)

    def beat(self, key: Hashable) -> None:
        deadline = self._now() + self.timeout
        self.deadline[key] = deadline
        heapq.heappush(self.heap, (deadline, key))

    def beat_many(self, keys: Iterable[Hashable]) -> None:
        beat = self.beat
        for key in keys:
            beat(key)

    def due(self, now: float) -> bool:
        return bool(self.heap) and self.heap[0][0] < now

    def maintain(self) -> Maintained:
        now = self._now()
        heap = self.heap
        current = self.deadline
        pop = heapq.heappop
        expired: list[tuple[Hashable, float]] = []
        while heap and heap[0][0] < now:
            deadline, key = pop(heap)
            if current.get(key) == deadline:
                del current[key]
                expired.append((key, now))
        return Maintained(expired)

    def close(self) -> None:
        self.heap.clear()
        self.deadline.clear()


class TrackerContender:
    """Our sans-I/O ``LivenessTracker``, polled as the driver polls it: 2 ms of work at a time."""

    def __init__(
        self,
        timeout: float,
        *,
        resolution: float,
        clock: Clock | None,
        batch_size: int | None = None,
        max_time: float | None = 0.002,
        name: str = "LivenessTracker",
    ) -> None:
        self.name = name
        self.lateness_bound: float | None = resolution
        self.tracker = LivenessTracker(timeout, resolution=resolution, clock=clock)
        self.batch_size = batch_size
        self.max_time = max_time

    def track(self, key: Hashable) -> None:
        self.tracker.track(key)

    def untrack(self, key: Hashable) -> None:
        self.tracker.untrack(key)

    def beat_many(self, keys: Iterable[Hashable]) -> None:
        beat = self.tracker.beat
        for key in keys:
            beat(key)

    def due(self, now: float) -> bool:
        deadline = self.tracker.next_deadline()
        return deadline is not None and deadline <= now

    def maintain(self) -> Maintained:
        events = self.tracker.poll(limit=self.batch_size, max_time=self.max_time)
        return Maintained([(event.key, event.expired_at) for event in events])

    def close(self) -> None:
        pass


class MonitorContender:
    """Our ``HeartbeatMonitor`` driver, running on its own asyncio loop, on the simulated clock.

    The loop runs only during ``maintain`` (until ``wait_idle``), with a probe task that
    records the longest gap between its turns, in thread CPU time: the longest time the
    driver (or anything else) held the loop, not counting preemption by other processes.
    """

    def __init__(
        self,
        timeout: float,
        *,
        resolution: float,
        clock: Clock,
        batch_size: int | None = None,
        name: str = "HeartbeatMonitor",
    ) -> None:
        self.name = name
        self.lateness_bound: float | None = resolution
        self.loop = asyncio.new_event_loop()
        self._expired: list[tuple[Hashable, float]] = []
        self.monitor = HeartbeatMonitor(
            timeout,
            resolution=resolution,
            clock=clock,
            on_expire=self._on_expire,
            batch_size=batch_size,
        )
        self._stop = asyncio.Event()
        self._ready = asyncio.Event()
        self._host = self.loop.create_task(self._run())
        ready = self.loop.create_task(self._ready.wait())
        self.loop.run_until_complete(
            asyncio.wait({self._host, ready}, return_when=asyncio.FIRST_COMPLETED)
        )
        if self._host.done():
            self._host.result()  # the monitor failed to start: raise its error

    def _on_expire(self, event: Expired) -> None:
        self._expired.append((event.key, event.expired_at))

    async def _run(self) -> None:
        async with self.monitor:
            self._ready.set()
            await self._stop.wait()

    def track(self, key: Hashable) -> None:
        self.monitor.track(key)

    def untrack(self, key: Hashable) -> None:
        self.monitor.untrack(key)

    def beat_many(self, keys: Iterable[Hashable]) -> None:
        beat = self.monitor.beat
        for key in keys:
            beat(key)

    def due(self, now: float) -> bool:
        deadline = self.monitor.tracker.next_deadline()
        return deadline is not None and deadline <= now

    async def _settle(self) -> int:
        longest = 0
        done = False

        clock = time.thread_time_ns  # CPU time: a preempted turn is not a longer block
        last = clock()  # the driver may run before the probe's first turn: count that too

        async def probe() -> None:
            nonlocal longest, last
            while not done:
                await asyncio.sleep(0)
                now = clock()
                if now - last > longest:
                    longest = now - last
                last = now

        task = asyncio.ensure_future(probe())
        await asyncio.sleep(0)
        await self.monitor.wait_idle()
        done = True
        await task
        return longest

    def maintain(self) -> Maintained:
        block = self.loop.run_until_complete(self._settle())
        expired, self._expired = self._expired, []
        return Maintained(expired, block)

    def close(self) -> None:
        self._stop.set()
        self.loop.run_until_complete(self._host)
        self.loop.close()
