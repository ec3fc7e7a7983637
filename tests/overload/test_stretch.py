"""The driver stretches deadlines by its own measured lag: ManualClock, lag injected."""

from __future__ import annotations

import time
from collections.abc import Hashable

import anyio
import anyio.lowlevel
import pytest
from structlog.testing import capture_logs

from heartbeat_monitor import (
    ConfigurationError,
    Expired,
    HeartbeatMonitor,
    ManualClock,
    OverloadGuard,
)
from tests.transports._util import until

pytestmark = pytest.mark.anyio

TIMEOUT = 1.0
RESOLUTION = 0.1
STEP = 0.1


def monitored(
    clock: ManualClock, expired: list[Expired], overload: OverloadGuard | None = None
) -> HeartbeatMonitor:
    return HeartbeatMonitor(
        TIMEOUT, resolution=RESOLUTION, clock=clock, on_expire=expired.append, overload=overload
    )


async def run_backlog(guard: OverloadGuard, *, lag: float, until: float = 9.0) -> list[Expired]:
    """Two peers beat every 0.5 s; from t=5 the server records beats ``lag`` s late.

    That is what a backlog does: a beat sent at ``s`` waits until ``s + lag``
    before the server reads it, and the server's probe measures ``lag``.
    ``live`` keeps beating; ``dead`` sends its last beat at t=4.5.
    """
    clock = ManualClock()
    expired: list[Expired] = []
    async with monitored(clock, expired, overload=guard) as monitor:
        monitor.track("live")
        monitor.track("dead")
        sent: list[float] = []  # live's beats not yet read by the server
        for step in range(1, round(until / STEP) + 1):
            now = clock.advance(STEP)
            if step % 5 == 0:  # every 0.5 s
                sent.append(now)
                if now <= 4.5 + 1e-9:
                    monitor.beat("dead")
            delay = lag if now >= 5.0 - 1e-9 else 0.0
            if delay:
                monitor.overload.observe(delay, now)  # what the probe measures meanwhile
            while sent and sent[0] + delay <= now + 1e-9:
                sent.pop(0)
                monitor.beat("live")
            await monitor.wait_idle()
    return expired


async def test_a_live_peer_whose_beats_wait_in_the_backlog_is_not_expired():
    expired = await run_backlog(OverloadGuard(TIMEOUT), lag=0.8)
    assert [e.key for e in expired] == ["dead"]
    # The silent peer is still expired, later by at most the measured lag.
    (dead,) = expired
    assert dead.deadline == pytest.approx(5.5)
    assert 0.8 < dead.late_by <= 0.8 + RESOLUTION + STEP


async def test_without_the_stretch_the_same_backlog_expires_the_live_peer():
    expired = await run_backlog(OverloadGuard(TIMEOUT, lag_factor=0), lag=0.8)
    assert sorted(str(e.key) for e in expired) == ["dead", "live"]  # a false departure
    assert all(e.late_by <= RESOLUTION + STEP for e in expired)


async def test_the_stretch_is_bounded_by_max_stretch():
    guard = OverloadGuard(TIMEOUT, max_stretch=0.3)
    expired = await run_backlog(guard, lag=5.0, until=8.0)
    dead = next(e for e in expired if e.key == "dead")
    assert 0.3 < dead.late_by <= 0.3 + RESOLUTION + STEP
    assert guard.stretch == pytest.approx(0.3)


async def test_the_stretch_fades_once_the_lag_is_older_than_the_window():
    clock = ManualClock()
    expired: list[Expired] = []
    async with monitored(clock, expired) as monitor:
        monitor.overload.observe(0.7, clock.now())  # one lag, at t=0; the window is 1 s
        clock.advance(1.5)
        monitor.track("a")  # deadline 2.5
        for _ in range(20):
            clock.advance(STEP)
            await monitor.wait_idle()
        assert monitor.overload.stretch == 0.0
    assert [e.key for e in expired] == ["a"]
    assert expired[0].late_by <= RESOLUTION + STEP


async def test_expiry_logs_say_how_much_the_deadline_stretched():
    clock = ManualClock()
    with capture_logs() as logs:
        async with HeartbeatMonitor(TIMEOUT, resolution=RESOLUTION, clock=clock) as monitor:
            monitor.track("a")
            clock.advance(0.9)
            monitor.overload.observe(0.5, clock.now())
            clock.advance(0.15)
            await monitor.wait_idle()
            assert "a" in monitor  # 1.05 s silent, but the deadline is 1.5 s now
            clock.advance(0.6)
            await monitor.wait_idle()
            assert "a" not in monitor
    (line,) = [e for e in logs if e["event"] == "heartbeat_monitor.peer_expired"]
    assert line["stretch"] == 0.5
    assert 0.5 < line["late_by"] <= 0.5 + RESOLUTION + STEP


async def test_on_a_virtual_clock_moving_time_is_not_lag():
    clock = ManualClock()
    expired: list[Expired] = []
    async with monitored(clock, expired) as monitor:
        monitor.track("a")
        clock.advance(100)
        await monitor.wait_idle()
        assert expired[0].late_by > 90  # the driver polled "late"...
        assert monitor.overload.samples == 0  # ... which says nothing about the server
        assert monitor.overload.stretch == 0.0


async def test_on_a_real_clock_the_probe_measures_a_blocked_event_loop():
    guard = OverloadGuard(60.0, probe_interval=0.05, shed_lag=None)
    seen: list[Hashable] = []
    async with HeartbeatMonitor(60.0, overload=guard, on_expire=seen.append) as monitor:
        monitor.track("a")  # due in a minute: the driver itself sleeps all along
        await anyio.lowlevel.checkpoint()  # let the probe start its first sleep
        time.sleep(0.3)  # noqa: ASYNC251 -- blocking the event loop is the point
        await until(lambda: guard.samples >= 2)
        assert guard.max_lag >= 0.25 - 0.05
        assert monitor.max_loop_lag == 0.0  # the driver never woke: the probe measured it
    assert seen == []


def test_overload_must_be_a_guard():
    with pytest.raises(ConfigurationError, match="OverloadGuard"):
        HeartbeatMonitor(1.0, overload=0.5)  # type: ignore[arg-type]
