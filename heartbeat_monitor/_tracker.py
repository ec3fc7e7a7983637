"""The sans-I/O liveness tracker: sweep + watch.

It returns events and does nothing else: no callbacks, no logging, no I/O, no
sleeping. The driver (:class:`~heartbeat_monitor.HeartbeatMonitor`) dispatches.

Theory of operation
===================

Heartbeats are frequent and expiries are rare: almost every deadline is pushed
back by a beat long before it comes due. So the design is lazy, in two tiers.

**The table and the sweep** (``_sweep.py``). Every tracked peer has one entry
``key -> time of its last beat`` in a plain dict; a beat writes one float there
and nothing else (no heap, no timer, nothing the garbage collector sees). Every
``span - reach`` seconds a chunked pass at C level over the dict lists the
peers silent for more than ``reach`` (``span``: the default timeout, or the
suspect time). ``reach`` is tuned per sweep from a sample of silences to just
above how long healthy peers go between beats: nobody healthy is listed, and
sweeps are as far apart as they can be.

**The watch** (``_wheel.py``, a lazy timing wheel). Only listed peers, and
peers with a timeout or beat history (phi) of their own, or suspects, are
*watched*: each sits in the bucket of the deadline it had when placed, which
comes due strictly after it and at most one ``resolution`` later. When a bucket
comes due each peer in it is checked against its latest beat: silent past its
deadline it expires; otherwise it leaves the watch if the sweeps cover it
(its check deadline is at or after ``cover``), or is placed again.

Invariants
----------

1. Every tracked peer is in the table; a watched one also maps to the tick of
   its bucket, which comes due within one resolution after its deadline when
   placed (deadlines only move later; ``track`` or a beat that moves one earlier
   places the peer again). Stale bucket entries are told by that map.
2. An unwatched peer has the default fixed timeout, is no suspect, and its
   check deadline is at or after the next sweep's start plus its ``margin``:
   a sweep that does not list a peer leaves it so, and a new peer is so. A
   sweep done within its margin thus lists every peer before its deadline.
3. Hence: never early (expiry needs ``now > last + timeout`` at the check),
   exactly once (expiry removes the peer from the table and the watch), no
   resurrection (a beat only writes keys in the table), at most one resolution
   late once polled, while each sweep keeps within its margin.

``poll(limit=n)`` examines at most ``n`` entries (sweep and wheel alike) and
resumes where it stopped, so a driver can spread a million expiries, or a sweep
of a million peers, over many short steps.

Beyond the fixed timeout: **policies** (``_policy.py``) give each peer's
timeout in closed form; a stateful one (phi) has a per-peer history that the
beat updates, and a beat that shortens its timeout places the peer again. What
becomes of a watched peer whose check comes due (alive, suspect, held by grace
or the storm brake, gone) is decided in one place, ``_stages.py``. With a
suspect stage or a stateful policy the beat takes the slower ``_beat_full``
(recoveries, histories); without, it is the table's one-line dict write.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Hashable
from typing import final

from ._clock import Clock, MonotonicClock
from ._errors import ConfigurationError
from ._events import Event, Expired
from ._policy import MissedBeats, PeerPolicies, Policy, as_policy
from ._stages import Stages
from ._sweep import BeatTable
from ._validate import positive
from ._wheel import Wheel

__all__ = ("DEFAULT_RESOLUTION_FRACTION", "LivenessTracker")

#: Default resolution as a fraction of the timeout (capped at one second).
DEFAULT_RESOLUTION_FRACTION = 0.1
_MAX_DEFAULT_RESOLUTION = 1.0
#: Sweeps need a span of at least this many resolutions (else every peer is watched).
_MIN_SPAN = 4


@final
class LivenessTracker:
    """Watches peers' heartbeats and declares the silent ones expired.

    Sans-I/O: it never sleeps, never does I/O, runs no callbacks and logs
    nothing; it reads time only from ``clock`` and returns events. Call
    :meth:`poll_events` when :meth:`next_deadline` says so (the
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
        "_clock",
        "_now",
        "_policies",
        "_resolution",
        "_stages",
        "_suspect",
        "_table",
        "_timeout",
        "_wheel",
        "beat",
        "beat_at",
        "stretch",
        "wakeup",
    )

    #: Record a heartbeat; ``False`` if ``key`` is not tracked (it is not resurrected).
    beat: Callable[[Hashable], bool]
    #: ``beat`` at a time the caller has just read from this tracker's clock.
    beat_at: Callable[[Hashable, float], bool]

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
        #: The default policy, and the peers with a timeout or a history of their own.
        self._policies = PeerPolicies(as_policy(timeout))
        self._timeout = self._policies.timeout
        if resolution is None:
            resolution = min(self._timeout * DEFAULT_RESOLUTION_FRACTION, _MAX_DEFAULT_RESOLUTION)
        self._resolution = positive("resolution", resolution)
        if self._resolution > self._timeout:
            raise ConfigurationError(
                f"resolution ({resolution!r} s) must not exceed the timeout ({self._timeout!r} s): "
                "it bounds how late an expiry may be"
            )
        #: The stages of a watched peer: suspect, held (grace, storm brake), gone.
        self._stages = Stages(suspect, storm_share, storm_max_hold)
        self._suspect = self._stages.suspect
        self._clock: Clock = MonotonicClock() if clock is None else clock
        now = self._clock.now  # MonotonicClock's is time.monotonic itself: no Python frame
        self._now: Callable[[], float] = now
        stateful = self._policies.stateful
        span: float | None = self._timeout * (self._suspect or 1.0)
        if stateful or self._timeout * (self._suspect or 1.0) < _MIN_SPAN * self._resolution:
            span = None  # every peer watched: a sweep would list (nearly) all of them
        policy = self._policies.default
        interval = policy.interval if isinstance(policy, MissedBeats) else None
        reach = 2 * interval if interval is not None else self._timeout / 2
        #: The last beats of every tracked peer, and the sweep over them.
        self._table = BeatTable(now, span=span, resolution=self._resolution, reach=reach)
        #: The watched peers.
        self._wheel = Wheel(self._resolution)
        #: Called (with no argument) when a beat produced an event outside :meth:`poll`
        #: (a recovery), so that a driver polls soon. The driver sets it; ``None``: nobody.
        self.wakeup: Callable[[], None] | None = None
        #: Seconds added to every deadline when it is checked (the driver's local-health
        #: stretch, see ``_overload.py``): nobody is suspected or expired before its
        #: deadline plus this. Events still carry the true deadline and time.
        self.stretch = 0.0
        full = self._suspect is not None or stateful
        self.beat = self._beat_full if full else self._table.beat
        self.beat_at = self._beat_full_at if full else self._table.beat_at

    # -- configuration ---------------------------------------------------------------------

    @property
    def timeout(self) -> float:
        """The default timeout, in seconds (for a stateful policy: before any history)."""
        return self._timeout

    @property
    def policy(self) -> Policy:
        return self._policies.default

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
        peer_timeout, own = self._policies.assign(key, timeout)  # raises before any change
        # Watched until it ends: a timeout or history of its own, or no sweeps at all.
        pinned = own or self._table.span is None
        now = self._now()
        self._table.put(key, now)
        if self._stages.suspects:
            self._stages.recover(key, now)
        wheel = self._wheel
        check = now + peer_timeout * (self._suspect or 1.0)
        current = wheel.tick_of(key)
        # A watched peer placed no later than its new check stays where it is (the lazy
        # check re-places it); an unwatched default peer is covered by the sweeps.
        if (current is None and pinned) or (
            current is not None and current > wheel.tick_after(check)
        ):
            wheel.place(key, check)

    def _beat_full(self, key: Hashable) -> bool:
        return self._beat_full_at(key, self._now())

    def _beat_full_at(self, key: Hashable, now: float) -> bool:
        table = self._table
        previous = table.get(key)
        if previous is None:
            return False
        table.put(key, now)
        histories = self._policies.histories
        history = histories.get(key) if histories else None
        if history is not None:
            history.record(now - previous)
        recovered = self._stages.suspects and self._stages.recover(key, now)
        if recovered and self.wakeup is not None:
            self.wakeup()
        if history is None and not recovered:
            return True  # a fixed timeout: the deadline only moved later, the lazy check copes
        # A shorter phi timeout, or a recovered suspect (back to its suspect deadline), may
        # put the next check before the bucket the peer sits in: then place it again.
        check = now + self._policies.timeout_of(key) * (self._suspect or 1.0)
        wheel = self._wheel
        if wheel.tick_after(check) < wheel.tick_of(key):  # type: ignore[operator]
            wheel.place(key, check)
        return True

    def untrack(self, key: Hashable) -> bool:
        """Stop watching ``key`` without expiring it; ``False`` if it was not tracked."""
        if not self._table.drop(key):
            return False
        self._forget(key)
        return True

    def _forget(self, key: Hashable) -> None:
        self._wheel.unwatch(key)
        self._policies.forget(key)
        self._stages.suspects.pop(key, None)

    def __len__(self) -> int:
        return len(self._table)

    def __contains__(self, key: object) -> bool:
        return key in self._table

    def last_beat(self, key: Hashable) -> float:
        """Clock time of the peer's last beat; :class:`KeyError` if not tracked."""
        last = self._table.get(key)
        if last is None:
            raise KeyError(key)
        return last

    def timeout_of(self, key: Hashable) -> float:
        """The peer's current timeout; :class:`KeyError` if not tracked."""
        if key not in self._table:
            raise KeyError(key)
        return self._policies.timeout_of(key)

    def deadline(self, key: Hashable) -> float:
        """The peer's current deadline; :class:`KeyError` if not tracked."""
        return self.last_beat(key) + self.timeout_of(key)

    def keys(self) -> list[Hashable]:
        """A snapshot of the tracked keys."""
        return self._table.keys()

    def is_suspect(self, key: Hashable) -> bool:
        return key in self._stages.suspects

    @property
    def suspects(self) -> int:
        """How many tracked peers are suspects now."""
        return len(self._stages.suspects)

    def is_watched(self, key: Hashable) -> bool:
        """Whether ``key`` is in the per-peer wheel now (a sweep listed it, or it has a
        timeout or history of its own, or is a suspect); healthy peers are not."""
        return self._wheel.tick_of(key) is not None

    @property
    def watched(self) -> int:
        """How many tracked peers are in the per-peer wheel now."""
        return len(self._wheel)

    @property
    def storm(self) -> bool:
        """Whether the storm brake is holding expiries."""
        return self._stages.brake.holding

    # -- time ------------------------------------------------------------------------------

    def grant_grace(self, until: float) -> None:
        """Suspect and expire nobody before clock time ``until`` (the self-pause guard)."""
        self._stages.brake.grant_grace(until)

    @property
    def grace_until(self) -> float:
        return self._stages.brake.grace_until

    def next_deadline(self) -> float | None:
        """When :meth:`poll` next has work: a time ``<= now`` means "poll again now".

        ``None`` when nothing is tracked and nothing is pending.
        """
        if self._stages.pending:
            return -math.inf
        sweep, bucket = self._table.sweep_at, self._wheel.next_due()
        if bucket is not None:
            bucket += self.stretch  # a sweep only lists peers: it keeps its own time
        if sweep is None or bucket is None:
            return bucket if sweep is None else sweep
        return min(sweep, bucket)

    def poll(self, *, limit: int | None = None, max_time: float | None = None) -> list[Expired]:
        """Expire every peer that is silent past its deadline, as of ``clock.now()``.

        Returns the expiries (:meth:`poll_events` returns every event). With
        ``limit``, examines at most that many entries (of the sweep and the
        wheel); with ``max_time``, stops after about that many seconds of work
        (this thread's CPU time, ``time.thread_time``, so that time the process spent
        preempted by others does not count; checked every 64 wheel entries and every sweep
        chunk: a CPU budget, never a liveness clock). Either way the next call
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
        budget = math.inf if limit is None else limit
        if budget <= 0:
            raise ConfigurationError(f"poll(limit=...) must be > 0, not {limit!r}")
        if max_time is not None and not max_time > 0:
            raise ConfigurationError(f"poll(max_time=...) must be > 0, not {max_time!r}")
        cpu = time.thread_time
        stop_at = math.inf if max_time is None else cpu() + max_time
        stages, table = self._stages, self._table
        events, stages.pending = stages.pending, []
        if stages.brake.holding:
            stages.release(now, len(table), events)
        out_of_time = None if max_time is None else (lambda: cpu() > stop_at)
        while table.sweep_at is not None and now >= table.sweep_at and budget > 0:
            examined, listed, deadlines = table.sweep(now, budget, out_of_time)
            budget -= examined
            self._wheel.place_many(listed, deadlines)  # pinned peers and suspects: already
            if table.sweeping or (out_of_time is not None and out_of_time()):
                break  # part-way: the next poll resumes it (next_deadline() says so)
        if budget > 0:  # even out of time: it does 63 entries before it looks at the time
            due = now - self.stretch  # the stretch moves every deadline later
            stages.check(now, due, budget, stop_at, table, self._wheel, self._policies, events)
        if stages.brake.holding:
            stages.release(now, len(table), events)
        return events

    def __repr__(self) -> str:
        return (
            f"<LivenessTracker peers={len(self._table)} watched={self.watched} "
            f"timeout={self._timeout!r} resolution={self._resolution!r} clock={self._clock!r}>"
        )
