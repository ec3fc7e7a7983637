"""The sans-I/O liveness tracker and its lazy timing wheel.

It returns events and does nothing else: no callbacks, no logging, no I/O, no
sleeping. The driver (:class:`~heartbeat_monitor.HeartbeatMonitor`) dispatches.

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

Beyond the fixed timeout
------------------------

* **Policies** (``_policy.py``) give each peer's timeout in closed form. A
  stateful one (phi accrual) keeps a per-peer history that the beat updates;
  its timeout may shrink after a beat, so such a beat re-places the peer when
  its deadline moved before its bucket (invariant 2 holds).
* **Suspect stage** (``suspect=f``): a peer is first placed at
  ``last + f * timeout``; silent past that it becomes a suspect (an event) and
  is placed at its deadline; a beat from a suspect is a recovery (an event),
  and the peer goes back to its suspect deadline.
* **Storm brake and grace** (``_storm.py``): while the brake holds, a peer
  silent past its deadline is re-checked every quarter timeout instead of
  expired; during a grace window nobody is suspected or expired. The brake
  needs the suspect stage, which it turns on (``f = 0.5``) if not set:
  suspicion comes before expiry, so the storm is seen before anyone is expired
  by it.

With these, the beat takes a slower path (``_beat_full``); without them it is
the one-line dictionary write (``_beat_fast``). ``beat`` is bound once, at
construction, to one of the two.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable, Hashable
from typing import final

from ._clock import Clock, MonotonicClock
from ._errors import ConfigurationError
from ._events import (
    Event,
    Expired,
    Recovered,
    Suspected,
)
from ._policy import History, Policy, as_policy
from ._storm import StormBrake
from ._validate import fraction, positive

__all__ = ("DEFAULT_RESOLUTION_FRACTION", "LivenessTracker")

#: Default resolution as a fraction of the timeout (capped at one second).
DEFAULT_RESOLUTION_FRACTION = 0.1
_MAX_DEFAULT_RESOLUTION = 1.0
#: Suspect fraction the storm brake turns on when no suspect stage was asked for.
_STORM_SUSPECT = 0.5


def _is_stateful(policy: Policy) -> bool:
    """Whether ``policy`` is a :class:`StatefulPolicy` (a cheap structural check)."""
    return callable(getattr(policy, "new_history", None))


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

    ``timeout`` is a number of seconds or a policy (:class:`FixedTimeout`,
    :class:`MissedBeats`, :class:`PhiAccrual`). A peer expires when the clock
    is strictly past its deadline (``last beat + timeout``): a beat at exactly
    the deadline keeps it alive. ``poll()`` at time ``t`` expires every peer
    whose deadline is at least one ``resolution`` before ``t``, may expire those
    whose deadline passed more recently, and never one whose deadline has not
    passed. Optional stages: ``suspect`` (a fraction of the timeout after which
    a silent peer is suspected), ``storm_share`` (the storm brake) and
    :meth:`grant_grace`; see the module's theory of operation.
    """

    __slots__ = (
        "__weakref__",
        "_brake",
        "_bucket_of",
        "_buckets",
        "_clock",
        "_current",
        "_events",
        "_histories",
        "_last",
        "_now",
        "_policy",
        "_resolution",
        "_stateful",
        "_suspect",
        "_suspects",
        "_ticks",
        "_timeout",
        "_timeouts",
        "beat",
        "stretch",
        "wakeup",
    )

    #: Record a heartbeat; ``False`` if ``key`` is not tracked (it is not resurrected).
    beat: Callable[[Hashable], bool]

    def __init__(
        self,
        timeout: float | Policy,
        *,
        resolution: float | None = None,
        clock: Clock | None = None,
        suspect: float | None = None,
        storm_share: float | None = None,
        storm_max_hold: float | None = None,
    ) -> None:
        self._policy = as_policy(timeout)
        self._timeout = self._policy.timeout
        if resolution is None:
            resolution = min(self._timeout * DEFAULT_RESOLUTION_FRACTION, _MAX_DEFAULT_RESOLUTION)
        self._resolution = positive("resolution", resolution)
        if self._resolution > self._timeout:
            raise ConfigurationError(
                f"resolution ({resolution!r} s) must not exceed the timeout ({self._timeout!r} s): "
                "it bounds how late an expiry may be"
            )
        self._brake = StormBrake(storm_share, storm_max_hold)
        self._suspect = fraction("suspect", suspect)
        if self._brake.share is not None and self._suspect is None:
            self._suspect = _STORM_SUSPECT
        self._clock: Clock = MonotonicClock() if clock is None else clock
        now = self._clock.now
        if isinstance(self._clock, MonotonicClock):
            now = time.monotonic  # skip one Python frame per beat
        self._now: Callable[[], float] = now
        #: key -> clock time of the last beat.
        self._last: dict[Hashable, float] = {}
        #: key -> the bucket the peer currently sits in.
        self._bucket_of: dict[Hashable, _Bucket] = {}
        #: key -> timeout, only for peers whose fixed timeout is not the default.
        self._timeouts: dict[Hashable, float] = {}
        #: key -> beat history, only for peers under a stateful policy.
        self._histories: dict[Hashable, History] = {}
        #: key -> when it was suspected, for peers in the suspect stage.
        self._suspects: dict[Hashable, float] = {}
        #: tick -> bucket, and a heap of the ticks that have one.
        self._buckets: dict[int, _Bucket] = {}
        self._ticks: list[int] = []
        #: The bucket that poll() is part-way through (with a limit), if any.
        self._current: _Bucket | None = None
        #: Events raised outside poll() (recoveries), handed out by the next poll.
        self._events: list[Event] = []
        #: Called (with no argument) when a beat produced an event outside :meth:`poll`
        #: (a recovery), so that a driver polls soon. The driver sets it; ``None``: nobody.
        self.wakeup: Callable[[], None] | None = None
        #: Seconds added to every deadline when it is checked (the driver's local-health
        #: stretch, see ``_overload.py``): nobody is suspected or expired before its
        #: deadline plus this. Events still carry the true deadline and time.
        self.stretch = 0.0
        #: Whether the default policy keeps a per-peer history (checked once: a runtime
        #: Protocol isinstance costs ~20 us, far too much for every track()).
        self._stateful = _is_stateful(self._policy)
        full = self._suspect is not None or self._stateful
        self.beat = self._beat_full if full else self._beat_fast

    # -- configuration ---------------------------------------------------------------------

    @property
    def timeout(self) -> float:
        """The default timeout, in seconds (for a stateful policy: before any history)."""
        return self._timeout

    @property
    def policy(self) -> Policy:
        return self._policy

    @property
    def resolution(self) -> float:
        """Width of one wheel bucket: the most an expiry may be late once polled."""
        return self._resolution

    @property
    def clock(self) -> Clock:
        return self._clock

    # -- peers -----------------------------------------------------------------------------

    def track(self, key: Hashable, *, timeout: float | Policy | None = None) -> None:
        """Start watching ``key``; counts as a beat.

        ``timeout`` (seconds or a policy) overrides the default for this peer.
        On a peer already tracked this is a beat that also sets its timeout
        (``None`` restores the default) and starts a fresh beat history.
        """
        if timeout is None:
            policy, stateful = self._policy, self._stateful
        else:
            policy = as_policy(timeout)
            stateful = _is_stateful(policy)
        now = self._now()
        if stateful:
            if not self._stateful:
                raise ConfigurationError(
                    f"a per-peer {policy!r} needs a tracker whose default policy is stateful "
                    "too (its beats record the history the policy reads)"
                )
            history = policy.new_history()  # type: ignore[attr-defined]
            self._histories[key] = history
            self._timeouts.pop(key, None)
            peer_timeout = history.timeout()
        else:
            if self._histories:
                self._histories.pop(key, None)
            peer_timeout = self._timeout if timeout is None else policy.timeout
            if peer_timeout == self._timeout:
                if self._timeouts:
                    self._timeouts.pop(key, None)
            else:
                self._timeouts[key] = peer_timeout
        self._last[key] = now
        if self._suspects:
            self._recover(key, now)
        check = now + (peer_timeout if self._suspect is None else peer_timeout * self._suspect)
        tick = self._tick_after(check)
        bucket = self._bucket_of.get(key)
        # A peer already placed no later than its new check's bucket stays where it is:
        # the lazy check re-places it when that bucket comes due.
        if bucket is None or bucket.tick > tick:
            self._place(key, tick)

    def _beat_fast(self, key: Hashable) -> bool:
        last = self._last
        if key in last:
            last[key] = self._now()
            return True
        return False

    def _beat_full(self, key: Hashable) -> bool:
        last = self._last
        previous = last.get(key)
        if previous is None:
            return False
        now = self._now()
        last[key] = now
        history = self._histories.get(key) if self._histories else None
        if history is not None:
            history.record(now - previous)
        recovered = self._suspects and self._recover(key, now)
        if recovered and self.wakeup is not None:
            self.wakeup()
        if history is None and not recovered:
            return True  # a fixed timeout: the deadline only moved later, the lazy check copes
        # A shorter phi timeout, or a recovered suspect (back to its suspect deadline), may
        # put the next check before the bucket the peer sits in: then place it again.
        timeout = (
            history.timeout() if history is not None else self._timeouts.get(key, self._timeout)
        )
        suspect = self._suspect
        tick = self._tick_after(now + (timeout if suspect is None else timeout * suspect))
        if tick < self._bucket_of[key].tick:
            self._place(key, tick)
        return True

    def _recover(self, key: Hashable, now: float) -> bool:
        suspected_at = self._suspects.pop(key, None)
        if suspected_at is None:
            return False
        self._events.append(Recovered(key=key, suspected_at=suspected_at, recovered_at=now))
        return True

    def untrack(self, key: Hashable) -> bool:
        """Stop watching ``key`` without expiring it; ``False`` if it was not tracked."""
        if self._last.pop(key, None) is None:
            return False
        del self._bucket_of[key]
        self._timeouts.pop(key, None)
        self._histories.pop(key, None)
        self._suspects.pop(key, None)
        return True

    def __len__(self) -> int:
        return len(self._last)

    def __contains__(self, key: object) -> bool:
        return key in self._last

    def last_beat(self, key: Hashable) -> float:
        """Clock time of the peer's last beat; :class:`KeyError` if not tracked."""
        return self._last[key]

    def timeout_of(self, key: Hashable) -> float:
        """The peer's current timeout; :class:`KeyError` if not tracked."""
        if key not in self._last:
            raise KeyError(key)
        history = self._histories.get(key)
        if history is not None:
            return history.timeout()
        return self._timeouts.get(key, self._timeout)

    def deadline(self, key: Hashable) -> float:
        """The peer's current deadline; :class:`KeyError` if not tracked."""
        return self._last[key] + self.timeout_of(key)

    def keys(self) -> list[Hashable]:
        """A snapshot of the tracked keys."""
        return list(self._last)

    def is_suspect(self, key: Hashable) -> bool:
        return key in self._suspects

    @property
    def suspects(self) -> int:
        """How many tracked peers are suspects now."""
        return len(self._suspects)

    @property
    def storm(self) -> bool:
        """Whether the storm brake is holding expiries."""
        return self._brake.holding

    # -- time ------------------------------------------------------------------------------

    def grant_grace(self, until: float) -> None:
        """Suspect and expire nobody before clock time ``until`` (the self-pause guard)."""
        self._brake.grant_grace(until)

    @property
    def grace_until(self) -> float:
        return self._brake.grace_until

    def next_deadline(self) -> float | None:
        """When :meth:`poll` next has work: a time ``<= now`` means "poll again now".

        ``None`` when nothing is tracked and nothing is pending.
        """
        if self._events:
            return -math.inf
        if self._current is not None:
            return self._current.tick * self._resolution + self.stretch
        ticks = self._ticks
        return ticks[0] * self._resolution + self.stretch if ticks else None

    def poll(self, *, limit: int | None = None, max_time: float | None = None) -> list[Expired]:
        """Expire every peer that is silent past its deadline, as of ``clock.now()``.

        Returns the expiries (:meth:`poll_events` returns every event). With ``limit``,
        examines at most that many wheel entries; with ``max_time``, stops after
        about that many seconds of work (``time.perf_counter``, checked every 64
        entries: a CPU budget, never a liveness clock). Either way the next call
        resumes where this one stopped, and ``next_deadline()`` says it is due.
        """
        events = self.poll_events(limit=limit, max_time=max_time)
        return [event for event in events if isinstance(event, Expired)]

    def poll_events(
        self, *, limit: int | None = None, max_time: float | None = None
    ) -> list[Event]:
        """Like :meth:`poll`, but returns every event, in order.

        That is :class:`Expired`, :class:`Suspected`, :class:`Recovered` (from
        beats since the last poll), :class:`StormStarted` and :class:`StormEnded`.
        """
        now = self._clock.now()
        due = now - self.stretch  # deadlines are compared with this: the stretch moves them later
        resolution = self._resolution
        budget = math.inf if limit is None else limit
        if budget <= 0:
            raise ConfigurationError(f"poll(limit=...) must be > 0, not {limit!r}")
        if max_time is not None and not max_time > 0:
            raise ConfigurationError(f"poll(max_time=...) must be > 0, not {max_time!r}")
        perf_counter = time.perf_counter
        stop_at = math.inf if max_time is None else perf_counter() + max_time
        examined = 0
        events, self._events = self._events, []
        brake = self._brake
        if brake.holding:
            self._release(now, events)
        last_of = self._last
        bucket_of = self._bucket_of
        timeouts = self._timeouts
        histories = self._histories
        suspects = self._suspects
        suspect = self._suspect
        grace_until = brake.grace_until
        default_timeout = self._timeout
        while budget > 0:
            bucket = self._current
            if bucket is None:
                ticks = self._ticks
                if not ticks or ticks[0] * resolution > due:
                    break
                bucket = self._buckets.pop(heapq.heappop(ticks))
                self._current = bucket
            while bucket and budget > 0:
                budget -= 1
                examined += 1
                if not examined & 63 and perf_counter() > stop_at:
                    budget = 0  # out of time: this entry and the rest wait for the next call
                    break
                key = bucket.pop()
                if bucket_of.get(key) is not bucket:
                    continue  # stale: untracked, expired or placed elsewhere since
                last = last_of[key]
                if histories and key in histories:
                    timeout = histories[key].timeout()
                elif timeouts:
                    timeout = timeouts.get(key, default_timeout)
                else:
                    timeout = default_timeout
                deadline = last + timeout
                if suspect is None or key in suspects:
                    if due <= deadline:
                        self._place(key, self._tick_after(deadline))
                    elif now <= grace_until:
                        self._place(key, self._tick_after(grace_until))
                    elif brake.holding:
                        self._hold(key, now)
                    else:
                        self._expire(key, last, deadline, now, events)
                    continue
                # Suspect stage on, peer not (yet) a suspect.
                suspect_deadline = last + timeout * suspect
                if due <= suspect_deadline:
                    self._place(key, self._tick_after(suspect_deadline))
                elif now <= grace_until:
                    self._place(key, self._tick_after(grace_until))
                else:
                    suspects[key] = now
                    events.append(
                        Suspected(
                            key=key, last_beat=last, deadline=suspect_deadline, suspected_at=now
                        )
                    )
                    started = brake.suspected(now, len(suspects), len(last_of))
                    if started is not None:
                        events.append(started)
                    if due <= deadline:
                        self._place(key, self._tick_after(deadline))
                    elif brake.holding:
                        self._hold(key, now)
                    else:
                        self._expire(key, last, deadline, now, events)
            if not bucket:
                self._current = None
        if brake.holding:
            self._release(now, events)
        return events

    # -- wheel -----------------------------------------------------------------------------

    def _expire(
        self, key: Hashable, last: float, deadline: float, now: float, events: list[Event]
    ) -> None:
        del self._last[key]
        del self._bucket_of[key]
        if self._timeouts:
            self._timeouts.pop(key, None)
        if self._histories:
            self._histories.pop(key, None)
        if self._suspects:
            self._suspects.pop(key, None)
        events.append(Expired(key=key, last_beat=last, deadline=deadline, expired_at=now))

    def _hold(self, key: Hashable, now: float) -> None:
        """The storm brake holds this expiry; look again in a quarter timeout."""
        self._place(key, self._tick_after(now + max(self._timeout / 4, self._resolution)))

    def _release(self, now: float, events: list[Event]) -> None:
        ended = self._brake.release(now, len(self._suspects), len(self._last))
        if ended is not None:
            events.append(ended)

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
