"""Page visibility: a hidden browser page is held to ``hidden_timeout``, not ``interval * misses``.

Theory of operation
===================

Browsers throttle the timers of hidden pages (Chrome: to once a second, then
once a minute after five minutes hidden) and freeze background pages (mobile,
Chrome's tab freezing), so a page that is really there goes quiet and would be
declared gone. ``static/heartbeat.js`` tells the server instead::

    visibility {"state": "hidden"}     on visibilitychange / pagehide / freeze,
                                       and on every tick of its timer while hidden
    visibility {"state": "visible"}    when the page shows again (then a heartbeat)

Every report is traffic from the peer: a beat, rate-limited like a heartbeat
(:meth:`PeerHub.beat`). A ``hidden`` report also holds the peer's episode to
``hidden_timeout`` from that beat on (:meth:`PeerHub.retime`); if it expires so,
it ends with ``"heartbeat timeout (hidden)"``. The peer is back on the normal
timeout on a ``visible`` report or on its next regular heartbeat (the adapter
calls :meth:`Visibility.beat` for a beat of a held episode: one set lookup).

A peer cannot use ``hidden`` to escape expiry: each report only buys
``hidden_timeout`` from itself, so a page that stops sending anything (hung,
frozen for good, closed without a goodbye) is still expired.

With several connections in one episode (the tabs of one identity), the episode
is held only while every one of them last said ``hidden``: one visible tab that
hangs is a hung peer.

Each connection's presence meta carries ``"visibility": "hidden" | "visible"``
once it has reported (the module reports on connect): a change is a meta update
in the rooms' next ``presence_diff``. A meta replaced by ``hub.update_meta``
without it gets it back at the connection's next report.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final, Literal, final

import structlog

from heartbeat_monitor import ConfigurationError, Episode, Link, PeerHub, Reason

if TYPE_CHECKING:
    from ._adapter import SocketIOAdapter

__all__ = ("VISIBILITY_EVENT", "Visibility")

_logger = structlog.get_logger("heartbeat_monitor")

#: The event a page reports its visibility with: ``{"state": "hidden" | "visible"}``.
VISIBILITY_EVENT: Final = "visibility"
_STATES: Final = frozenset({"hidden", "visible"})
#: Forget ended links once the set of hidden ones has doubled since the last sweep.
_FIRST_SWEEP: Final = 64


@final
class Visibility:
    """The visibility reports of one hub's peers, and the timeout each earns.

    ``hidden_timeout=None`` turns it off: reports are then ordinary events.
    """

    __slots__ = ("_hidden", "_hub", "_sweep_at", "held", "hidden_timeout")

    def __init__(self, hub: PeerHub, hidden_timeout: float | None) -> None:
        self._hub = hub
        self.hidden_timeout = hidden_timeout
        #: The connections whose last report said ``hidden``.
        self._hidden: set[Link] = set()
        self._sweep_at = _FIRST_SWEEP
        #: The episodes now held to ``hidden_timeout`` (may hold ended ones until a sweep).
        self.held: set[Episode] = set()

    @classmethod
    def attach(cls, adapter: SocketIOAdapter) -> Visibility:
        """Listen for ``visibility`` events in the adapter's namespace (unless turned off)."""
        visibility = cls(adapter.hub, adapter.options.hidden_timeout)
        if visibility.hidden_timeout is not None:
            links = adapter._links
            namespace = adapter.namespace
            if VISIBILITY_EVENT in adapter.sio.handlers.get(namespace, {}):
                raise ConfigurationError(
                    f"the server already handles {VISIBILITY_EVENT!r} events in {namespace!r}: "
                    "the adapter reads them (pass hidden_timeout=None to leave them to you)"
                )

            def on_visibility(sid: str, *data: Any) -> None:
                link = links.get(sid)
                if link is not None and not link.ended:
                    visibility.report(link, data[0] if data else None)

            adapter.sio.on(VISIBILITY_EVENT, on_visibility, namespace=namespace)
        return visibility

    def state(self, link: Link) -> Literal["hidden", "visible"]:
        """What the connection last said (``"visible"`` until it says otherwise)."""
        return "hidden" if link in self._hidden else "visible"

    def report(self, link: Link, payload: object) -> None:
        """A ``visibility`` event from ``link``: a beat that may change its episode's timeout.

        A payload other than ``{"state": "hidden" | "visible"}`` is refused
        (``refused: malformed``), as any bad input is.
        """
        state = payload.get("state") if isinstance(payload, Mapping) else None
        hub = self._hub
        if state not in _STATES:
            expected = "{'state': 'hidden' | 'visible'}"
            hub.refuse(link, f"malformed: visibility must be {expected}, not {payload!r:.80}")
            return
        hub.beat(link)
        episode = link.episode
        if link.ended:
            return  # refused as a flood by that beat
        self._meta(link, state)
        if state == "visible":
            self._hidden.discard(link)
            if episode in self.held:
                self._release(link)
            return
        hidden = self._hidden
        if link not in hidden:
            hidden.add(link)
            if len(hidden) >= self._sweep_at:
                self._sweep()
        if episode not in self.held and all(other in hidden for other in episode.links):
            assert self.hidden_timeout is not None
            hub.retime(episode, self.hidden_timeout, expiry=Reason.HIDDEN_TIMEOUT)
            self.held.add(episode)
            _logger.debug(
                "heartbeat_monitor.socketio.peer_hidden",
                peer=episode.peer,
                hidden_timeout=self.hidden_timeout,
            )

    def beat(self, link: Link) -> None:
        """A regular heartbeat from a connection of a held episode: its page is visible."""
        self._hidden.discard(link)
        self._meta(link, "visible")
        self._release(link)

    def _meta(self, link: Link, state: str) -> None:
        """The connection's presence meta says ``visibility: state`` (if it did not already)."""
        meta = link.meta
        if meta.get("visibility") == state:
            return
        fields = {key: value for key, value in meta.items() if key != "conn"}
        fields["visibility"] = state
        try:
            self._hub.update_meta(link.episode.peer, fields, conn=link.conn)
        except ConfigurationError as exc:  # the user's fields leave no room for it
            _logger.warning(
                "heartbeat_monitor.socketio.visibility_meta_failed", peer=link.peer, error=str(exc)
            )

    def _release(self, link: Link) -> None:
        episode = link.episode
        self.held.discard(episode)
        if self._hub.retime(episode, None):
            _logger.debug("heartbeat_monitor.socketio.peer_visible", peer=episode.peer)

    def _sweep(self) -> None:
        """Forget connections and episodes that have ended (amortised: O(1) per report)."""
        self._hidden = {link for link in self._hidden if not link.ended}
        self.held = {episode for episode in self.held if episode.reason is None}
        self._sweep_at = max(_FIRST_SWEEP, 2 * len(self._hidden))
