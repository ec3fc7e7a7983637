"""Clocks: where the tracker and the driver read the time.

Liveness is measured in monotonic seconds only. A wall clock
jumps when NTP or an operator sets it, and a jump forward would expire every
peer at once, so no code here ever reads it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Protocol, final, runtime_checkable

__all__ = ("Clock", "ManualClock", "MonotonicClock", "VirtualClock")


@runtime_checkable
class Clock(Protocol):
    """Anything that tells monotonic time in seconds."""

    def now(self) -> float:
        """Return the current time in seconds; never decreases."""
        ...


@runtime_checkable
class VirtualClock(Clock, Protocol):
    """A clock that only moves when told to, and says so.

    The driver cannot sleep on such a clock's time; it waits until the clock
    announces that it moved. ``subscribe`` registers a callback called after
    every move and returns a function that removes it.
    """

    def subscribe(self, callback: Callable[[], object]) -> Callable[[], None]: ...


@final
class MonotonicClock:
    """The default clock: :func:`time.monotonic`, the clock the event loops use."""

    __slots__ = ()

    #: :func:`time.monotonic` itself: ``clock.now()`` is one C call, no Python frame (it is
    #: read on every beat).
    now = staticmethod(time.monotonic)

    def __repr__(self) -> str:
        return "MonotonicClock()"


@final
class ManualClock:
    """A clock for tests that moves only when :meth:`advance` is called.

    Modelled on trio's ``MockClock``: time never goes backwards, and advancing
    it wakes every driver that uses it, so an hour of virtual time runs in
    milliseconds. Not thread-safe: advance it from the thread that runs the
    event loop.
    """

    __slots__ = ("_listeners", "_now")

    def __init__(self, start: float = 0.0) -> None:
        if not math.isfinite(start):
            raise ValueError(f"ManualClock start must be a finite number, not {start!r}")
        self._now = float(start)
        self._listeners: list[Callable[[], object]] = []

    def now(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds`` (>= 0) and return the new time."""
        if not seconds >= 0 or not math.isfinite(seconds):
            raise ValueError(
                f"ManualClock.advance() needs a finite number of seconds >= 0, not {seconds!r}: "
                "a monotonic clock never goes backwards"
            )
        self._now += seconds
        for callback in tuple(self._listeners):
            callback()
        return self._now

    def subscribe(self, callback: Callable[[], object]) -> Callable[[], None]:
        self._listeners.append(callback)

        def unsubscribe() -> None:
            if callback in self._listeners:  # idempotent
                self._listeners.remove(callback)

        return unsubscribe

    def __repr__(self) -> str:
        return f"ManualClock(now={self._now!r})"
