"""The hub's state: its options, open episodes by peer, hooks and roster.

:class:`~._hub.PeerHub` adds the lifecycle (open, beat, close, refuse, end) to
this; everything here is what an application registers or reads.
"""

from __future__ import annotations

import abc
from collections import Counter
from collections.abc import Collection, Hashable
from typing import Literal

from ._episode import (
    Audience,
    Episode,
    Gate,
    GoneCallback,
    OpenCallback,
)
from ._errors import ConfigurationError
from ._events import Expired
from ._monitor import HeartbeatMonitor
from ._notices import Departures, LinkAudience
from ._presence import JoinCallback, LeaveCallback, Roster
from ._refusals import Refusals
from ._rooms import Meta
from ._wire import MAX_MESSAGE_SIZE

__all__ = ("HubState", "Notify")

#: What the others are told of: presence diffs, one ``peer_gone`` per departure, both, nothing.
Notify = Literal["presence", "peer_gone", "both", "none"]
_NOTIFY = ("presence", "peer_gone", "both", "none")


class HubState(abc.ABC):
    """The tables and hooks of a :class:`~._hub.PeerHub` (whose docstring gives the options)."""

    __slots__ = (
        "_clock",
        "_departures",
        "_episodes",
        "_notify",
        "_now",
        "_number",
        "_open_callbacks",
        "_runner",
        "_timeout",
        "audience",
        "beats",
        "gone",
        "max_rate",
        "max_size",
        "min_beat_gap",
        "monitor",
        "refused",
        "room",
        "roster",
        "scope",
    )

    def __init__(
        self,
        monitor: HeartbeatMonitor,
        *,
        timeout: float | None = None,
        max_rate: int | None = 100,
        min_beat_gap: float = 0.0,
        max_size: int = MAX_MESSAGE_SIZE,
        notify: Notify = "presence",
        scope: Literal["rooms", "all"] = "all",
        room: Hashable | None = "peers",
        diff_interval: float = 0.05,
        leave_grace: float = 0.0,
        presence_rooms: Collection[Hashable] | None = None,
        audience: Audience | None = None,
        on_gone: GoneCallback | None = None,
    ) -> None:
        if max_rate is not None and (type(max_rate) is not int or max_rate < 1):
            raise ConfigurationError(f"max_rate must be an int >= 1 or None, not {max_rate!r}")
        if not 0 <= min_beat_gap < monitor.tracker.timeout:
            raise ConfigurationError(
                f"min_beat_gap must be >= 0 and below the timeout, not {min_beat_gap!r}"
            )
        if scope not in ("rooms", "all"):
            raise ConfigurationError(f"scope must be 'rooms' or 'all', not {scope!r}")
        self.monitor = monitor
        self.max_rate = max_rate
        self.min_beat_gap = float(min_beat_gap)
        self.max_size = max_size
        self.scope = scope
        self.room = room
        self._episodes: dict[Hashable, Episode] = {}
        self.audience: Audience = LinkAudience(self._episodes) if audience is None else audience
        self._departures = Departures(monitor.runner, lambda: self.audience)
        #: Who is present in each room, with metas (see :class:`Roster`; public hooks there).
        self.roster = Roster(
            lambda: self.audience,
            monitor.clock,
            monitor.runner,
            diff_interval=diff_interval,
            leave_grace=leave_grace,
            rooms=presence_rooms,
        )
        self.notify = notify
        #: Refusals of bad input so far, by kind (``oversized``, ``malformed``, ``flood``, ...).
        self.refused = Refusals()
        #: Episodes ended so far, by reason.
        self.gone: Counter[str] = Counter()
        #: Beats passed to the monitor so far (a plain int: read in bulk by Metrics).
        self.beats = 0
        #: The timeout of this hub's peers (``None``: the monitor's).
        self._timeout = None if timeout == monitor.tracker.timeout else timeout
        self._clock = monitor.clock
        self._now = monitor.clock.now  # a C call on the default clock: read once per beat
        self._runner = monitor.runner
        self._number = 0
        self._open_callbacks: list[OpenCallback] = []
        if on_gone is not None:
            self.on_gone(on_gone)
        monitor.on_expire(self._expired)

    @property
    def notify(self) -> Notify:
        """What the others are told (settable: the roster follows)."""
        return self._notify

    @notify.setter
    def notify(self, notify: Notify) -> None:
        if notify not in _NOTIFY:
            raise ConfigurationError(f"notify must be one of {_NOTIFY}, not {notify!r}")
        self._notify = notify
        self.roster.tell = notify in ("presence", "both")
        self._departures.told = notify in ("peer_gone", "both")

    # -- registration ----------------------------------------------------------------------

    def on_gone(self, callback: GoneCallback) -> GoneCallback:
        """Run ``callback(PeerGone)`` for every departure (plain or async); a decorator too."""
        return self._departures.on_gone(callback)

    def on_open(self, callback: OpenCallback) -> OpenCallback:
        """Run ``callback(PeerOpened)`` for every new episode (plain or async)."""
        if not callable(callback):
            raise ConfigurationError(f"on_open needs a callable, not {callback!r}")
        self._open_callbacks.append(callback)
        return callback

    def on_join(self, callback: JoinCallback) -> JoinCallback:
        """Run ``callback(PeerJoined)`` for each presence join a room is told of."""
        return self.roster.on_join(callback)

    def on_leave(self, callback: LeaveCallback) -> LeaveCallback:
        """Run ``callback(PeerLeft)`` for each presence leave a room is told of."""
        return self.roster.on_leave(callback)

    def add_gate(self, gate: Gate) -> None:
        """Publish a departure only once ``await gate(event)`` is true (e.g. a cluster check).

        Gates run in the callback runner, in order; one that raises or says
        ``False`` keeps that departure from the callbacks and the others.
        """
        self._departures.add_gate(gate)

    def detach(self) -> None:
        """Stop receiving the monitor's expiries (a monitor shared with other code goes on)."""
        self.monitor.remove_callback(self._expired)
        self.roster.close()

    # -- reading ---------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self._episodes)

    def __contains__(self, peer: object) -> bool:
        return peer in self._episodes

    def episode(self, peer: Hashable) -> Episode | None:
        """The open episode of ``peer``, if any."""
        return self._episodes.get(peer)

    def episodes(self) -> list[Episode]:
        """A snapshot of the open episodes."""
        return list(self._episodes.values())

    def peers(self) -> list[Hashable]:
        """A snapshot of the peer ids with an open episode."""
        return list(self._episodes)

    def presence(self, room: Hashable) -> dict[Hashable, list[Meta]]:
        """``{peer_id: [meta, ...]}``: who is present in ``room`` now (see :class:`Roster`)."""
        return self.roster.presence(room)

    def rooms_of(self, episode: Episode) -> set[Hashable]:
        """The rooms any connection of ``episode`` is in."""
        rooms: set[Hashable] = set()
        for link in episode.links:
            if link.rooms:
                rooms |= link.rooms
        return rooms

    @abc.abstractmethod
    def _expired(self, event: Expired) -> None:
        """The monitor expired ``event.key``: the hub ends its episode."""
