"""engine.io settings the adapter refuses or corrects (python-engineio truncates pingInterval)."""

from __future__ import annotations

import math

import socketio
import structlog

from heartbeat_monitor import ConfigurationError

__all__ = ("check_engineio",)

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
