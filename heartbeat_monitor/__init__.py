"""heartbeat_monitor: know which peers are alive, exactly and cheaply.

A sans-I/O timing-wheel :class:`LivenessTracker`, the :class:`HeartbeatMonitor`
that drives it on anyio, and the clocks they read. Transport adapters
(Socket.IO, websockets, TCP, UDP) are separate packages built on these.
"""

from __future__ import annotations

from ._adapter import (
    Connection,
    GoneCallback,
    MemoryClient,
    MemoryTransport,
    PeerGone,
    PeerHub,
    QueuedConnection,
    Session,
    Transport,
)
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
from ._tracker import LivenessTracker

__all__ = (
    "Clock",
    "ConfigurationError",
    "Connection",
    "Event",
    "EventStream",
    "ExpireCallback",
    "Expired",
    "FixedTimeout",
    "GoneCallback",
    "HeartbeatMonitor",
    "HeartbeatMonitorError",
    "History",
    "LivenessTracker",
    "ManualClock",
    "MemoryClient",
    "MemoryTransport",
    "MissedBeats",
    "MonotonicClock",
    "PeerError",
    "PeerEvent",
    "PeerGone",
    "PeerHub",
    "PhiAccrual",
    "PhiHistory",
    "Policy",
    "QueuedConnection",
    "Recovered",
    "Session",
    "Stalled",
    "StatefulPolicy",
    "StormEnded",
    "StormStarted",
    "Suspected",
    "Transport",
    "VirtualClock",
)

__version__ = "0.1.0"
