"""What the monitor tells: a log line per event, its event streams, its callbacks.

:class:`Dispatching` is the part of :class:`~heartbeat_monitor.HeartbeatMonitor`
that registers callbacks (``on_expire`` and the others) and, for every batch
of events the driver polls, logs each one (``heartbeat_monitor.peer_expired``
and so on), offers it to every event stream (``monitor.events()``) and runs
its callbacks on the monitor's one
:class:`~heartbeat_monitor.CallbackRunner`. The driver (``_monitor.py``) only
waits, polls and calls ``_dispatch``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from ._callbacks import CallbackRunner
from ._errors import ConfigurationError
from ._events import (
    Event,
    Expired,
    PeerEvent,
    Recovered,
    Stalled,
    StormEnded,
    StormStarted,
    Suspected,
)
from ._streams import EventStream
from ._tracker import LivenessTracker

__all__ = ("Dispatching", "ExpireCallback")

#: A callback run for each expiry: a plain function or an ``async def``.
ExpireCallback = Callable[[Expired], object] | Callable[[Expired], Awaitable[object]]
_Callback = Callable[[Any], object]

#: structlog event name and level for each kind of event.
_LOG: dict[type[Event], tuple[str, str]] = {
    Expired: ("heartbeat_monitor.peer_expired", "info"),
    Suspected: ("heartbeat_monitor.peer_suspected", "info"),
    Recovered: ("heartbeat_monitor.peer_recovered", "info"),
    StormStarted: ("heartbeat_monitor.storm_started", "warning"),
    StormEnded: ("heartbeat_monitor.storm_ended", "warning"),
    Stalled: ("heartbeat_monitor.stall_detected", "warning"),
}

_logger = structlog.get_logger("heartbeat_monitor")


class Dispatching:
    """Callbacks, event streams and log lines of a monitor (a base of HeartbeatMonitor)."""

    __slots__ = ()

    # Set by HeartbeatMonitor.__init__ (its slots).
    _callbacks: dict[type[Event], list[_Callback]]
    _streams: set[EventStream]
    _tracker: LivenessTracker
    runner: CallbackRunner
    loop_lag: float

    def _register(self, kinds: tuple[type[Event], ...], callback: _Callback) -> None:
        if not callable(callback):
            raise ConfigurationError(f"a callback must be callable, not {callback!r}")
        for kind in kinds:
            self._callbacks.setdefault(kind, []).append(callback)

    def on_expire(self, callback: ExpireCallback) -> ExpireCallback:
        """Register an expiry callback (plain or async); usable as a decorator."""
        self._register((Expired,), callback)
        return callback

    def on_suspect(self, callback: _Callback) -> _Callback:
        """Register a callback for :class:`Suspected` (needs ``suspect=`` or the brake)."""
        self._register((Suspected,), callback)
        return callback

    def on_recover(self, callback: _Callback) -> _Callback:
        """Register a callback for :class:`Recovered`."""
        self._register((Recovered,), callback)
        return callback

    def on_storm(self, callback: _Callback) -> _Callback:
        """Register a callback for :class:`StormStarted` and :class:`StormEnded`."""
        self._register((StormStarted, StormEnded), callback)
        return callback

    def on_stall(self, callback: _Callback) -> _Callback:
        """Register a callback for :class:`Stalled`."""
        self._register((Stalled,), callback)
        return callback

    def remove_callback(self, callback: _Callback) -> bool:
        """Unregister ``callback`` from every kind of event; ``False`` if it was not registered."""
        found = False
        for entries in self._callbacks.values():
            kept = [entry for entry in entries if entry != callback]
            found = found or len(kept) < len(entries)
            entries[:] = kept
        return found

    # -- dispatching ----------------------------------------------------------------------

    def _dispatch(self, events: list[Event]) -> None:
        # Bound once per batch: each call on structlog's lazy proxy builds a logger (~5 us).
        log = _logger.bind()
        for event in events:
            name, level = _LOG.get(type(event), ("heartbeat_monitor.event", "info"))
            if isinstance(event, Expired):
                stretch = self._tracker.stretch
                log.info(
                    name,
                    peer=event.key,
                    silent_for=round(event.expired_at - event.last_beat, 6),
                    late_by=round(event.late_by, 6),
                    # With a stretch, how late the driver itself woke: late_by less both is
                    # the resolution's part.
                    **(
                        {"stretch": round(stretch, 6), "loop_lag": round(self.loop_lag, 6)}
                        if stretch
                        else {}
                    ),
                )
            elif isinstance(event, PeerEvent):
                getattr(log, level)(name, peer=event.key)
            else:
                getattr(log, level)(name, **_fields(event))
        for stream in tuple(self._streams):
            for event in events:
                stream._offer(event)
        callbacks = self._callbacks
        if callbacks:
            call = self.runner.call
            for event in events:
                for callback in callbacks.get(type(event), ()):
                    call(callback, event)


def _fields(event: Event) -> dict[str, object]:
    return {name: getattr(event, name) for name in event.__dataclass_fields__}
