"""Events: what the tracker and the monitor tell their callers.

Frozen, slotted dataclasses with keyword-only fields and one common base,
after h11's ``_events.py``.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

__all__ = ("Event", "Expired")


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Base class of every event about a peer."""

    #: The peer's key, as given to ``track``.
    key: Hashable


@dataclass(frozen=True, slots=True, kw_only=True)
class Expired(Event):
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
