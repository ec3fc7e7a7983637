"""The sans-I/O tracker: examples of each semantic rule, then a model-based state machine."""

from __future__ import annotations

import math
from collections.abc import Hashable

import pytest
from hypothesis import event as note
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


@pytest.mark.parametrize(
    "options",
    [{"limit": 64}, {"max_time": 1e-12}],  # a budget of entries; out of time at every check
    ids=["limit", "max_time"],
)
def test_a_bounded_poll_spreads_work_and_loses_nothing(options):
    clock, tracker = make(timeout=10.0, resolution=1.0)
    for i in range(1000):
        tracker.track(i)
    clock.advance(20)
    seen: list[Hashable] = []
    calls = 0
    while (deadline := tracker.next_deadline()) is not None and deadline <= clock.now():
        batch = tracker.poll(**options)
        assert len(batch) <= 64
        seen.extend(e.key for e in batch)
        calls += 1
    assert sorted(seen) == list(range(1000))  # type: ignore[type-var]
    assert calls >= 1000 // 64
    assert len(tracker) == 0


@pytest.mark.parametrize("options", [{"limit": 0}, {"max_time": 0}, {"max_time": -1.0}])
def test_a_bad_poll_budget_is_refused(options):
    _, tracker = make()
    with pytest.raises(ConfigurationError):
        tracker.poll(**options)


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

    @rule(count=st.integers(5, 40))
    def track_a_crowd(self, count: int) -> None:
        """Many default peers at once, so that sweeps list peers and span several polls."""
        for i in range(count):
            self.track(("crowd", len(self.episode), i), None)

    @rule(key=keys)
    def beat(self, key: Hashable) -> None:
        known = key in self.model
        assert self.tracker.beat(key) is known
        if known:
            self.model[key] = (self.clock.now(), self.model[key][1])

    @rule(but=st.one_of(st.none(), keys))
    def everyone_beats(self, but: Hashable) -> None:
        """A healthy population (but one): watched peers that beat leave the watch."""
        for key in self.model:
            if key != but:
                assert self.tracker.beat(key)
                self.model[key] = (self.clock.now(), self.model[key][1])

    @rule(share=st.sampled_from([0.05, 0.2, 0.45, 0.7, 0.9]))
    def advance_a_share_of_the_timeout(self, share: float) -> None:
        self.clock.advance(self.timeout * share)

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
        watched = {key for key in self.model if self.tracker.is_watched(key)}
        events = self.tracker.poll_events(limit=limit)
        for key in self.model.keys() & self.tracker.keys():
            if (key in watched) != self.tracker.is_watched(key):
                note("a peer left the watch" if key in watched else "a sweep listed a peer")
        deadline = self.tracker.next_deadline()
        if limit is not None and deadline is not None and deadline <= now:
            note("a poll stopped with work left (a sweep or a bucket part-way)")
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
    def peers_with_a_timeout_of_their_own_and_suspects_stay_watched(self) -> None:
        if not hasattr(self, "tracker"):
            return
        assert self.tracker.watched <= len(self.model)
        for key, (_, timeout) in self.model.items():
            if timeout != self.timeout or self.tracker.is_suspect(key):
                assert self.tracker.is_watched(key), key

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
    max_examples=300, stateful_step_count=60, deadline=None
)
test_tracker_matches_model = TrackerVersusModel.TestCase


# -- sweep + watch: the transitions, by example ---------------------------------------------


def run_crowd(
    tracker: LivenessTracker,
    clock: ManualClock,
    peers: list[str],
    seconds: float,
    *,
    quiet: dict[str, tuple[float, float]] | None = None,
    seen: dict[str, list[tuple[float, bool]]] | None = None,
) -> list[Expired]:
    """Every peer beats once a second, at its own phase, while the clock moves by 0.1 s and
    the tracker is polled. A peer in ``quiet`` is silent from ``start`` to ``end``; for the
    peers in ``seen``, records (time, watched) after every poll."""
    expired: list[Expired] = []
    steps = round(seconds / 0.1)
    for step in range(1, steps + 1):
        now = clock.advance(0.1)
        for i, key in enumerate(peers):
            start, end = (quiet or {}).get(key, (math.inf, math.inf))
            if i % 10 == step % 10 and not start <= now < end and key in tracker:
                assert tracker.beat(key)
        expired += tracker.poll()
        for key, watched in (seen or {}).items():
            watched.append((now, tracker.is_watched(key)))
    return expired


def crowd(count: int = 300) -> tuple[ManualClock, LivenessTracker, list[str]]:
    clock, tracker = make(timeout=10.0, resolution=0.1)
    peers = [f"p{i}" for i in range(count)]
    for key in peers:
        tracker.track(key)
    return clock, tracker, peers


def test_healthy_peers_hold_no_watch():
    clock, tracker, peers = crowd()
    assert run_crowd(tracker, clock, peers, 15.0) == []
    watched: dict[str, list[tuple[float, bool]]] = {key: [] for key in peers}
    assert run_crowd(tracker, clock, peers, 45.0, seen=watched) == []
    assert not any(w for history in watched.values() for _, w in history)
    assert tracker.watched == 0
    assert len(tracker) == len(peers)


def test_a_peer_that_falls_silent_is_watched_before_its_deadline_and_expires_on_time():
    clock, tracker, peers = crowd()
    seen: dict[str, list[tuple[float, bool]]] = {"p3": []}
    [event] = run_crowd(tracker, clock, peers, 40.0, quiet={"p3": (20.0, math.inf)}, seen=seen)
    assert event.key == "p3"
    assert 19.0 < event.last_beat < 20.0
    assert event.deadline < event.expired_at <= event.deadline + 0.1 + EPS
    first_watched = min(t for t, watched in seen["p3"] if watched)
    assert first_watched < event.deadline  # listed by a sweep before its deadline
    assert "p3" not in tracker
    assert not tracker.is_watched("p3")


def test_a_watched_peer_that_beats_again_leaves_the_watch_and_lives():
    clock, tracker, peers = crowd()
    # Three peers silent for 9 s each (less than the timeout), staggered so that a sweep
    # falls in the silence of at least one of them, whatever the sweeps' period.
    quiet = {"p4": (20.0, 28.5), "p5": (23.0, 31.5), "p6": (26.0, 34.5)}
    seen: dict[str, list[tuple[float, bool]]] = {key: [] for key in quiet}
    assert run_crowd(tracker, clock, peers, 60.0, quiet=quiet, seen=seen) == []
    listed = {key for key, history in seen.items() if any(w for _, w in history)}
    assert listed, "a sweep lists a peer silent for most of a timeout"
    for key in listed:
        watched_at = [t for t, watched in seen[key] if watched]
        assert quiet[key][0] < min(watched_at) < quiet[key][1]
        assert max(watched_at) < quiet[key][1] + 10.0  # left the watch at its check
    assert tracker.watched == 0
    assert set(quiet) <= set(tracker.keys())


def test_a_peer_with_a_timeout_of_its_own_stays_watched_until_it_ends():
    clock, tracker, peers = crowd(50)
    tracker.track("own", timeout=20.0)
    seen: dict[str, list[tuple[float, bool]]] = {"own": []}
    assert run_crowd(tracker, clock, [*peers, "own"], 30.0, seen=seen) == []
    assert all(watched for _, watched in seen["own"])
    tracker.track("own")  # back to the default timeout: it leaves the watch at its check
    assert run_crowd(tracker, clock, [*peers, "own"], 30.0) == []
    assert not tracker.is_watched("own")
    assert tracker.untrack("own")
    assert not tracker.is_watched("own")


def test_a_sweep_spread_over_polls_loses_no_change_made_between_them():
    clock, tracker = make(timeout=10.0, resolution=0.1)
    for i in range(20_000):  # more than one chunk of a sweep
        tracker.track(i)
    clock.advance(6.0)  # the first sweep is due (every peer is 6 s silent)
    assert tracker.poll(limit=1000) == []
    deadline = tracker.next_deadline()
    assert deadline is not None
    assert deadline <= clock.now()  # the sweep is part-way
    # Between two of its steps: a new peer, an untracked one, a beat, an untrack + track.
    tracker.track("new")
    assert tracker.untrack(5)
    assert tracker.beat(5) is False
    assert tracker.beat(6)
    assert tracker.untrack(7)
    assert tracker.untrack(7) is False
    tracker.track(7)
    assert len(tracker) == 20_000
    assert {"new", 6, 7} <= set(tracker.keys())
    assert 5 not in tracker
    assert (tracker.last_beat(6), tracker.last_beat(7), tracker.last_beat("new")) == (6.0,) * 3
    with pytest.raises(KeyError):
        tracker.last_beat(5)
    while (deadline := tracker.next_deadline()) is not None and deadline <= clock.now():
        assert tracker.poll(limit=1000) == []
    assert len(tracker) == 20_000
    assert tracker.last_beat(6) == 6.0
    clock.advance(4.2)  # past the deadline of every peer tracked at 0
    expired = [e.key for e in tracker.poll()]
    assert len(expired) == len(set(expired)) == 20_000 - 3
    assert {5, 6, 7, "new"}.isdisjoint(expired)
    assert sorted(tracker.keys(), key=str) == [6, 7, "new"]
    clock.advance(6.0)
    assert sorted(str(e.key) for e in tracker.poll()) == ["6", "7", "new"]
    assert len(tracker) == 0
