"""Policies: each deadline is what the policy's definition says, in closed form."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from heartbeat_monitor import (
    ConfigurationError,
    FixedTimeout,
    LivenessTracker,
    ManualClock,
    MissedBeats,
    PhiAccrual,
)

thresholds = st.floats(0.05, 30.0)
means = st.floats(0.01, 60.0)
stds = st.floats(0.0, 20.0)
pauses = st.floats(0.0, 10.0)


@given(threshold=thresholds, mean=means, std=stds, pause=pauses, min_std=st.floats(0.001, 2.0))
@settings(max_examples=500)
def test_phi_closed_form_agrees_with_evaluating_phi(threshold, mean, std, pause, min_std):
    policy = PhiAccrual(threshold, min_std=min_std, acceptable_pause=pause)
    t = policy.detection_time(mean, std)
    if t <= 1e-6:  # phi is past the threshold from the first instant: expire at once
        assert policy.phi(0.0, mean, std) >= threshold
        return
    # phi reaches the threshold at t (up to float error), and not before it.
    assert policy.phi(t, mean, std) == pytest.approx(threshold, rel=1e-6, abs=1e-6)
    earlier = t - max(abs(t) * 1e-6, 1e-6)
    if earlier > 0:
        assert policy.phi(earlier, mean, std) <= threshold + 1e-9


@given(threshold=thresholds, mean=means, std=stds, pause=pauses)
def test_phi_is_monotonic_so_the_deadline_is_never_early(threshold, mean, std, pause):
    policy = PhiAccrual(threshold, acceptable_pause=pause)
    t = policy.detection_time(mean, std)
    if t <= 1e-6:
        return  # already past the threshold at elapsed 0 (see the test above)
    for fraction in (0.1, 0.5, 0.9, 0.99):
        assert policy.phi(t * fraction, mean, std) <= threshold + 1e-9


@given(
    intervals=st.lists(st.floats(0.05, 5.0), min_size=1, max_size=300),
    max_samples=st.integers(2, 50),
)
def test_phi_history_keeps_exact_running_sums_over_its_window(intervals, max_samples):
    policy = PhiAccrual(max_samples=max_samples, expected_interval=1.0)
    history = policy.new_history()
    for interval in intervals:
        history.record(interval)
    window = [0.75, 1.25, *intervals][-max_samples:]  # Akka's bootstrap samples come first
    mean = sum(window) / len(window)
    std = math.sqrt(max(sum(x * x for x in window) / len(window) - mean * mean, 0.0))
    assert history.mean == pytest.approx(mean, rel=1e-9, abs=1e-9)
    assert history.std == pytest.approx(std, rel=1e-6, abs=1e-6)
    assert history.timeout() == pytest.approx(policy.detection_time(mean, std), rel=1e-6)


def test_documented_detection_times_for_steady_one_second_beats():
    assert FixedTimeout(3).timeout == 3.0
    assert MissedBeats(1, 2).timeout == 2.0
    phi = PhiAccrual()  # Akka's defaults: threshold 8, min_std 0.1, acceptable pause 3
    history = phi.new_history()
    for _ in range(phi.max_samples):
        history.record(1.0)
    assert 4.5 <= history.timeout() <= 5.5
    assert history.timeout() == pytest.approx(4.52, abs=0.01)


@given(
    interval=st.floats(0.01, 100.0),
    misses=st.floats(0.5, 10.0),
    beat_gaps=st.lists(st.floats(0.0, 1.0), max_size=20),
)
def test_missed_beats_never_expires_a_peer_within_misses_intervals(interval, misses, beat_gaps):
    clock = ManualClock()
    policy = MissedBeats(interval, misses)
    tracker = LivenessTracker(policy, clock=clock)
    tracker.track("p")
    for gap in beat_gaps:  # beats at most one timeout apart: never expired
        clock.advance(gap * policy.timeout)
        assert tracker.poll() == []
        assert tracker.beat("p")
    clock.advance(policy.timeout)
    assert tracker.poll() == []  # exactly misses * interval of silence: not more than it
    clock.advance(tracker.resolution * 1.001 + 1e-9)
    [event] = tracker.poll()
    assert event.deadline == event.last_beat + interval * misses


def test_a_phi_tracker_learns_the_beat_rate_and_expires_per_its_formula():
    clock = ManualClock()
    phi = PhiAccrual(8.0, acceptable_pause=0.0, min_std=0.05, max_samples=50, expected_interval=1)
    tracker = LivenessTracker(phi, resolution=0.01, clock=clock)
    tracker.track("fast")
    tracker.track("slow")
    for i in range(100):
        clock.advance(0.1)
        tracker.beat("fast")  # every 0.1 s
        if i % 20 == 19:
            tracker.beat("slow")  # every 2 s
        assert tracker.poll() == []
    fast, slow = tracker.timeout_of("fast"), tracker.timeout_of("slow")
    assert fast < 0.5 < 2.0 < slow  # each peer's deadline follows its own rhythm
    # A fast peer's shrinking timeout moved its deadline before its bucket: it must still be
    # expired on time (within one resolution), not at the bucket it was first placed in.
    clock.advance(fast + 0.02)
    assert [e.key for e in tracker.poll()] == ["fast"]


def test_per_peer_policies():
    clock = ManualClock()
    tracker = LivenessTracker(10.0, resolution=0.5, clock=clock)
    tracker.track("a", timeout=MissedBeats(1.0, 3))
    tracker.track("b", timeout=FixedTimeout(5.0))
    assert tracker.timeout_of("a") == 3.0
    assert tracker.timeout_of("b") == 5.0
    with pytest.raises(ConfigurationError, match="stateful"):
        tracker.track("c", timeout=PhiAccrual())
    assert "c" not in tracker


@pytest.mark.parametrize(
    "make",
    [
        lambda: FixedTimeout(0),
        lambda: MissedBeats(-1),
        lambda: MissedBeats(1, 0),
        lambda: PhiAccrual(threshold=0),
        lambda: PhiAccrual(min_std=0),
        lambda: PhiAccrual(acceptable_pause=-1),
        lambda: PhiAccrual(max_samples=1),
        lambda: PhiAccrual(expected_interval=math.nan),
    ],
)
def test_bad_policies_are_refused(make):
    with pytest.raises(ConfigurationError):
        make()
