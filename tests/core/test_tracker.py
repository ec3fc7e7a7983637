"""The sans-I/O tracker: examples of each semantic rule, then a model-based state machine."""

from __future__ import annotations

import math
from collections.abc import Hashable

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    initialize,
    invariant,
    precondition,
    rule,
)

from heartbeat_monitor import ConfigurationError, Expired, LivenessTracker, ManualClock, Suspected

EPS = 1e-9


def slack(t: float) -> float:
    """Float rounding allowance at time ``t`` (a few ulps: ticks are multiplied back to times)."""
    return 16 * math.ulp(max(abs(t), 1.0))


def make(timeout: float = 10.0, resolution: float | None = 1.0, **kw):
    clock = ManualClock()
    return clock, LivenessTracker(timeout, resolution=resolution, clock=clock, **kw)


# -- construction ------------------------------------------------------------------------------


@pytest.mark.parametrize("timeout", [0, -1, math.inf, math.nan, "10", None, True])
def test_bad_timeout_is_refused(timeout):
    with pytest.raises(ConfigurationError, match="timeout"):
        LivenessTracker(timeout)


@pytest.mark.parametrize("resolution", [0, -0.5, math.inf, math.nan])
def test_bad_resolution_is_refused(resolution):
    with pytest.raises(ConfigurationError, match="resolution"):
        LivenessTracker(10, resolution=resolution)


def test_resolution_larger_than_timeout_is_refused():
    with pytest.raises(ConfigurationError, match="must not exceed the timeout"):
        LivenessTracker(1.0, resolution=2.0)


def test_configuration_error_is_a_value_error():
    with pytest.raises(ValueError):  # noqa: PT011 -- the point is the base class
        LivenessTracker(-1)


def test_default_resolution_is_a_tenth_of_the_timeout_capped_at_one_second():
    assert LivenessTracker(2.0).resolution == pytest.approx(0.2)
    assert LivenessTracker(3600.0).resolution == 1.0


def test_bad_per_peer_timeout_is_refused_and_changes_nothing():
    _, tracker = make()
    with pytest.raises(ConfigurationError):
        tracker.track("a", timeout=-3)
    assert "a" not in tracker
    assert len(tracker) == 0


# -- semantics -----------------------------------------------------------------------------------


def test_never_early_and_at_most_one_resolution_late():
    clock, tracker = make(timeout=10.0, resolution=1.0)
    tracker.track("a")
    clock.advance(10.0)
    assert tracker.poll() == []  # exactly at the deadline: not past it
    deadline = tracker.next_deadline()
    assert deadline is not None
    assert 10.0 < deadline <= 11.0 + EPS
    clock.advance(deadline - clock.now())
    [event] = tracker.poll()
    assert event == Expired(key="a", last_beat=0.0, deadline=10.0, expired_at=deadline)
    assert 0 < event.late_by <= 1.0 + EPS
    assert "a" not in tracker


def test_beat_at_exactly_the_deadline_keeps_the_peer():
    clock, tracker = make(timeout=10.0, resolution=1.0)
    tracker.track("a")
    clock.advance(10.0)
    assert tracker.beat("a") is True
    clock.advance(10.0)
    assert tracker.poll() == []
    assert tracker.deadline("a") == 20.0
    clock.advance(1.0)
    assert [e.key for e in tracker.poll()] == ["a"]


def test_exactly_once():
    clock, tracker = make()
    tracker.track("a")
    clock.advance(100)
    assert [e.key for e in tracker.poll()] == ["a"]
    clock.advance(100)
    assert tracker.poll() == []


def test_beat_does_not_resurrect():
    clock, tracker = make()
    assert tracker.beat("never-tracked") is False
    tracker.track("a")
    clock.advance(12)
    tracker.poll()
    assert tracker.beat("a") is False
    assert "a" not in tracker


def test_nothing_fires_after_untrack():
    clock, tracker = make()
    tracker.track("a")
    assert tracker.untrack("a") is True
    assert tracker.untrack("a") is False
    clock.advance(100)
    assert tracker.poll() == []


def test_retrack_after_expiry_is_a_new_episode():
    clock, tracker = make()
    tracker.track("a")
    clock.advance(11)
    [first] = tracker.poll()
    tracker.track("a")
    assert tracker.last_beat("a") == 11
    clock.advance(11)
    [second] = tracker.poll()
    assert (first.last_beat, second.last_beat) == (0, 11)


def test_untrack_then_retrack_leaves_no_duplicate_expiry():
    clock, tracker = make()
    for _ in range(50):  # a flapping peer: the stale wheel entries must not fire
        tracker.track("a")
        tracker.untrack("a")
        clock.advance(0.01)
    tracker.track("a")
    clock.advance(30)
    assert len(tracker.poll()) == 1


def test_per_peer_timeouts():
    clock, tracker = make(timeout=10.0, resolution=0.5)
    tracker.track("short", timeout=2.0)
    tracker.track("long", timeout=1000.0)
    tracker.track("default")
    assert tracker.timeout_of("short") == 2.0
    clock.advance(2.5)
    assert [e.key for e in tracker.poll()] == ["short"]
    clock.advance(8.0)
    assert [e.key for e in tracker.poll()] == ["default"]
    clock.advance(900.0)
    tracker.beat("long")
    clock.advance(999.0)
    assert tracker.poll() == []
    clock.advance(1.5)
    assert [e.key for e in tracker.poll()] == ["long"]


def test_track_again_with_a_shorter_timeout_takes_effect():
    clock, tracker = make(timeout=100.0, resolution=1.0)
    tracker.track("a")
    tracker.track("a", timeout=5.0)
    clock.advance(6.0)
    assert [e.key for e in tracker.poll()] == ["a"]


def test_timeouts_far_longer_than_the_bucket_count_work():
    clock, tracker = make(timeout=10.0, resolution=0.01)
    tracker.track("day", timeout=86_400.0)
    clock.advance(86_400.0)
    assert tracker.poll() == []
    clock.advance(0.02)
    assert [e.key for e in tracker.poll()] == ["day"]


def test_a_clock_that_does_not_move_expires_nobody():
    _, tracker = make()
    for i in range(100):
        tracker.track(i)
    for _ in range(10):
        assert tracker.poll() == []
    assert len(tracker) == 100


@pytest.mark.parametrize(
    "key", [0, -1, 3.5, "sid", b"bytes", ("ip", 9000), frozenset({1, 2}), None, True]
)
def test_keys_of_any_hashable_type(key: Hashable):
    clock, tracker = make()
    tracker.track(key)
    assert key in tracker
    assert tracker.beat(key)
    clock.advance(11.1)
    assert [e.key for e in tracker.poll()] == [key]


def test_poll_limit_spreads_work_and_loses_nothing():
    clock, tracker = make(timeout=10.0, resolution=1.0)
    for i in range(1000):
        tracker.track(i)
    clock.advance(20)
    seen: list[Hashable] = []
    rounds = 0
    while (deadline := tracker.next_deadline()) is not None and deadline <= clock.now():
        batch = tracker.poll(limit=64)
        assert len(batch) <= 64
        seen.extend(e.key for e in batch)
        rounds += 1
    assert sorted(seen) == list(range(1000))  # type: ignore[type-var]
    assert rounds >= 1000 // 64
    assert len(tracker) == 0
    with pytest.raises(ConfigurationError):
        tracker.poll(limit=0)


def test_the_tracker_returns_events_and_neither_logs_nor_takes_callbacks():
    from structlog.testing import capture_logs

    with pytest.raises(TypeError):
        LivenessTracker(10.0, on_expire=print)  # type: ignore[call-arg]
    clock, tracker = make(suspect=0.5)
    with capture_logs() as logs:
        for i in range(3):
            tracker.track(i)
        clock.advance(20)
        events = tracker.poll_events()
    assert sorted((type(e).__name__, e.key) for e in events) == [
        ("Expired", 0),
        ("Expired", 1),
        ("Expired", 2),
        ("Suspected", 0),
        ("Suspected", 1),
        ("Suspected", 2),
    ]
    assert logs == []


def test_read_access_to_unknown_peers_raises_key_error():
    _, tracker = make()
    with pytest.raises(KeyError):
        tracker.last_beat("x")
    with pytest.raises(KeyError):
        tracker.deadline("x")
    with pytest.raises(KeyError):
        tracker.timeout_of("x")


def test_next_deadline_is_none_when_idle():
    clock, tracker = make()
    assert tracker.next_deadline() is None
    tracker.track("a")
    clock.advance(11)
    tracker.poll()
    assert tracker.next_deadline() is None
    assert "peers=0" in repr(tracker)


# -- the model-based state machine ---------------------------------------------------------------


class TrackerVersusModel(RuleBasedStateMachine):
    """Drive the wheel and a naive dict-of-deadlines model side by side.

    The model knows every peer's exact deadline. After every step we check:
    never early, bounded late (after a poll nobody tracked is one resolution
    past its deadline), exactly once, nothing after untrack, no resurrection,
    and the same set of tracked peers with the same deadlines.
    """

    keys = Bundle("keys")

    @initialize(
        timeout=st.sampled_from([0.5, 1.0, 3.0, 10.0]),
        fraction=st.sampled_from([0.01, 0.1, 0.3, 1.0]),
        start=st.sampled_from([0.0, 1e6, 1.7e9]),
        suspect=st.sampled_from([None, 0.3, 0.5]),
    )
    def setup(self, timeout: float, fraction: float, start: float, suspect: float | None) -> None:
        self.clock = ManualClock(start)
        self.suspect = suspect
        self.tracker = LivenessTracker(
            timeout, resolution=timeout * fraction, clock=self.clock, suspect=suspect
        )
        self.timeout = timeout
        self.resolution = timeout * fraction
        # The model: key -> (last beat, timeout); and how often each episode expired.
        self.model: dict[Hashable, tuple[float, float]] = {}
        self.episode: dict[Hashable, int] = {}
        self.expiries: dict[tuple[Hashable, int], int] = {}

    @rule(
        target=keys,
        key=st.one_of(st.integers(0, 8), st.text(max_size=2), st.tuples(st.integers(0, 2))),
    )
    def new_key(self, key: Hashable) -> Hashable:
        return key

    @rule(key=keys, custom=st.one_of(st.none(), st.sampled_from([0.2, 0.7, 2.0, 25.0])))
    def track(self, key: Hashable, custom: float | None) -> None:
        self.tracker.track(key, timeout=custom)
        if key not in self.model:
            self.episode[key] = self.episode.get(key, 0) + 1
        self.model[key] = (self.clock.now(), self.timeout if custom is None else custom)

    @rule(key=keys)
    def beat(self, key: Hashable) -> None:
        known = key in self.model
        assert self.tracker.beat(key) is known
        if known:
            self.model[key] = (self.clock.now(), self.model[key][1])

    @rule(key=keys)
    def untrack(self, key: Hashable) -> None:
        assert self.tracker.untrack(key) is (key in self.model)
        self.model.pop(key, None)

    @rule(seconds=st.sampled_from([0.0, 0.001, 0.05, 0.1, 0.3, 0.5, 1.0, 2.5, 7.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule()
    def advance_to_next_deadline(self) -> None:
        deadline = self.tracker.next_deadline()
        if deadline is not None and deadline > self.clock.now():
            self.clock.advance(deadline - self.clock.now())

    @rule(limit=st.one_of(st.none(), st.integers(1, 5)))
    def poll(self, limit: int | None) -> None:
        now = self.clock.now()
        events = self.tracker.poll_events(limit=limit)
        returned = [e for e in events if isinstance(e, Expired)]
        for event in events:
            if isinstance(event, Suspected):  # the first stage is never early either
                assert self.suspect is not None
                last, timeout = self.model[event.key]
                assert event.last_beat == last
                assert now > last + timeout * self.suspect
        for event in returned:
            assert event.key in self.model, f"expired a peer that is not tracked: {event}"
            last, timeout = self.model.pop(event.key)
            assert event.last_beat == last
            assert event.deadline == last + timeout
            assert event.expired_at == now
            assert now > event.deadline, f"early expiry: {event}"
            episode = (event.key, self.episode[event.key])
            self.expiries[episode] = self.expiries.get(episode, 0) + 1
            assert self.expiries[episode] == 1, f"expired twice in one episode: {event}"
        if limit is None:
            # Bounded late: after a full poll, nobody is a resolution past its deadline.
            for key, (last, timeout) in self.model.items():
                assert now <= last + timeout + self.resolution + slack(now), (
                    f"{key!r} missed: deadline {last + timeout}, now {now}"
                )

    @invariant()
    def same_peers_same_deadlines(self) -> None:
        if not hasattr(self, "tracker"):
            return
        assert len(self.tracker) == len(self.model)
        for key, (last, timeout) in self.model.items():
            assert key in self.tracker
            assert self.tracker.last_beat(key) == last
            assert self.tracker.deadline(key) == last + timeout

    @invariant()
    def next_deadline_covers_every_peer(self) -> None:
        # The driver sleeps until next_deadline(): it must not be later than one resolution
        # after the earliest deadline of a tracked peer, or expiry would be late.
        if not hasattr(self, "tracker") or not self.model:
            return
        deadline = self.tracker.next_deadline()
        assert deadline is not None
        earliest = min(last + timeout for last, timeout in self.model.values())
        assert deadline <= earliest + self.resolution + slack(deadline)

    @precondition(lambda self: hasattr(self, "tracker"))
    @rule(key=consumes(keys))
    def forget_key(self, key: Hashable) -> None:
        """Keys leave the bundle (they may still be tracked; that is fine)."""


TrackerVersusModel.TestCase.settings = settings(
    max_examples=200, stateful_step_count=50, deadline=None
)
test_tracker_matches_model = TrackerVersusModel.TestCase


def test_poll_max_time_stops_early_and_loses_nothing():
    clock, tracker = make(timeout=10.0, resolution=1.0)
    for i in range(1000):
        tracker.track(i)
    clock.advance(20)
    seen: list[Hashable] = []
    calls = 0
    while (deadline := tracker.next_deadline()) is not None and deadline <= clock.now():
        batch = tracker.poll(max_time=1e-12)  # out of time at the first check, every 64 entries
        assert len(batch) <= 64
        seen.extend(e.key for e in batch)
        calls += 1
    assert sorted(seen) == list(range(1000))  # type: ignore[type-var]
    assert calls >= 1000 // 64
    with pytest.raises(ConfigurationError):
        tracker.poll(max_time=0)
