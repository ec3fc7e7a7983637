from __future__ import annotations

import math
import time

import pytest

from heartbeat_monitor import Clock, ManualClock, MonotonicClock, VirtualClock


def test_manual_clock_moves_only_forward():
    clock = ManualClock(start=2.5)
    assert clock.now() == 2.5
    assert clock.advance(0) == 2.5
    assert clock.advance(1.5) == 4.0
    for bad in (-0.001, math.nan, math.inf):
        with pytest.raises(ValueError, match="never goes backwards"):
            clock.advance(bad)
    assert clock.now() == 4.0
    assert repr(clock) == "ManualClock(now=4.0)"


def test_manual_clock_refuses_a_non_finite_start():
    with pytest.raises(ValueError, match="finite"):
        ManualClock(start=math.inf)


def test_manual_clock_tells_subscribers_when_it_moves():
    clock = ManualClock()
    calls: list[float] = []
    unsubscribe = clock.subscribe(lambda: calls.append(clock.now()))
    clock.advance(1)
    clock.advance(2)
    unsubscribe()
    unsubscribe()  # idempotent
    clock.advance(3)
    assert calls == [1, 3]


def test_monotonic_clock_is_monotonic_time():
    clock = MonotonicClock()
    before = time.monotonic()
    now = clock.now()
    assert before <= now <= time.monotonic()
    assert repr(clock) == "MonotonicClock()"


def test_protocols():
    assert isinstance(MonotonicClock(), Clock)
    assert not isinstance(MonotonicClock(), VirtualClock)
    assert isinstance(ManualClock(), VirtualClock)
