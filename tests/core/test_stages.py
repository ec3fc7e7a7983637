"""Suspect stage, storm brake and self-pause guard: false positives are what hurt."""

from __future__ import annotations

from collections import Counter

import anyio
import pytest
from structlog.testing import capture_logs

from heartbeat_monitor import (
    ConfigurationError,
    Event,
    Expired,
    HeartbeatMonitor,
    LivenessTracker,
    ManualClock,
    PeerEvent,
    Recovered,
    Stalled,
    StormEnded,
    StormStarted,
    Suspected,
)


def kinds(events: list[Event]) -> list[tuple[str, object]]:
    return [(type(e).__name__, e.key if isinstance(e, PeerEvent) else None) for e in events]


# -- suspect stage (sans-I/O) ----------------------------------------------------------------------


def test_suspect_then_recover_then_suspect_then_expire():
    clock = ManualClock()
    tracker = LivenessTracker(10.0, resolution=0.5, clock=clock, suspect=0.5)
    tracker.track("a")
    clock.advance(5.0)
    assert tracker.poll_events() == []  # at the suspect deadline: not past it
    clock.advance(0.5)
    [suspected] = tracker.poll_events()
    assert isinstance(suspected, Suspected)
    assert (suspected.deadline, suspected.suspected_at) == (5.0, 5.5)
    assert tracker.is_suspect("a")
    assert tracker.suspects == 1
    clock.advance(1.0)
    assert tracker.beat("a")
    assert kinds(tracker.poll_events()) == [("Recovered", "a")]
    assert not tracker.is_suspect("a")
    clock.advance(5.5)  # silent again: suspected again (a new suspect deadline from the beat)
    assert kinds(tracker.poll_events()) == [("Suspected", "a")]
    clock.advance(5.0)
    events = tracker.poll_events()
    assert kinds(events) == [("Expired", "a")]
    assert "a" not in tracker
    assert tracker.suspects == 0


def test_a_jump_past_both_deadlines_gives_suspected_then_expired():
    clock = ManualClock()
    tracker = LivenessTracker(2.0, clock=clock, suspect=0.5)
    tracker.track("a")
    clock.advance(100)
    assert kinds(tracker.poll_events()) == [("Suspected", "a"), ("Expired", "a")]
    assert tracker.poll() == []


def test_untrack_clears_a_suspect():
    clock = ManualClock()
    tracker = LivenessTracker(2.0, clock=clock, suspect=0.25)
    tracker.track("a")
    clock.advance(1.0)
    tracker.poll_events()
    assert tracker.is_suspect("a")
    tracker.untrack("a")
    assert tracker.suspects == 0
    clock.advance(10)
    assert tracker.poll_events() == []


@pytest.mark.parametrize("suspect", [0, 1, 1.5, -0.1])
def test_suspect_must_be_a_fraction(suspect):
    with pytest.raises(ConfigurationError, match="suspect"):
        LivenessTracker(1.0, suspect=suspect)


# -- storm brake (sans-I/O) ---------------------------------------------------------------


def test_a_partition_engages_the_brake_releases_it_and_loses_nothing():
    """1,000 peers beat every second; at t=10 a partition silences 800 of them for 20 s."""
    clock = ManualClock()
    tracker = LivenessTracker(3.0, resolution=0.1, clock=clock, storm_share=0.55)
    peers = [f"p{i}" for i in range(1000)]
    for key in peers:
        tracker.track(key)
    cut = set(peers[:800])
    events: list[Event] = []
    for step in range(1, 401):  # 40 s in 0.1 s steps
        clock.advance(0.1)
        t = round(clock.now(), 6)
        partitioned = 10 <= t < 30
        if step % 10 == 0:
            for key in peers:
                if not (partitioned and key in cut) and key in tracker:
                    assert tracker.beat(key)
        events.extend(tracker.poll_events())
    counts = Counter(type(e) for e in events)
    assert counts[StormStarted] == 1
    assert counts[StormEnded] == 1
    [ended] = [e for e in events if isinstance(e, StormEnded)]
    assert ended.reason == "recovered"
    # The partition healed: nobody expired, every suspect recovered, exactly once each.
    assert counts[Expired] == 0
    assert len(tracker) == 1000
    suspected = Counter(e.key for e in events if isinstance(e, Suspected))
    recovered = Counter(e.key for e in events if isinstance(e, Recovered))
    assert set(suspected) == cut
    assert suspected == recovered
    assert set(suspected.values()) == {1}


def test_without_the_brake_the_same_partition_expires_everyone_cut():
    clock = ManualClock()
    tracker = LivenessTracker(3.0, resolution=0.1, clock=clock)
    for i in range(1000):
        tracker.track(i)
    clock.advance(20)
    assert len(tracker.poll()) == 1000


def test_a_storm_that_never_heals_is_released_after_max_hold_and_everyone_expires_once():
    clock = ManualClock()
    tracker = LivenessTracker(
        2.0, resolution=0.1, clock=clock, storm_share=0.5, storm_max_hold=10.0
    )
    for i in range(100):
        tracker.track(i)
    events: list[Event] = []
    for _ in range(200):
        clock.advance(0.1)
        events.extend(tracker.poll_events())
    started = [e for e in events if isinstance(e, StormStarted)]
    ended = [e for e in events if isinstance(e, StormEnded)]
    assert len(started) == 1
    assert [e.reason for e in ended] == ["max_hold"]
    assert ended[0].at - started[0].at == pytest.approx(10.0, abs=0.2)
    expired = [e for e in events if isinstance(e, Expired)]
    assert sorted(e.key for e in expired) == list(range(100))  # type: ignore[type-var]
    assert all(e.expired_at >= ended[0].at for e in expired)  # none while held
    assert len(tracker) == 0


def test_a_few_silent_peers_are_no_storm():
    clock = ManualClock()
    tracker = LivenessTracker(2.0, resolution=0.1, clock=clock, storm_share=0.55)
    for i in range(10):
        tracker.track(i)
    events: list[Event] = []
    for _ in range(40):
        clock.advance(0.1)
        for i in range(3, 10):
            tracker.beat(i)
        events.extend(tracker.poll_events())
    assert not any(isinstance(e, StormStarted) for e in events)
    assert sorted(e.key for e in events if isinstance(e, Expired)) == [0, 1, 2]  # type: ignore[type-var]


# -- self-pause guard (driver) ------------------------------------------------------------

pytest_anyio = pytest.mark.anyio


@pytest_anyio
async def test_a_30s_stall_with_10000_beating_peers_makes_no_false_expiry():
    clock = ManualClock()
    expired: list[Expired] = []
    stalls: list[Stalled] = []
    monitor = HeartbeatMonitor(
        5.0,
        resolution=0.1,
        clock=clock,
        stall_limit=2.0,
        on_expire=expired.append,
        on_stall=stalls.append,
    )
    beating = [f"b{i}" for i in range(10_000)]
    silent = [f"s{i}" for i in range(100)]
    with capture_logs() as logs:
        async with monitor:
            for key in beating + silent:
                monitor.track(key)
            for _ in range(10):  # normal operation: beats every second, nothing stalls
                clock.advance(1.0)
                for key in beating:
                    monitor.beat(key)
                await monitor.wait_idle()
            assert {e.key for e in expired} == set(silent)
            expired.clear()
            for key in silent:
                monitor.track(key)
            # The loop stalls for 30 s; the driver wakes long after its target (it never
            # sleeps for more than a timeout ahead)...
            clock.advance(30.0)
            await monitor.wait_idle()
            assert len(stalls) == 1
            assert stalls[0].lag >= 30.0 - 5.0
            assert monitor.max_loop_lag >= 30.0 - 5.0
            assert expired == []  # ... and convicts nobody yet.
            # ... then the beats that waited in socket buffers are read.
            for key in beating:
                monitor.beat(key)
            for _ in range(10):
                clock.advance(1.0)
                for key in beating:
                    monitor.beat(key)
                await monitor.wait_idle()
    assert expired, "the truly silent peers must expire after the grace"
    assert {e.key for e in expired} == set(silent)  # zero false expiries
    grace_until = stalls[0].grace_until
    assert all(e.expired_at > grace_until for e in expired)
    assert any(e["event"] == "heartbeat_monitor.stall_detected" for e in logs)


@pytest_anyio
async def test_without_the_guard_the_same_stall_expires_everyone():
    clock = ManualClock()
    expired: list[Expired] = []
    async with HeartbeatMonitor(5.0, resolution=0.1, clock=clock, on_expire=expired.append) as m:
        for i in range(1000):
            m.track(i)
        clock.advance(30.0)
        await m.wait_idle()
    assert len(expired) == 1000


@pytest_anyio
async def test_suspect_and_recover_reach_callbacks_streams_and_logs():
    clock = ManualClock()
    seen: list[str] = []

    async def on_recover(event: Recovered) -> None:
        seen.append(f"recover {event.key}")

    with capture_logs() as logs:
        async with HeartbeatMonitor(
            4.0,
            resolution=0.5,
            clock=clock,
            suspect=0.5,
            on_suspect=lambda e: seen.append(f"suspect {e.key}"),
            on_recover=on_recover,
        ) as monitor:
            stream = monitor.events()
            monitor.track("a")
            clock.advance(2.5)
            await monitor.wait_idle()
            assert monitor.beat("a")
            # The beat woke the driver by itself; wait_idle only waits for the dispatch.
            await monitor.wait_idle()
            stream.close()
    assert seen == ["suspect a", "recover a"]
    names = [e["event"] for e in logs]
    assert "heartbeat_monitor.peer_suspected" in names
    assert "heartbeat_monitor.peer_recovered" in names


@pytest_anyio
async def test_a_real_clock_driver_reports_its_lag():
    gone = anyio.Event()
    async with HeartbeatMonitor(0.05, resolution=0.01, on_expire=lambda e: gone.set()) as monitor:
        monitor.track("a")
        with anyio.fail_after(5):
            await gone.wait()
        assert 0 <= monitor.loop_lag <= monitor.max_loop_lag


def test_stall_settings_are_checked():
    with pytest.raises(ConfigurationError, match="stall_limit"):
        HeartbeatMonitor(1.0, stall_limit=-1)
    with pytest.raises(ConfigurationError, match="stall_grace"):
        HeartbeatMonitor(1.0, stall_grace=0)
