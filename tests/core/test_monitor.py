"""The async driver, on asyncio and trio, with a ManualClock: no real sleeping."""

from __future__ import annotations

import random
from collections.abc import Hashable

import anyio
import pytest
from structlog.testing import capture_logs

from heartbeat_monitor import (
    ConfigurationError,
    Expired,
    HeartbeatMonitor,
    ManualClock,
)

pytestmark = pytest.mark.anyio


async def test_sync_and_async_callbacks_each_run_once_per_expiry():
    clock = ManualClock()
    sync_seen: list[Hashable] = []
    async_seen: list[Hashable] = []

    async def async_callback(event: Expired) -> None:
        await anyio.lowlevel.checkpoint()
        async_seen.append(event.key)

    async with HeartbeatMonitor(
        10, resolution=1, clock=clock, on_expire=lambda e: sync_seen.append(e.key)
    ) as monitor:
        monitor.on_expire(async_callback)
        monitor.track("a")
        monitor.track("b")
        clock.advance(5)
        assert monitor.beat("b")
        clock.advance(6)
        await monitor.wait_idle()
        assert sync_seen == async_seen == ["a"]
        clock.advance(5)
        await monitor.wait_idle()
        assert sync_seen == async_seen == ["a", "b"]
        clock.advance(100)
        await monitor.wait_idle()
        assert sync_seen == ["a", "b"]


async def test_track_wakes_a_driver_sleeping_on_a_later_deadline():
    clock = ManualClock()
    seen: list[Hashable] = []
    async with HeartbeatMonitor(
        100, resolution=1, clock=clock, on_expire=lambda e: seen.append(e.key)
    ) as monitor:
        monitor.track("slow")
        await monitor.wait_idle()
        monitor.track("fast", timeout=2)
        clock.advance(3.5)
        await monitor.wait_idle()
        assert seen == ["fast"]


async def test_a_raising_callback_is_logged_and_never_stops_the_monitor():
    clock = ManualClock()
    seen: list[Hashable] = []

    def bad(event: Expired) -> None:
        raise RuntimeError(f"cleanup of {event.key} failed")

    async def bad_async(event: Expired) -> None:
        raise ValueError("async boom")

    with capture_logs() as logs:
        async with HeartbeatMonitor(1, clock=clock) as monitor:
            monitor.on_expire(bad)
            monitor.on_expire(bad_async)
            monitor.on_expire(lambda e: seen.append(e.key))
            for key in range(5):
                monitor.track(key)
            clock.advance(2)
            await monitor.wait_idle()
            monitor.track("later")
            clock.advance(2)
            await monitor.wait_idle()
    assert sorted(map(str, seen)) == ["0", "1", "2", "3", "4", "later"]
    failures = [e for e in logs if e["event"] == "heartbeat_monitor.callback_failed"]
    assert len(failures) == 12  # 6 expiries x 2 failing callbacks, each logged with a traceback
    assert all(e["exc_info"] is True and e["log_level"] == "error" for e in failures)


async def test_a_slow_callback_does_not_delay_other_expiries():
    clock = ManualClock()
    release = anyio.Event()
    seen: list[Hashable] = []

    async def slow(event: Expired) -> None:
        if event.key == "stuck":
            await release.wait()
        seen.append(event.key)

    async with HeartbeatMonitor(10, resolution=1, clock=clock, on_expire=slow) as monitor:
        monitor.track("stuck")
        clock.advance(11)
        with anyio.fail_after(5):
            while monitor.tracker.next_deadline() is not None or "stuck" in monitor:
                await anyio.lowlevel.checkpoint()
        monitor.track("next")
        clock.advance(11)
        with anyio.fail_after(5):
            while "next" not in seen:
                await anyio.lowlevel.checkpoint()
        assert seen == ["next"]
        release.set()
        await monitor.wait_idle()
        assert seen == ["next", "stuck"]


async def test_callback_timeout_cuts_off_a_hung_callback():
    clock = ManualClock()

    async def hung(event: Expired) -> None:
        await anyio.sleep_forever()

    with capture_logs() as logs:
        async with HeartbeatMonitor(1, clock=clock, on_expire=hung, callback_timeout=0.01) as m:
            m.track("a")
            clock.advance(2)
            with anyio.fail_after(5):
                await m.wait_idle()
    assert [e["peer"] for e in logs if e["event"] == "heartbeat_monitor.callback_timeout"] == ["a"]


async def test_event_stream_sees_every_expiry_and_ends_with_the_monitor():
    clock = ManualClock()
    received: list[Expired] = []
    async with anyio.create_task_group() as tg:
        monitor = HeartbeatMonitor(5, resolution=0.5, clock=clock)
        await tg.start(monitor.run)
        stream = monitor.events()  # registered now: nothing is missed before iteration starts

        async def consume() -> None:
            async with stream:
                async for event in stream:
                    assert isinstance(event, Expired)
                    received.append(event)

        for key in range(10):
            monitor.track(key)
        clock.advance(6)
        await monitor.wait_idle()
        tg.start_soon(consume)
        monitor.stop()
    assert sorted(e.key for e in received) == list(range(10))  # type: ignore[type-var]


async def test_a_slow_event_consumer_loses_events_not_the_monitor():
    clock = ManualClock()
    with capture_logs() as logs:
        async with HeartbeatMonitor(1, clock=clock) as monitor:
            stream = monitor.events(max_buffer=3)
            for key in range(10):
                monitor.track(key)
            clock.advance(2)
            await monitor.wait_idle()
            assert len(monitor) == 0
            assert stream.dropped == 7
            stream.close()
    assert any(e["event"] == "heartbeat_monitor.events_dropped" for e in logs)


async def test_expiries_are_logged_with_structlog():
    clock = ManualClock()
    with capture_logs() as logs:
        async with HeartbeatMonitor(1, resolution=0.1, clock=clock) as monitor:
            monitor.track("peer-1")
            clock.advance(1.0)
            await monitor.wait_idle()
            due = monitor.tracker.next_deadline()
            assert due is not None
            clock.advance(due - clock.now())  # exactly when the driver would wake on a real clock
            await monitor.wait_idle()
    [entry] = [e for e in logs if e["event"] == "heartbeat_monitor.peer_expired"]
    assert entry["peer"] == "peer-1"
    assert entry["log_level"] == "info"
    assert 0 < entry["late_by"] <= 0.1 + 1e-9


async def test_ten_thousand_peers_through_an_hour_of_virtual_time():
    """Every 10 s of virtual time, 95% of the peers beat; the others go silent for good."""
    clock = ManualClock()
    rng = random.Random(7)
    expired: dict[int, Expired] = {}

    def on_expire(event: Expired) -> None:
        assert event.key not in expired, "expired twice"
        expired[event.key] = event  # type: ignore[index]

    async with HeartbeatMonitor(30, resolution=1, clock=clock, on_expire=on_expire) as monitor:
        alive = set(range(10_000))
        for key in alive:
            monitor.track(key)
        last_beat = dict.fromkeys(alive, 0.0)
        for _ in range(360):  # one hour in 10 s steps
            clock.advance(10)
            await monitor.wait_idle()
            # Nobody still beating has expired; everyone silent for 40 s (timeout + one step) has.
            assert not alive & expired.keys()
            overdue = {k for k, t in last_beat.items() if k not in alive and clock.now() - t > 40}
            assert overdue <= expired.keys()
            alive -= {key for key in alive if rng.random() < 0.002}
            for key in alive:
                assert monitor.beat(key)
                last_beat[key] = clock.now()
        assert 0 < len(expired) < 10_000
        clock.advance(41)  # now everybody is silent
        await monitor.wait_idle()
        assert len(monitor) == 0
    assert expired.keys() == last_beat.keys()
    for key, event in expired.items():
        assert event.last_beat == last_beat[key]
        assert event.expired_at > event.deadline  # never early
        # The driver was woken every 10 s, and once more at the end.
        assert event.expired_at == clock.now() or event.late_by <= 10.0 + 1e-6


async def test_embedded_in_a_callers_task_group_and_stopped_cleanly():
    clock = ManualClock()
    monitor = HeartbeatMonitor(1, clock=clock)
    async with anyio.create_task_group() as tg:
        await tg.start(monitor.run)
        with pytest.raises(RuntimeError, match="already running"):
            await monitor.run()
        monitor.track("a")
        monitor.stop()
    assert "stopped" in repr(monitor)
    clock.advance(5)
    with pytest.raises(RuntimeError, match="not running"):
        await monitor.wait_idle()


async def test_cancellation_stops_the_driver():
    monitor = HeartbeatMonitor(1, clock=ManualClock())
    with anyio.move_on_after(0.05):
        await monitor.run()
    assert "stopped" in repr(monitor)


async def test_on_the_real_clock_expiry_happens_without_manual_polling():
    """Real time, small numbers: the driver's own sleep must wake it (bounded wait, no guess)."""
    expired = anyio.Event()
    async with HeartbeatMonitor(0.05, resolution=0.01, on_expire=lambda e: expired.set()) as m:
        m.track("a")
        with anyio.fail_after(5):
            await expired.wait()
        assert "a" not in m


def test_bad_driver_configuration_is_refused():
    with pytest.raises(ConfigurationError):
        HeartbeatMonitor(1, max_concurrent_callbacks=0)
    with pytest.raises(ConfigurationError):
        HeartbeatMonitor(1, callback_timeout=-1)
    with pytest.raises(ConfigurationError):
        HeartbeatMonitor(1, batch_size=0)
    with pytest.raises(ConfigurationError):
        HeartbeatMonitor(1, on_expire="not callable")  # type: ignore[arg-type]


async def test_remove_callback_unregisters_it():
    clock = ManualClock()
    seen: list[Hashable] = []

    def callback(event: Expired) -> None:
        seen.append(event.key)

    async with HeartbeatMonitor(1, clock=clock, on_expire=callback) as monitor:
        monitor.track("a")
        clock.advance(2)
        await monitor.wait_idle()
        assert monitor.remove_callback(callback)
        assert not monitor.remove_callback(callback)
        monitor.track("b")
        clock.advance(2)
        await monitor.wait_idle()
    assert seen == ["a"]


async def expire_all_and_watch(peers: int, **options: object) -> tuple[int, set[int]]:
    """Expire ``peers`` at once; return how many expired and the counts another task saw."""
    clock = ManualClock()
    expired = 0
    midway: set[int] = set()

    def on_expire(event: Expired) -> None:
        nonlocal expired
        expired += 1

    monitor = HeartbeatMonitor(1, clock=clock, on_expire=on_expire, **options)  # type: ignore[arg-type]
    async with monitor:
        for key in range(peers):
            monitor.track(key)
        done = anyio.Event()

        async def observer() -> None:
            while not done.is_set():
                if 0 < expired < peers:
                    midway.add(expired)
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as tg:
            tg.start_soon(observer)
            clock.advance(2)
            await monitor.wait_idle()
            done.set()
    return expired, midway


async def test_a_mass_expiry_is_spread_over_batches_that_let_other_tasks_run():
    """100,000 peers expire at once: other tasks run in between, not only at the end."""
    expired, midway = await expire_all_and_watch(100_000, max_block=0.001)
    assert expired == 100_000
    assert len(midway) >= 3, "the driver never yielded during the mass expiry"


async def test_a_fixed_batch_size_is_respected():
    # max_block bounds each poll's time as well: a large one leaves the batch as the only
    # bound, so that a loaded machine cannot cut a poll short.
    expired, midway = await expire_all_and_watch(1000, batch_size=100, max_block=10.0)
    assert expired == 1000
    assert len(midway) >= 5
    assert all(count % 100 == 0 for count in midway)  # one batch of 100 between checkpoints
