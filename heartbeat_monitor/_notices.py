"""How a departure reaches the others: gates, ``on_gone`` callbacks, then ``peer_gone``.

The hub ends an episode (:mod:`._hub`); :class:`Departures` publishes its one
:class:`~heartbeat_monitor.PeerGone`: async gates first (a cluster's "is it
still connected elsewhere?"), then the ``on_gone`` callbacks through the
monitor's callback runner, then — when the hub's ``notify`` says so — one
``peer_gone`` ``{"peer", "reason"}`` to the others through the audience: one
message per departure per recipient, the source article's simple event
(presence diffs are the batched alternative, see :mod:`._presence`).

:class:`LinkAudience` is the default audience: each connection's own ``send``.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Mapping
from typing import final

import structlog

from ._callbacks import CallbackRunner, is_async
from ._episode import Audience, Connection, Episode, Gate, GoneCallback, PeerGone
from ._errors import ConfigurationError

__all__ = ("Departures", "LinkAudience")

_logger = structlog.get_logger("heartbeat_monitor")


@final
class LinkAudience:
    """The default audience: each connection's ``send`` (``peer_gone`` goes as ``gone``)."""

    __slots__ = ("_episodes",)

    def __init__(self, episodes: Mapping[Hashable, Episode]) -> None:
        self._episodes = episodes

    def tell(
        self,
        event: str,
        payload: Mapping[str, object],
        *,
        rooms: Collection[Hashable] | None,
        exclude: Collection[Connection],
    ) -> None:
        message = {"type": "gone" if event == "peer_gone" else event, **payload}
        for episode in tuple(self._episodes.values()):
            for link in episode.links:
                if link.connection in exclude:
                    continue
                if rooms is not None and (link.rooms is None or link.rooms.isdisjoint(rooms)):
                    continue
                link.connection.send(message)

    def send(
        self, event: str, payload: Mapping[str, object], connections: Collection[Connection]
    ) -> None:
        message = {"type": event, **payload}  # one object: encode_shared encodes it once
        for connection in connections:
            connection.send(message)


@final
class Departures:
    """Publishes departures: gates, callbacks, and ``peer_gone`` when :attr:`told` is set."""

    __slots__ = ("_audience", "_callbacks", "_gates", "_runner", "notices", "told")

    def __init__(self, runner: CallbackRunner, audience: Callable[[], Audience]) -> None:
        self._runner = runner
        self._audience = audience
        self._callbacks: list[GoneCallback] = []
        self._gates: list[Gate] = []
        #: Whether the others get one ``peer_gone`` per departure.
        self.told = False
        #: ``peer_gone`` notices told so far (one per departure told, not per recipient).
        self.notices = 0

    def on_gone(self, callback: GoneCallback) -> GoneCallback:
        if not callable(callback):
            raise ConfigurationError(f"on_gone needs a callable, not {callback!r}")
        self._callbacks.append(callback)
        return callback

    def add_gate(self, gate: Gate) -> None:
        if not is_async(gate):
            raise ConfigurationError(f"a gate must be an async function, not {gate!r}")
        self._gates.append(gate)

    def publish(
        self,
        event: PeerGone,
        rooms: Collection[Hashable] | None,
        exclude: Collection[Connection],
        *,
        tell: bool,
        gated: bool = True,
    ) -> None:
        """Publish ``event`` (after the gates, in the runner, if there are any)."""
        if gated and self._gates:
            self._runner.spawn(self._publish_gated, event, rooms, exclude, tell)
        else:
            self._publish(event, rooms, exclude, tell=tell)

    async def _publish_gated(
        self,
        event: PeerGone,
        rooms: Collection[Hashable] | None,
        exclude: Collection[Connection],
        tell: bool,
    ) -> None:
        for gate in self._gates:
            if not await gate(event):
                return
        self._publish(event, rooms, exclude, tell=tell)

    def _publish(
        self,
        event: PeerGone,
        rooms: Collection[Hashable] | None,
        exclude: Collection[Connection],
        *,
        tell: bool,
    ) -> None:
        call = self._runner.call
        for callback in self._callbacks:
            call(callback, event)
        if not (tell and self.told) or (rooms is not None and not rooms):
            return
        try:
            self._audience().tell(
                "peer_gone",
                {"peer": event.key, "reason": event.reason},
                rooms=rooms,
                exclude=exclude,
            )
            self.notices += 1
        except Exception:
            _logger.exception("heartbeat_monitor.notify_failed", peer=event.key)
