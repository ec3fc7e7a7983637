"""heartbeat_monitor: know which peers are alive, exactly and cheaply.

A sans-I/O timing-wheel :class:`LivenessTracker`, the :class:`HeartbeatMonitor`
that drives it on anyio, and the clocks they read. Transport adapters
(Socket.IO, websockets, TCP, UDP) are separate packages built on these.
"""

from __future__ import annotations

from ._clock import Clock, ManualClock, MonotonicClock, VirtualClock
from ._errors import ConfigurationError, HeartbeatMonitorError, PeerError
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
from ._monitor import EventStream, ExpireCallback, HeartbeatMonitor
from ._policy import (
    FixedTimeout,
    History,
    MissedBeats,
    PhiAccrual,
    PhiHistory,
    Policy,
    StatefulPolicy,
)
from ._wheel import LivenessTracker

__all__ = (
    "Clock",
    "ConfigurationError",
    "Event",
    "EventStream",
    "ExpireCallback",
    "Expired",
    "FixedTimeout",
    "HeartbeatMonitor",
    "HeartbeatMonitorError",
    "History",
    "LivenessTracker",
    "ManualClock",
    "MissedBeats",
    "MonotonicClock",
    "PeerError",
    "PeerEvent",
    "PhiAccrual",
    "PhiHistory",
    "Policy",
    "Recovered",
    "Stalled",
    "StatefulPolicy",
    "StormEnded",
    "StormStarted",
    "Suspected",
    "VirtualClock",
)

__version__ = "0.1.0"
