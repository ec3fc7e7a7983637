"""The adapter's options: one frozen dataclass, validated once."""

from __future__ import annotations

import math
from collections.abc import Callable, Collection, Hashable, Mapping
from dataclasses import dataclass
from typing import Any, Literal, final

from heartbeat_monitor import ConfigurationError

__all__ = ("AdapterOptions",)

_RESERVED = frozenset({"connect", "disconnect"})


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{name} must be a number of seconds, not {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ConfigurationError(f"{name} must be a finite number > 0, not {value!r}")
    return float(value)


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class AdapterOptions:
    """What :class:`SocketIOAdapter` takes besides the server, monitor and callbacks."""

    #: Seconds between a client's heartbeats.
    interval: float = 5.0
    #: Missed intervals before a client is gone (``timeout = interval * misses``).
    misses: float = 2
    #: The heartbeat event's name.
    event: str = "heartbeat"
    #: The namespace watched.
    namespace: str = "/"
    #: Whether every event of a client counts as a beat (not only ``event``).
    any_event: bool = False
    #: ``identify(sid, environ, auth)``: an authenticated peer id, or ``None`` for the sid.
    identify: Callable[[str, Mapping[str, Any], Any], Hashable | None] | None = None
    #: A room every connection joins on connect.
    room: str | None = None
    #: What the others are told: presence diffs (one per room per window), one ``peer_gone``
    #: per departure (N x M messages), both, or nothing.
    notify: Literal["presence", "peer_gone", "both", "none"] = "presence"
    #: Who hears ``peer_gone``: the rooms the peer was in, or the whole namespace.
    scope: Literal["rooms", "namespace"] = "rooms"
    #: Presence: the flush window and a dropped connection's grace (seconds), the watched
    #: rooms (``None``: every room), and ``presence_meta(sid, environ, auth)``: a
    #: connection's presence fields (a small dict; ``None``: none).
    diff_interval: float = 0.05
    leave_grace: float = 0.0
    presence_rooms: Collection[Hashable] | None = None
    presence_meta: Callable[[str, Mapping[str, Any], Any], Mapping[str, object] | None] | None = (
        None
    )
    #: Heartbeats closer together than this are dropped (default: ``interval / 10``).
    min_beat_gap: float | None = None
    #: Heartbeats a connection may send per second; a second window over it is a flood.
    max_rate: int | None = 20
    #: Largest frame a client may send (characters or bytes); ``None``: engine.io's limit.
    max_message_size: int | None = None
    #: Seconds an async ``on_gone`` callback may run (for a monitor the adapter creates).
    callback_timeout: float | None = 30.0
    #: python-engineio's ping interval: refuse a bad one, correct it, or leave it.
    engineio: Literal["check", "fix", "ignore"] = "check"
    #: How long a client whose page said ``hidden`` may stay silent (``None``: no such hold).
    hidden_timeout: float | None = 300.0

    @classmethod
    def build(cls, **options: Any) -> AdapterOptions:
        """Validate ``options`` (the adapter's keyword arguments) once."""
        try:
            built = cls(**options)
        except TypeError as exc:
            raise ConfigurationError(str(exc).replace("AdapterOptions.__init__()", "")) from None
        built._check()
        return built

    @property
    def timeout(self) -> float:
        """``interval * misses``: how long a client may stay silent."""
        return self.interval * self.misses

    def hub_options(self) -> dict[str, Any]:
        """The keyword arguments of the :class:`~heartbeat_monitor.PeerHub` the adapter makes."""
        return {
            "timeout": self.timeout,
            "max_rate": self.max_rate,
            "min_beat_gap": self.beat_gap,
            "notify": self.notify,
            "scope": "rooms" if self.scope == "rooms" else "all",
            "room": self.room,  # the adapter enters python-socketio's room of that name too
            "diff_interval": self.diff_interval,
            "leave_grace": self.leave_grace,
            "presence_rooms": self.presence_rooms,
        }

    @property
    def beat_gap(self) -> float:
        return self.interval / 10 if self.min_beat_gap is None else self.min_beat_gap

    def _check(self) -> None:
        _seconds("interval", self.interval)
        misses = self.misses
        if isinstance(misses, bool) or not isinstance(misses, int | float):
            raise ConfigurationError(f"misses must be a number of intervals, not {misses!r}")
        if not (math.isfinite(misses) and misses > 0):
            raise ConfigurationError(f"misses must be a number of intervals > 0, not {misses!r}")
        if not isinstance(self.event, str) or not self.event or self.event in _RESERVED:
            raise ConfigurationError(f"event must be a non-reserved event name, not {self.event!r}")
        if not isinstance(self.namespace, str) or not self.namespace.startswith("/"):
            raise ConfigurationError(f"namespace must start with '/', not {self.namespace!r}")
        if self.notify not in ("presence", "peer_gone", "both", "none"):
            raise ConfigurationError(
                f"notify must be 'presence', 'peer_gone', 'both' or 'none', not {self.notify!r}"
            )
        if self.scope not in ("rooms", "namespace"):
            raise ConfigurationError(f"scope must be 'rooms' or 'namespace', not {self.scope!r}")
        if self.presence_meta is not None and not callable(self.presence_meta):
            raise ConfigurationError(f"presence_meta must be callable, not {self.presence_meta!r}")
        if self.engineio not in ("check", "fix", "ignore"):
            raise ConfigurationError(
                f"engineio must be 'check', 'fix' or 'ignore', not {self.engineio!r}"
            )
        gap = self.beat_gap
        if isinstance(gap, bool) or not (math.isfinite(gap) and 0 <= gap < self.interval):
            raise ConfigurationError(
                f"min_beat_gap must be >= 0 and below the interval, not {self.min_beat_gap!r}"
            )
        for name in ("max_rate", "max_message_size"):
            value = getattr(self, name)
            if value is not None and (type(value) is not int or value < 1):
                raise ConfigurationError(f"{name} must be an int >= 1 or None, not {value!r}")
        if self.callback_timeout is not None:
            _seconds("callback_timeout", self.callback_timeout)
        if (
            self.hidden_timeout is not None
            and _seconds("hidden_timeout", self.hidden_timeout) < self.timeout
        ):
            raise ConfigurationError(
                f"hidden_timeout ({self.hidden_timeout!r} s) must not be shorter than "
                f"interval * misses ({self.timeout!r} s)"
            )
        if self.identify is not None and not callable(self.identify):
            raise ConfigurationError(f"identify must be callable, not {self.identify!r}")
