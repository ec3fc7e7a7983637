"""Events: what the tracker and the monitor tell their callers.

Frozen, slotted dataclasses with keyword-only fields and one common base,
after h11's ``_events.py``. Events about one peer derive from :class:`PeerEvent`;
the others (a storm, a stall of the event loop) are about the monitor itself.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

__all__ = (
    "Event",
    "Expired",
    "PeerEvent",
    "Recovered",
    "Stalled",
    "StormEnded",
    "StormStarted",
    "Suspected",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base class of every event."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PeerEvent(Event):
    """Base class of the events about one peer."""

    #: The peer's key, as given to ``track``.
    key: Hashable


@dataclass(frozen=True, slots=True, kw_only=True)
class Expired(PeerEvent):
    """A peer stayed silent past its deadline and is no longer tracked."""

    #: Clock time of the peer's last beat (or of ``track``).
    last_beat: float
    #: ``last_beat`` + the peer's timeout; the peer expired strictly after it.
    deadline: float
    #: Clock time at which the expiry was declared (``> deadline``).
    expired_at: float

    @property
    def late_by(self) -> float:
        """How long after the deadline the expiry was declared."""
        return self.expired_at - self.deadline


@dataclass(frozen=True, slots=True, kw_only=True)
class Suspected(PeerEvent):
    """A peer went silent past its suspect deadline (the first stage; it is still tracked)."""

    last_beat: float
    #: ``last_beat`` + the peer's suspect time; the peer was suspected strictly after it.
    deadline: float
    suspected_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Recovered(PeerEvent):
    """A suspected peer beat again before it expired."""

    #: When it had been suspected, and when it beat again.
    suspected_at: float
    recovered_at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class StormStarted(Event):
    """Too many peers went silent at once: expiries are held (the storm brake engaged)."""

    #: Peers silent past their suspect deadline, and peers tracked, when it engaged.
    suspects: int
    peers: int
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class StormEnded(Event):
    """The storm brake released: ``"recovered"`` (beats returned) or ``"max_hold"``."""

    reason: str
    suspects: int
    peers: int
    at: float


@dataclass(frozen=True, slots=True, kw_only=True)
class Stalled(Event):
    """The driver found its own event loop stalled and granted every peer a grace window."""

    #: How late the driver woke, in seconds.
    lag: float
    #: No peer expires before this clock time (unless it beats and then goes silent again).
    grace_until: float
    at: float
