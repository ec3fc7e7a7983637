"""heartbeat_monitor: know which peers are alive, exactly and cheaply.

A sans-I/O timing-wheel :class:`LivenessTracker`, the :class:`HeartbeatMonitor`
that drives it on anyio, and the clocks they read. Transport adapters
(Socket.IO, websockets, TCP, UDP) are separate packages built on these.
"""

from __future__ import annotations

from ._accept import AcceptBackoff
from ._callbacks import CallbackRunner
from ._clock import Clock, ManualClock, MonotonicClock, VirtualClock
from ._connection import (
    ENTRY_POINT_GROUP,
    ConnectionEnded,
    QueuedConnection,
    Transport,
    serve_connection,
)
from ._episode import (
    Audience,
    Connection,
    Episode,
    GoneCallback,
    Link,
    OpenCallback,
    PeerGone,
    PeerOpened,
    Reason,
)
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
from ._hub import Notify, PeerHub
from ._metrics import Metrics
from ._monitor import ExpireCallback, HeartbeatMonitor
from ._overload import OVERLOADED, OverloadGuard
from ._policy import (
    FixedTimeout,
    History,
    MissedBeats,
    PhiAccrual,
    PhiHistory,
    Policy,
    StatefulPolicy,
)
from ._presence import JoinCallback, LeaveCallback, Roster
from ._refusals import Refusals
from ._rooms import PeerJoined, PeerLeft, PresenceChange
from ._status import serve_status
from ._streams import EventStream
from ._tracker import LivenessTracker
from ._wire import (
    MAX_MESSAGE_SIZE,
    check_peer_id,
    decode_message,
    encode_message,
    encode_shared,
    parse_hello,
)

__all__ = (
    "ENTRY_POINT_GROUP",
    "MAX_MESSAGE_SIZE",
    "OVERLOADED",
    "AcceptBackoff",
    "Audience",
    "CallbackRunner",
    "Clock",
    "ConfigurationError",
    "Connection",
    "ConnectionEnded",
    "Episode",
    "Event",
    "EventStream",
    "ExpireCallback",
    "Expired",
    "FixedTimeout",
    "GoneCallback",
    "HeartbeatMonitor",
    "HeartbeatMonitorError",
    "History",
    "JoinCallback",
    "LeaveCallback",
    "Link",
    "LivenessTracker",
    "ManualClock",
    "Metrics",
    "MissedBeats",
    "MonotonicClock",
    "Notify",
    "OpenCallback",
    "OverloadGuard",
    "PeerError",
    "PeerEvent",
    "PeerGone",
    "PeerHub",
    "PeerJoined",
    "PeerLeft",
    "PeerOpened",
    "PhiAccrual",
    "PhiHistory",
    "Policy",
    "PresenceChange",
    "QueuedConnection",
    "Reason",
    "Recovered",
    "Refusals",
    "Roster",
    "Stalled",
    "StatefulPolicy",
    "StormEnded",
    "StormStarted",
    "Suspected",
    "Transport",
    "VirtualClock",
    "check_peer_id",
    "decode_message",
    "encode_message",
    "encode_shared",
    "parse_hello",
    "serve_connection",
    "serve_status",
)

__version__ = "0.1.0"
