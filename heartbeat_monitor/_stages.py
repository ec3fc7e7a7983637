"""What becomes of a watched peer whose check comes due: its stages, in one place.

A watched peer is in one of these stages when its bucket comes due:

* **alive** — checked at its deadline (with the suspect stage on: at its
  suspect deadline, ``last + suspect * timeout``). Beat since: it is placed again
  at its new check, or leaves the watch if the sweeps cover it.
* **suspect** (the suspect stage on) — silent past its suspect deadline: a
  :class:`Suspected` event, then watched until its deadline. A beat from a
  suspect is a recovery (:meth:`Stages.recover`, a :class:`Recovered` event).
* **held** — silent past its deadline, but within a grace window, or while the
  storm brake holds (re-checked every quarter timeout): not expired yet.
* **gone** — silent past its deadline: an :class:`Expired` event; it leaves the
  table and the watch, exactly once.

Deadlines are compared with ``now`` less the driver's stretch; grace with ``now``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Hashable
from typing import final

from ._events import Event, Expired, Recovered, Suspected
from ._policy import PeerPolicies
from ._storm import StormBrake
from ._sweep import BeatTable
from ._validate import fraction
from ._wheel import SHARDS, Wheel

__all__ = ("Stages",)

#: Suspect fraction the storm brake turns on when no suspect stage was asked for.
_STORM_SUSPECT = 0.5


@final
class Stages:
    """The suspect stage, the storm brake and grace, and the check of due peers."""

    __slots__ = ("brake", "pending", "suspect", "suspects")

    def __init__(
        self, suspect: float | None, storm_share: float | None, storm_max_hold: float | None
    ) -> None:
        self.brake = StormBrake(storm_share, storm_max_hold)
        #: The suspect stage's fraction of the timeout (``None``: no suspect stage). The
        #: brake needs it, and turns it on (0.5) if not set: suspicion comes before expiry,
        #: so a storm is seen before anyone is expired by it.
        self.suspect = fraction("suspect", suspect)
        if self.brake.share is not None and self.suspect is None:
            self.suspect = _STORM_SUSPECT
        #: key -> when it was suspected, for the suspects.
        self.suspects: dict[Hashable, float] = {}
        #: Events raised outside a poll (recoveries), handed out by the next one.
        self.pending: list[Event] = []

    def recover(self, key: Hashable, now: float) -> bool:
        """A suspect beat (or was tracked again): ``True`` and a :class:`Recovered` if it was."""
        suspected_at = self.suspects.pop(key, None)
        if suspected_at is None:
            return False
        self.pending.append(Recovered(key=key, suspected_at=suspected_at, recovered_at=now))
        return True

    def release(self, now: float, peers: int, events: list[Event]) -> None:
        ended = self.brake.release(now, len(self.suspects), peers)
        if ended is not None:
            events.append(ended)

    def check(
        self,
        now: float,
        due: float,
        budget: float,
        stop_at: float,
        table: BeatTable,
        wheel: Wheel,
        policies: PeerPolicies,
        events: list[Event],
    ) -> None:
        """Check the watched peers whose bucket is due at ``due``, at most ``budget`` of them.

        ``due`` is ``now`` less the driver's stretch: deadlines are compared with it.
        ``stop_at`` is a thread CPU time (``time.thread_time``), looked at every 64.
        """
        cpu = time.thread_time
        place = wheel.place
        # Outside a sweep window the table is one dict (a window neither opens nor closes here).
        last_of = table.base.__getitem__ if table.gone is None else table.get
        shards, mask = wheel.shards, SHARDS - 1
        timeouts, histories = policies.timeouts, policies.histories
        suspects, suspect, brake = self.suspects, self.suspect, self.brake
        grace_until = brake.grace_until
        default_timeout = policies.timeout
        # A fresh default peer whose check deadline is at or after this leaves the watch.
        cover = table.cover()
        if cover is None:
            cover = math.inf
        examined = 0
        while budget > 0:
            bucket = wheel.due(due)
            if bucket is None:
                break
            tick = bucket.tick
            while budget > 0 and (entries := bucket.next_keys()):
                budget -= 1
                examined += 1
                if not examined & 63 and cpu() > stop_at:
                    budget = 0  # out of time: this entry and the rest wait for the next call
                    break
                key = entries.pop()
                watch = shards[hash(key) & mask]
                if watch.get(key) != tick:
                    continue  # stale: untracked, expired or placed elsewhere since
                last: float = last_of(key)  # type: ignore[assignment]
                own = True
                if histories and key in histories:
                    timeout = histories[key].timeout()
                elif timeouts and key in timeouts:
                    timeout = timeouts[key]
                else:
                    timeout, own = default_timeout, False
                deadline = last + timeout
                # The stage: alive (checked at its suspect deadline if that stage is on) or a
                # suspect (checked at its deadline); past it, held by grace or the brake, gone.
                alive = suspect is not None and key not in suspects
                check = last + timeout * suspect if alive else deadline  # type: ignore[operator]
                if due <= check:
                    if own or check < cover or key in suspects:
                        place(key, check)
                    else:
                        del watch[key]  # fresh, and the sweeps cover it again
                    continue
                if now <= grace_until:
                    place(key, grace_until)
                    continue
                if alive:
                    suspects[key] = now
                    events.append(
                        Suspected(key=key, last_beat=last, deadline=check, suspected_at=now)
                    )
                    started = brake.suspected(now, len(suspects), len(table))
                    if started is not None:
                        events.append(started)
                    if due <= deadline:
                        place(key, deadline)
                        continue
                if brake.holding:  # look again in a quarter timeout
                    place(key, now + max(default_timeout / 4, wheel.resolution))
                else:  # gone
                    table.drop(key)
                    del watch[key]
                    policies.forget(key)
                    if suspects:
                        suspects.pop(key, None)
                    events.append(
                        Expired(key=key, last_beat=last, deadline=deadline, expired_at=now)
                    )
            if not bucket.keys and not bucket.batches:
                wheel.current = None
