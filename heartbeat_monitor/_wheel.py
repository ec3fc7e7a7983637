"""The sans-I/O liveness tracker and its lazy timing wheel.

Theory of operation
===================

Heartbeats are frequent and expiries are rare: almost every deadline is pushed
back by a beat long before it comes due. So the design is *lazy*:

* ``beat(key)`` writes one float into ``_last`` (``key -> time of last beat``)
  and touches nothing else: no heap, no timer object, no allocation beyond the
  float the clock returns.
* The wheel holds each peer in the *bucket* of the deadline the peer had when it
  was last placed. A bucket covers one ``resolution`` of time and is keyed by
  its absolute tick number ``t``; it comes due at ``t * resolution``, which is
  strictly after every deadline placed in it and at most one resolution after.
* When a bucket comes due, each of its peers is checked against its *latest*
  beat: a peer still silent past its deadline expires; any other is re-placed in
  the bucket of its new deadline. A live peer is thus re-examined about once per
  timeout, whatever the beat rate and whatever the resolution.

Buckets live in a dict keyed by absolute tick, and the ticks that have a bucket
sit in a small heap (one entry per distinct tick, not per peer). There is no
wheel "turn", so a timeout of a day costs what a timeout of a second costs: no
rounds, no hierarchy, O(1) placement. ``next_deadline()`` is ``heap[0]``.

Invariants
----------

1. ``_last``, ``_bucket_of`` have the same keys: the tracked peers.
2. A tracked peer's current bucket ``_bucket_of[key]`` contains ``key`` and
   comes due strictly after the deadline the peer had when placed there, and no
   later than one resolution after it. Deadlines only move later between
   placements (beats push them back), except when ``track`` gives a shorter
   timeout, and then ``track`` places the peer again.
3. A bucket may also hold *stale* entries: keys untracked, expired, or placed
   elsewhere since. A stale entry is recognised by ``_bucket_of.get(key) is not
   bucket`` and skipped; it costs one pointer until its bucket comes due.
4. Hence: never early (expiry needs ``now > last + timeout`` at the check),
   exactly once (expiry removes the key from ``_last`` and ``_bucket_of``), and
   at most one resolution late once polled (by 2, the bucket is due by then).

``poll(limit=n)`` processes at most ``n`` entries and resumes where it stopped,
so a driver can spread a million simultaneous expiries over many short steps.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Hashable
from typing import final

import structlog

from ._clock import Clock, MonotonicClock
from ._errors import ConfigurationError
from ._events import Expired

__all__ = ("DEFAULT_RESOLUTION_FRACTION", "LivenessTracker")

#: Default resolution as a fraction of the timeout (capped at one second).
DEFAULT_RESOLUTION_FRACTION = 0.1
_MAX_DEFAULT_RESOLUTION = 1.0

_logger = structlog.get_logger("heartbeat_monitor")


def _check_seconds(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{name} must be a number of seconds, not {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ConfigurationError(f"{name} must be a finite number of seconds > 0, not {value!r}")
    return float(value)


@final
class _Bucket(list[Hashable]):
    """The peers placed in one tick of the wheel (a list: appends are O(1))."""

    __slots__ = ("tick",)

    def __init__(self, tick: int) -> None:
        super().__init__()
        self.tick = tick


@final
class LivenessTracker:
    """Watches peers' heartbeats and declares the silent ones expired.

    Sans-I/O: it never sleeps, never does I/O and reads time only from
    ``clock``. Call :meth:`poll` when :meth:`next_deadline` says so (the
    :class:`~heartbeat_monitor.HeartbeatMonitor` driver does exactly that).

    A peer expires when the clock is strictly past its deadline
    (``last beat + timeout``): a beat at exactly the deadline keeps it alive.
    ``poll()`` at time ``t`` expires every peer whose deadline is at least one
    ``resolution`` before ``t``, may expire those whose deadline passed more
    recently, and never one whose deadline has not passed.
    """

    __slots__ = (
        "__weakref__",
        "_bucket_of",
        "_buckets",
        "_clock",
        "_current",
        "_last",
        "_now",
        "_on_expire",
        "_resolution",
        "_ticks",
        "_timeout",
        "_timeouts",
    )

    def __init__(
        self,
        timeout: float,
        *,
        resolution: float | None = None,
        clock: Clock | None = None,
        on_expire: Callable[[Expired], object] | None = None,
    ) -> None:
        self._timeout = _check_seconds("timeout", timeout)
        if resolution is None:
            resolution = min(self._timeout * DEFAULT_RESOLUTION_FRACTION, _MAX_DEFAULT_RESOLUTION)
        self._resolution = _check_seconds("resolution", resolution)
        if self._resolution > self._timeout:
            raise ConfigurationError(
                f"resolution ({resolution!r} s) must not exceed the timeout ({timeout!r} s): "
                "it bounds how late an expiry may be"
            )
        self._clock: Clock = MonotonicClock() if clock is None else clock
        now = self._clock.now
        if isinstance(self._clock, MonotonicClock):
            import time

            now = time.monotonic  # skip one Python frame per beat
        self._now: Callable[[], float] = now
        self._on_expire = on_expire
        #: key -> clock time of the last beat.
        self._last: dict[Hashable, float] = {}
        #: key -> the bucket the peer currently sits in.
        self._bucket_of: dict[Hashable, _Bucket] = {}
        #: key -> timeout, only for peers whose timeout is not the default.
        self._timeouts: dict[Hashable, float] = {}
        #: tick -> bucket, and a heap of the ticks that have one.
        self._buckets: dict[int, _Bucket] = {}
        self._ticks: list[int] = []
        #: The bucket that poll() is part-way through (with a limit), if any.
        self._current: _Bucket | None = None

    # -- configuration ---------------------------------------------------------------------

    @property
    def timeout(self) -> float:
        """The default timeout, in seconds."""
        return self._timeout

    @property
    def resolution(self) -> float:
        """Width of one wheel bucket: the most an expiry may be late once polled."""
        return self._resolution

    @property
    def clock(self) -> Clock:
        return self._clock

    # -- peers -----------------------------------------------------------------------------

    def track(self, key: Hashable, *, timeout: float | None = None) -> None:
        """Start watching ``key``; counts as a beat.

        On a peer already tracked this is a beat that also sets its timeout
        (``None`` restores the default).
        """
        now = self._now()
        if timeout is None:
            self._timeouts.pop(key, None)
            peer_timeout = self._timeout
        else:
            peer_timeout = _check_seconds("timeout", timeout)
            if peer_timeout == self._timeout:
                self._timeouts.pop(key, None)
            else:
                self._timeouts[key] = peer_timeout
        self._last[key] = now
        tick = self._tick_after(now + peer_timeout)
        bucket = self._bucket_of.get(key)
        # A peer already placed no later than its new deadline's bucket stays where it is:
        # the lazy check re-places it when that bucket comes due.
        if bucket is None or bucket.tick > tick:
            self._place(key, tick)

    def beat(self, key: Hashable) -> bool:
        """Record a heartbeat; ``False`` if ``key`` is not tracked (it is not resurrected)."""
        last = self._last
        if key in last:
            last[key] = self._now()
            return True
        return False

    def untrack(self, key: Hashable) -> bool:
        """Stop watching ``key`` without expiring it; ``False`` if it was not tracked."""
        if self._last.pop(key, None) is None:
            return False
        del self._bucket_of[key]
        self._timeouts.pop(key, None)
        return True

    def __len__(self) -> int:
        return len(self._last)

    def __contains__(self, key: object) -> bool:
        return key in self._last

    def last_beat(self, key: Hashable) -> float:
        """Clock time of the peer's last beat; :class:`KeyError` if not tracked."""
        return self._last[key]

    def timeout_of(self, key: Hashable) -> float:
        """The peer's timeout; :class:`KeyError` if not tracked."""
        if key not in self._last:
            raise KeyError(key)
        return self._timeouts.get(key, self._timeout)

    def deadline(self, key: Hashable) -> float:
        """The peer's current deadline; :class:`KeyError` if not tracked."""
        return self._last[key] + self._timeouts.get(key, self._timeout)

    def keys(self) -> list[Hashable]:
        """A snapshot of the tracked keys."""
        return list(self._last)

    # -- time ------------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        """When :meth:`poll` next has work: a time ``<= now`` means "poll again now".

        ``None`` when nothing is tracked and nothing is pending.
        """
        if self._current is not None:
            return self._current.tick * self._resolution
        ticks = self._ticks
        return ticks[0] * self._resolution if ticks else None

    def poll(self, *, limit: int | None = None) -> list[Expired]:
        """Expire every peer that is silent past its deadline, as of ``clock.now()``.

        Calls ``on_expire`` for each (an exception there is logged and does not
        stop the others) and returns the events. With ``limit``, examines at most
        that many wheel entries and resumes on the next call.
        """
        now = self._clock.now()
        resolution = self._resolution
        budget = math.inf if limit is None else limit
        if budget <= 0:
            raise ConfigurationError(f"poll(limit=...) must be > 0, not {limit!r}")
        last_of = self._last
        bucket_of = self._bucket_of
        timeouts = self._timeouts
        default_timeout = self._timeout
        expired: list[Expired] = []
        while budget > 0:
            bucket = self._current
            if bucket is None:
                ticks = self._ticks
                if not ticks or ticks[0] * resolution > now:
                    break
                bucket = self._buckets.pop(heapq.heappop(ticks))
                self._current = bucket
            while bucket and budget > 0:
                budget -= 1
                key = bucket.pop()
                if bucket_of.get(key) is not bucket:
                    continue  # stale: untracked, expired or placed elsewhere since
                last = last_of[key]
                deadline = last + (
                    timeouts.get(key, default_timeout) if timeouts else default_timeout
                )
                if now > deadline:
                    del last_of[key]
                    del bucket_of[key]
                    if timeouts:
                        timeouts.pop(key, None)
                    expired.append(
                        Expired(key=key, last_beat=last, deadline=deadline, expired_at=now)
                    )
                else:
                    self._place(key, self._tick_after(deadline))
            if not bucket:
                self._current = None
        on_expire = self._on_expire
        if on_expire is not None:
            for event in expired:
                try:
                    on_expire(event)
                except Exception:
                    _logger.exception(
                        "heartbeat_monitor.callback_failed", callback=on_expire, peer=event.key
                    )
        return expired

    # -- wheel -----------------------------------------------------------------------------

    def _tick_after(self, deadline: float) -> int:
        """The first tick whose due time is strictly after ``deadline``."""
        resolution = self._resolution
        tick = math.floor(deadline / resolution) + 1
        while tick * resolution <= deadline:  # float rounding; at most once in practice
            tick += 1
        return tick

    def _place(self, key: Hashable, tick: int) -> None:
        bucket = self._buckets.get(tick)
        if bucket is None:
            bucket = self._buckets[tick] = _Bucket(tick)
            heapq.heappush(self._ticks, tick)
        bucket.append(key)
        self._bucket_of[key] = bucket

    def __repr__(self) -> str:
        return (
            f"<LivenessTracker peers={len(self._last)} timeout={self._timeout!r} "
            f"resolution={self._resolution!r} clock={self._clock!r}>"
        )
