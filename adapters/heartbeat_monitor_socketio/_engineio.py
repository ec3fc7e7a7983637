"""engine.io settings the adapter refuses or corrects.

Two things, both from python-engineio's ping/pong, which runs beside the
application's heartbeat:

* python-engineio truncates the ``pingInterval`` it advertises to whole seconds
  (:func:`check_engineio`);
* engine.io's own ``ping_timeout`` must not be the weak link
  (:func:`align_ping_timeout`). The heartbeat monitor is the liveness judge;
  engine.io's pings keep proxies and NATs open. Under overload a client's pong
  waits in the server's backlog just as its heartbeats do, and engine.io would
  drop it (``"ping timeout"``) while the monitor, which stretches deadlines by
  the server's own lag, still counts it alive. So the adapter raises
  ``ping_timeout`` to at least the heartbeat timeout plus the monitor's largest
  stretch (clients are told the same ``pingTimeout`` and wait ``pingInterval +
  pingTimeout`` for a ping, so they tolerate the same lag). With the defaults
  (5 s x 2 heartbeats, a stretch of at most the timeout) that is python-engineio's
  own default of 20 s.
"""

from __future__ import annotations

import math

import socketio
import structlog

from heartbeat_monitor import ConfigurationError, HeartbeatMonitor

__all__ = ("align_ping_timeout", "check_engineio", "ping_timeout_floor")

_logger = structlog.get_logger("heartbeat_monitor")


def check_engineio(sio: socketio.AsyncServer, *, fix: bool = False) -> None:
    """Refuse (or with ``fix``, correct) an engine.io ping interval clients would misread.

    python-engineio advertises ``pingInterval`` to clients as
    ``int(ping_interval + grace) * 1000`` ms: 0.3 s becomes 0 ms and 1.5 s
    becomes 1000 ms, so a JavaScript client (which waits ``pingInterval +
    pingTimeout`` for a ping) drops a healthy connection. With ``fix``, the
    grace period of the tuple form ``ping_interval=(interval, grace)`` is raised
    so that the advertised value is the next whole second (the server still
    pings every ``interval``; clients are told the longer, whole interval).
    """
    eio = sio.eio
    interval = float(eio.ping_interval)
    grace = float(getattr(eio, "ping_interval_grace_period", 0) or 0)
    total = interval + grace
    if not (math.isfinite(total) and interval > 0):
        raise ConfigurationError(f"engine.io ping_interval must be > 0 seconds, not {interval!r}")
    if total >= 1 and total == int(total):
        return
    whole = max(1, math.ceil(total))
    if not fix:
        raise ConfigurationError(
            f"engine.io ping_interval={interval!r} (grace {grace!r}) would be advertised to "
            f"clients as pingInterval={int(total) * 1000} ms (python-engineio truncates it to "
            "whole seconds), and JavaScript clients would drop healthy connections. Use a "
            f"whole number of seconds, or the tuple form ping_interval=({interval!r}, "
            f"{whole - interval!r}) so that {whole} s is advertised; the app-level heartbeat "
            "interval may still be a fraction of a second."
        )
    eio.ping_interval_grace_period = whole - interval
    _logger.warning(
        "heartbeat_monitor.socketio.engineio_corrected",
        ping_interval=interval,
        grace=eio.ping_interval_grace_period,
        advertised_ms=whole * 1000,
    )


def ping_timeout_floor(timeout: float, monitor: HeartbeatMonitor) -> float:
    """The shortest engine.io ping timeout that cannot drop a client the monitor keeps.

    The heartbeat ``timeout`` plus the most the monitor stretches a deadline
    under overload, rounded up to whole seconds: a live client's beat may wait
    that long in the server's backlog (less its interval) and still count, and
    its pong waits in the same backlog.
    """
    stretch = monitor.overload.max_stretch if monitor.overload.lag_factor else 0.0
    return float(math.ceil(timeout + stretch))


def align_ping_timeout(
    sio: socketio.AsyncServer, timeout: float, monitor: HeartbeatMonitor
) -> None:
    """Raise engine.io's ``ping_timeout`` to :func:`ping_timeout_floor` if it is shorter.

    A longer one is kept. Logged as ``heartbeat_monitor.socketio.ping_timeout_raised``.
    """
    eio = sio.eio
    floor = ping_timeout_floor(timeout, monitor)
    current = float(eio.ping_timeout)
    if current >= floor:
        return
    eio.ping_timeout = floor
    _logger.info(
        "heartbeat_monitor.socketio.ping_timeout_raised",
        ping_timeout=current,
        raised_to=floor,
        heartbeat_timeout=timeout,
        max_stretch=monitor.overload.max_stretch,
    )
