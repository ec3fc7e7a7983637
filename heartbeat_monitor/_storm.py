"""The storm brake and the grace window: when the tracker must not expire anyone.

Neither decides who is silent (the tracker does); both only hold expiries back.

* **Grace** (:meth:`StormBrake.grant_grace`): no peer is suspected or expired
  before clock time ``until``. The driver grants it after its own event loop
  stalled, so that beats which waited in socket buffers during the stall are not
  mistaken for silence.
* **Storm brake** (``share``): when more than ``share`` of the tracked peers (and
  more than 2) are suspects at once, the cause is more likely on our side (a
  partition, a stalled network) than a mass of peers dying together, so
  expiries are held. The brake releases when beats bring the share back down
  (``"recovered"``) or after ``max_hold`` seconds (``"max_hold"``); peers still
  silent then expire. After a ``max_hold`` release the brake re-arms only once
  the share of suspects has dropped below the threshold, so one long storm is
  not held twice.

Sans-I/O like the tracker: it reads no clock (times are passed in) and returns
events instead of telling anyone.
"""

from __future__ import annotations

import math
from typing import final

from ._events import StormEnded, StormStarted
from ._validate import fraction, optional_seconds

__all__ = ("StormBrake",)

#: A storm needs more suspects than this, whatever the share (two peers are no storm).
_MIN_SUSPECTS = 2


@final
class StormBrake:
    """Holds expiries during a grace window, and while a storm of suspects lasts."""

    __slots__ = ("_armed", "grace_until", "max_hold", "share", "since")

    def __init__(self, share: float | None = None, max_hold: float | None = None) -> None:
        #: Fraction of tracked peers that must be suspects for a storm (``None``: no brake).
        self.share = fraction("storm_share", share)
        #: Longest a storm holds expiries, in seconds (``None``: until it recovers).
        self.max_hold = optional_seconds("storm_max_hold", max_hold)
        #: When the current storm started (``None``: no storm).
        self.since: float | None = None
        #: Nobody is suspected or expired at or before this clock time.
        self.grace_until = -math.inf
        self._armed = True

    @property
    def holding(self) -> bool:
        """Whether a storm is holding expiries now."""
        return self.since is not None

    def grant_grace(self, until: float) -> None:
        """Suspect and expire nobody before ``until`` (a grace only ever grows)."""
        if until > self.grace_until:
            self.grace_until = until

    def _storm(self, suspects: int, peers: int) -> bool:
        assert self.share is not None
        return suspects > _MIN_SUSPECTS and suspects > self.share * peers

    def suspected(self, now: float, suspects: int, peers: int) -> StormStarted | None:
        """A peer was just suspected: engage if the suspects are now a storm."""
        if self.share is None or self.since is not None:
            return None
        storm = self._storm(suspects, peers)
        if not self._armed:
            self._armed = not storm
            return None
        if not storm:
            return None
        self.since = now
        return StormStarted(suspects=suspects, peers=peers, at=now)

    def release(self, now: float, suspects: int, peers: int) -> StormEnded | None:
        """While holding: release if the storm is over or has been held for ``max_hold``."""
        since = self.since
        if since is None:
            return None
        if not self._storm(suspects, peers):
            reason = "recovered"
        elif self.max_hold is not None and now - since > self.max_hold:
            reason = "max_hold"
        else:
            return None
        self.since = None
        self._armed = reason == "recovered"
        return StormEnded(reason=reason, suspects=suspects, peers=peers, at=now)
