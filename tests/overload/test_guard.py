"""OverloadGuard alone (sans-I/O): lag, the stretch it grants, when it sheds. Times are given."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from heartbeat_monitor import OVERLOADED, ConfigurationError, OverloadGuard


def test_lag_readings_and_the_recent_window():
    guard = OverloadGuard(timeout=2.0)  # window and max_stretch default to the timeout
    assert (guard.lag, guard.max_lag, guard.samples) == (0.0, 0.0, 0)
    guard.observe(0.3, now=10.0)
    guard.observe(0.1, now=10.5)
    assert guard.lag == 0.1
    assert guard.max_lag == 0.3
    assert guard.samples == 2
    assert guard.recent_lag(11.0) == 0.3
    assert guard.recent_lag(12.2) == 0.1  # 0.3 (at 10.0) left the 2 s window, 0.1 (at 10.5) not
    assert guard.recent_lag(12.6) == 0.0
    assert guard.max_lag == 0.3  # the highest ever stays
    guard.observe(-0.001, now=13.0)  # a probe that woke a hair early measured no lag
    assert guard.lag == 0.0


def test_stretch_is_the_recent_lag_times_the_factor_and_bounded():
    guard = OverloadGuard(timeout=2.0, lag_factor=1.5, max_stretch=1.0, shed_lag=None)
    assert guard.stretch_at(0.0) == 0.0
    guard.observe(0.4, now=1.0)
    assert guard.stretch_at(1.0) == pytest.approx(0.6)
    assert guard.stretch == pytest.approx(0.6)
    guard.observe(30.0, now=1.5)  # a huge lag is still bounded by max_stretch
    assert guard.stretch_at(1.5) == 1.0
    assert guard.stretch_at(3.6) == 0.0  # both samples are older than the window now
    off = OverloadGuard(timeout=2.0, lag_factor=0)
    off.observe(5.0, now=0.0)
    assert off.stretch_at(0.0) == 0.0


def test_shedding_starts_once_most_lags_stayed_past_shed_lag_and_stops_once_they_fell():
    guard = OverloadGuard(timeout=2.0, shed_lag=0.5)  # shed_after 0.5 s; recover_lag 0.25 s, 1 s
    with capture_logs() as logs:
        for t, lag in ((-2.0, 0.1), (-1.9, 3.0), (-1.9, 3.0), (-1.8, 0.1), (-1.7, 0.1)):
            guard.observe(lag, now=t)  # one late wake (the probe's and the driver's) is a stall
        for step in range(10):  # 1 s of lags past shed_lag, one in three under it
            guard.observe(0.4 if step % 3 == 2 else 0.7, now=-1.0 + step / 10)
            if step < 7:
                assert guard.refusal() is None, step  # not for shed_after yet
        reason = guard.refusal()
        assert reason is not None
        assert reason.startswith(f"overloaded: {OVERLOADED}, event-loop lag 0.700 s")
        assert guard.refused == 1
        for step in range(10):  # low lags, one in three still at 0.3 (>= recover_lag)
            guard.observe(0.3 if step % 3 == 2 else 0.1, now=step / 10)
        assert guard.refusal() is not None  # still shedding
        for step in range(10, 17):
            guard.observe(0.3 if step % 3 == 2 else 0.1, now=step / 10)
        assert guard.refusal() is None  # most lags stayed low for a second: admitted again
        assert guard.refused == 2
    events = [(e["event"], e.get("refused")) for e in logs if "overload" in e["event"]]
    assert events == [
        ("heartbeat_monitor.overload_started", None),
        ("heartbeat_monitor.overload_ended", 2),
    ]
    assert guard.snapshot() == {
        "lag": 0.1,
        "max_lag": 3.0,
        "stretch": 0.0,
        "shedding": False,
        "refused": 2,
        "samples": 32,
        "max_wait": 0.0,
        "waits": 0,
    }


def test_the_defaults():
    guard = OverloadGuard(1.0)
    assert (guard.shed_lag, guard.recover_lag, guard.shed_after) == (0.25, 0.125, 0.5)
    assert guard.max_stretch == 5.0  # the timeout, at least 5 s
    assert OverloadGuard(30.0).max_stretch == 30.0
    assert guard.window == 1.0  # the timeout
    assert (guard.lag_factor, guard.probe_interval, guard.probe_hops) == (1.0, 0.1, 4)


def test_lagging_is_logged_at_a_bounded_pace():
    guard = OverloadGuard(timeout=2.0, shed_lag=1.0, log_every=5.0)  # logs above 0.5 s
    with capture_logs() as logs:
        for step in range(100):  # 10 s of 0.7 s lags, ten a second
            guard.observe(0.7, now=step / 10)
        guard.observe(0.1, now=10.0)
    lagging = [e for e in logs if e["event"] == "heartbeat_monitor.server_lagging"]
    assert len(lagging) == 2  # at 0 s and 5 s
    assert lagging[0]["lag"] == 0.7
    assert lagging[0]["stretch"] == 0.7
    assert all(e["log_level"] == "warning" for e in lagging)


def test_never_sheds_when_shed_lag_is_none():
    guard = OverloadGuard(timeout=1.0, shed_lag=None)
    guard.observe(100.0, now=0.0)
    assert not guard.shedding
    assert guard.refusal() is None


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"shed_lag": 0}, "shed_lag"),
        ({"shed_lag": 0.5, "recover_lag": 0.6}, "recover_lag"),
        ({"lag_factor": -1}, "lag_factor"),
        ({"lag_factor": True}, "lag_factor"),
        ({"max_stretch": float("inf")}, "max_stretch"),
        ({"window": 0}, "window"),
        ({"probe_interval": -0.1}, "probe_interval"),
        ({"recover_after": 0}, "recover_after"),
        ({"shed_after": -1}, "shed_after"),
        ({"probe_hops": -1}, "probe_hops"),
        ({"probe_hops": 1.5}, "probe_hops"),
    ],
)
def test_bad_settings_are_refused_clearly(options, match):
    with pytest.raises(ConfigurationError, match=match):
        OverloadGuard(timeout=1.0, **options)
