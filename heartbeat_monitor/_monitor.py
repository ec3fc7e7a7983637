"""The async driver: one task, one timer, for every peer in the process.

Like anyio's memory streams, the work is synchronous (``LivenessTracker.poll``)
and the async part only waits: sleep until the tracker's next deadline, poll,
dispatch, repeat. Everything that can be slow (async callbacks, consumers of
the event stream) runs outside that loop, so it never delays another peer's
expiry.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Hashable
from types import TracebackType
from typing import Any, Self, final

import anyio
import anyio.abc
import anyio.lowlevel
import structlog

from ._callbacks import CallbackRunner
from ._clock import Clock, VirtualClock
from ._dispatch import Dispatching, ExpireCallback, _Callback
from ._errors import ConfigurationError
from ._events import Event, Stalled
from ._overload import OverloadGuard
from ._policy import Policy
from ._streams import EventStream
from ._tracker import LivenessTracker
from ._validate import optional_seconds

__all__ = ("ExpireCallback", "HeartbeatMonitor")

#: Adaptive batches: where they start, and their bounds (wheel entries per poll).
_FIRST_BATCH = 1_000
_MIN_BATCH = 64
_MAX_BATCH = 200_000

#: Sentinel: the self-pause guard's default (on for real clocks, off for virtual ones).
_AUTO: Any = object()

_logger = structlog.get_logger("heartbeat_monitor")


@final
class HeartbeatMonitor(Dispatching):
    """Runs a :class:`LivenessTracker` on anyio (asyncio or trio) and dispatches its events.

    ``async with HeartbeatMonitor(timeout=10) as monitor:`` runs the driver in
    the background; ``await task_group.start(monitor.run)`` embeds it in a task
    group of yours. ``track``/``beat``/``untrack`` may be called at any time
    from the event loop's thread; ``beat`` is the tracker's own method, bound,
    so it costs no more than calling the tracker.

    ``timeout`` is seconds or a policy (``MissedBeats(5, 2)``, ``PhiAccrual()``);
    ``suspect``, ``storm_share`` and ``storm_max_hold`` are passed to the tracker.

    Callbacks (``on_expire``, ``on_suspect``, ``on_recover``, ``on_storm``,
    ``on_stall``) may be plain or async functions, run by the monitor's one
    :class:`~heartbeat_monitor.CallbackRunner` (:attr:`runner`, shared with the
    hub and the adapters): plain ones inline; async ones concurrently, at most
    ``max_concurrent_callbacks`` at a time, each cut off after
    ``callback_timeout`` seconds if given. A callback that raises is logged
    with its traceback and changes nothing else.

    **Self-pause guard.** The driver measures how late it wakes (``loop_lag``).
    When it wakes more than ``stall_limit`` seconds late, its own event loop was
    stalled, and beats may be waiting unread in socket buffers: it grants every
    peer ``stall_grace`` seconds (default: the timeout) from that moment before
    anyone is suspected or expired, and emits :class:`Stalled`. Default
    ``stall_limit``: ``max(1 s, 2 * resolution, overload.max_stretch)`` on a real
    clock (shorter stalls are the stretch's, below, with a tighter bound); off on a
    virtual clock (where jumping is how tests move time), unless given.

    **Overload** (:attr:`overload`, an :class:`~heartbeat_monitor.OverloadGuard`;
    pass ``overload=`` to tune it). On a real clock the driver's own wake lag
    and a probe task (every ``probe_interval``) measure the event loop's lag.
    Deadlines are checked ``stretch`` seconds late, the highest lag of the last
    ``window`` (bounded by ``max_stretch``), so that beats waiting in the
    server's backlog are not mistaken for silence; past ``shed_lag`` the hub
    refuses new connections (``"server overloaded"``). On a virtual clock only
    the lags given to ``overload.observe()`` count. See ``docs/overload.md``.
    """

    __slots__ = (
        "__weakref__",
        "_batch",
        "_batch_size",
        "_callbacks",
        "_exit_stack",
        "_idle_at",
        "_max_block",
        "_probe_scope",
        "_progress",
        "_running",
        "_stall_grace",
        "_stall_limit",
        "_stopping",
        "_streams",
        "_target",
        "_task_group",
        "_tracker",
        "_wake",
        "beat",
        "beat_at",
        "loop_lag",
        "max_loop_lag",
        "overload",
        "runner",
        "untrack",
    )

    #: Record a heartbeat; ``False`` for an unknown key. (The tracker's bound method.)
    beat: Callable[[Hashable], bool]
    #: ``beat`` at a time just read from :attr:`clock` (the tracker's bound method).
    beat_at: Callable[[Hashable, float], bool]
    #: Stop watching a key without expiring it; ``False`` if it was not tracked.
    untrack: Callable[[Hashable], bool]
    #: How late the driver woke last time, and the most it ever did (seconds).
    loop_lag: float
    max_loop_lag: float

    def __init__(
        self,
        timeout: float | Policy,
        *,
        resolution: float | None = None,
        clock: Clock | None = None,
        on_expire: ExpireCallback | None = None,
        on_suspect: _Callback | None = None,
        on_recover: _Callback | None = None,
        on_storm: _Callback | None = None,
        on_stall: _Callback | None = None,
        suspect: float | None = None,
        storm_share: float | None = None,
        storm_max_hold: float | None = None,
        stall_limit: float | None = _AUTO,
        stall_grace: float | None = None,
        max_concurrent_callbacks: int = 64,
        callback_timeout: float | None = None,
        batch_size: int | None = None,
        max_block: float = 0.002,
        overload: OverloadGuard | None = None,
    ) -> None:
        self._tracker = LivenessTracker(
            timeout,
            resolution=resolution,
            clock=clock,
            suspect=suspect,
            storm_share=storm_share,
            storm_max_hold=storm_max_hold,
        )
        #: The one callback runner of this monitor (its hub and adapters use it too).
        self.runner = CallbackRunner(
            max_concurrent=max_concurrent_callbacks,
            timeout=optional_seconds("callback_timeout", callback_timeout),
        )
        if batch_size is not None and batch_size < 1:
            raise ConfigurationError(f"batch_size must be >= 1 or None, not {batch_size!r}")
        self._max_block: float = optional_seconds("max_block", max_block)  # type: ignore[assignment]
        if overload is not None and not isinstance(overload, OverloadGuard):
            raise ConfigurationError(f"overload must be an OverloadGuard, not {overload!r}")
        #: The server's own lag, the stretch it grants and load shedding (see docs/overload.md).
        self.overload = OverloadGuard(self._tracker.timeout) if overload is None else overload
        if stall_limit is _AUTO:
            virtual = isinstance(self._tracker.clock, VirtualClock)
            # With the stretch on, it rides out lags up to max_stretch with a bounded delay;
            # the guard (a grace for everyone) is for the stalls beyond.
            stretch = self.overload.max_stretch if self.overload.lag_factor else 0.0
            stall_limit = None if virtual else max(1.0, 2 * self._tracker.resolution, stretch)
        self._stall_limit = optional_seconds("stall_limit", stall_limit)
        grace = self._tracker.timeout if stall_grace is None else stall_grace
        self._stall_grace: float = optional_seconds("stall_grace", grace)  # type: ignore[assignment]
        self._probe_scope: anyio.CancelScope | None = None
        self._batch_size = batch_size
        #: The adaptive batch (entries per poll) when batch_size is None.
        self._batch = _FIRST_BATCH
        self._callbacks: dict[type[Event], list[_Callback]] = {}
        for register, callback in (
            (self.on_expire, on_expire),
            (self.on_suspect, on_suspect),
            (self.on_recover, on_recover),
            (self.on_storm, on_storm),
            (self.on_stall, on_stall),
        ):
            if callback is not None:
                register(callback)
        self._streams: set[EventStream] = set()
        self._task_group: anyio.abc.TaskGroup | None = None
        self._wake: anyio.Event | None = None
        self._progress: anyio.Event | None = None
        self._target: float | None = None
        self._idle_at: float | None = None
        self._running = False
        self._stopping = False
        self.loop_lag = 0.0
        self.max_loop_lag = 0.0
        self.beat = self._tracker.beat
        self.beat_at = self._tracker.beat_at
        self.untrack = self._tracker.untrack
        self._tracker.wakeup = self._clock_moved

    # -- peers -----------------------------------------------------------------------------

    @property
    def tracker(self) -> LivenessTracker:
        """The sans-I/O tracker this monitor drives."""
        return self._tracker

    @property
    def clock(self) -> Clock:
        return self._tracker.clock

    def track(self, key: Hashable, *, timeout: float | Policy | None = None) -> None:
        """Start watching ``key`` (counts as a beat); see :meth:`LivenessTracker.track`."""
        self._tracker.track(key, timeout=timeout)
        wake = self._wake
        if wake is not None:
            target = self._target
            deadline = self._tracker.next_deadline()
            if target is None or (deadline is not None and deadline < target):
                wake.set()

    def __len__(self) -> int:
        return len(self._tracker)

    def __contains__(self, key: object) -> bool:
        return key in self._tracker

    def events(self, *, max_buffer: int = 10_000) -> EventStream:
        """A new stream of every event from now on (see :class:`EventStream`)."""
        return EventStream(self, max_buffer)

    # -- running ---------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        stack = contextlib.AsyncExitStack()
        async with contextlib.AsyncExitStack() as guard:
            guard.push_async_exit(stack)
            task_group = await stack.enter_async_context(anyio.create_task_group())
            await task_group.start(self.run)
            stack.callback(self.stop)
            self._exit_stack = stack
            guard.pop_all()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        stack = self._exit_stack
        del self._exit_stack
        return await stack.__aexit__(exc_type, exc, tb)

    def stop(self) -> None:
        """Ask :meth:`run` to return once running callbacks have finished."""
        self._stopping = True
        if self._wake is not None:
            self._wake.set()

    async def run(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """Drive the tracker until :meth:`stop` is called or the task is cancelled."""
        if self._running:
            raise RuntimeError("this HeartbeatMonitor is already running")
        clock = self._tracker.clock
        unsubscribe = (
            clock.subscribe(self._clock_moved) if isinstance(clock, VirtualClock) else None
        )
        virtual = unsubscribe is not None
        self._running = True
        self._stopping = False
        _logger.debug(
            "heartbeat_monitor.started",
            timeout=self._tracker.timeout,
            resolution=self._tracker.resolution,
            clock=repr(clock),
        )
        try:
            async with anyio.create_task_group() as task_group:
                self._task_group = task_group
                self.runner.attach(task_group)
                probe = self.overload.probe_interval
                if probe is not None and not virtual:
                    self._probe_scope = anyio.CancelScope()
                    task_group.start_soon(self._probe, self._probe_scope, probe)
                task_status.started()
                try:
                    await self._drive(virtual=virtual)
                finally:
                    if self._probe_scope is not None:
                        self._probe_scope.cancel()
                        self._probe_scope = None
                    await self._drain_runner()
        finally:
            self.runner.detach()
            self._task_group = None
            self._running = False
            self._wake = None
            if unsubscribe is not None:
                unsubscribe()
            for stream in tuple(self._streams):
                stream._end()
            self._notify_progress()
            _logger.debug(
                "heartbeat_monitor.stopped", peers=len(self._tracker), **self.overload.snapshot()
            )

    async def wait_idle(self) -> None:
        """Return once every event due at the current clock time is dispatched.

        That is: the driver has polled at (or after) the time this was called,
        found nothing more due, and no async callback is running. Meant for
        tests on a :class:`ManualClock`: ``clock.advance(5); await monitor.wait_idle()``.
        """
        target = self._tracker.clock.now()
        if self._wake is not None:
            self._wake.set()
        while not (
            self._idle_at is not None
            and self._idle_at >= target
            and not self._due(target)
            and self.runner.idle
        ):
            if not self._running:
                raise RuntimeError("the HeartbeatMonitor is not running")
            if not self.runner.idle:
                await self.runner.wait_idle()
                continue
            if self._progress is None:
                self._progress = anyio.Event()
            await self._progress.wait()

    # -- internals -------------------------------------------------------------------------

    async def _drive(self, *, virtual: bool) -> None:
        tracker = self._tracker
        clock = tracker.clock
        stall_limit = self._stall_limit
        overload = self.overload
        while not self._stop_requested():
            now = clock.now()
            target = self._target
            if target is not None:
                lag = max(now - target, 0.0)
                self.loop_lag = lag
                if lag > self.max_loop_lag:
                    self.max_loop_lag = lag
                # A wake before the target (woken by track) measures nothing; on a virtual
                # clock a late wake is a test moving time, not lag.
                if not virtual and now >= target:
                    overload.observe(lag, now, shed=False)
                if stall_limit is not None and lag > stall_limit:
                    grace_until = now + self._stall_grace
                    tracker.grant_grace(grace_until)
                    self._dispatch([Stalled(lag=lag, grace_until=grace_until, at=now)])
            tracker.stretch = overload.stretch_at(now)
            started = time.perf_counter()
            batch = self._batch if self._batch_size is None else self._batch_size
            # The batch bounds the dispatch that follows; max_time bounds the poll itself,
            # whose cost per entry varies tenfold with memory locality at a million peers.
            events = tracker.poll_events(limit=batch, max_time=self._max_block / 2)
            if events:
                self._dispatch(events)
            deadline = tracker.next_deadline()
            now = clock.now()
            more = deadline is not None and deadline <= now
            if self._batch_size is None:
                self._adapt_batch(time.perf_counter() - started, more=more)
            if more:
                self._target = now
                await anyio.lowlevel.checkpoint()  # more is due: let the loop breathe, go on
                continue
            self._idle_at = now
            self._notify_progress()
            if self._stop_requested():  # a callback may have called stop()
                break
            wake = self._wake = anyio.Event()
            self._target = deadline
            if virtual or deadline is None:
                await wake.wait()
            else:
                with anyio.move_on_after(deadline - now):
                    await wake.wait()
            self._wake = None

    async def _probe(self, scope: anyio.CancelScope, interval: float) -> None:
        """Measure the lag every ``interval`` seconds along a beat's path (see OverloadGuard)."""
        clock = self._tracker.clock
        overload = self.overload
        hops = range(overload.probe_hops)
        with scope:
            while True:
                before = clock.now()
                await anyio.sleep(interval)
                for _ in hops:
                    await anyio.lowlevel.checkpoint()
                now = clock.now()
                overload.observe(now - before - interval, now)

    def _adapt_batch(self, elapsed: float, *, more: bool) -> None:
        """Size the next batch so that one poll plus its dispatch stays within max_block."""
        budget = self._max_block
        if elapsed > budget:
            self._batch = max(_MIN_BATCH, int(self._batch * budget / elapsed * 0.8))
        elif more and elapsed < budget / 2:
            self._batch = min(self._batch * 2, _MAX_BATCH)

    def _due(self, now: float) -> bool:
        deadline = self._tracker.next_deadline()
        return deadline is not None and deadline <= now

    def _stop_requested(self) -> bool:
        return self._stopping

    def _clock_moved(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _notify_progress(self) -> None:
        progress = self._progress
        if progress is not None:
            self._progress = None
            progress.set()

    async def _drain_runner(self) -> None:
        """Stopping: let running async callbacks finish (each is bounded by its timeout)."""
        if self._stopping and not self.runner.idle:
            await self.runner.wait_idle()

    def __repr__(self) -> str:
        state = "running" if self._running else "stopped"
        return f"<HeartbeatMonitor {state} tracker={self._tracker!r}>"
