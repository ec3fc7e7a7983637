"""Presence against every client's own list: a hypothesis state machine on a ManualClock.

Random connections (several per identity), disconnects, drops (within and past
the leave grace, reconnecting or not), silence (expiry), meta updates,
presence_sync requests and clock moves. After every step with nothing left to
flush, every open client's list — its ``presence_state`` with each diff applied
in ``seq`` order, as ``static/presence.js`` does it — equals the server's
``presence(room)``; no diff ever joins a present peer or removes an absent one;
and the ``on_join`` / ``on_leave`` callbacks alternate for each peer.

The hub runs for real (its monitor in an event loop on a thread, through an
anyio blocking portal), on a ManualClock: each step is exact and instant.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio.from_thread
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from heartbeat_monitor import HeartbeatMonitor, ManualClock, PeerHub, PeerJoined, PeerLeft, Reason
from heartbeat_monitor.testing import MemoryClient, MemoryTransport

from ._view import View, server_view

PEERS = ("ann", "bob", "cat")
TIMEOUT = 1.0
WINDOW = 0.05


class PresenceVersusClients(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.grace = 0.0
        self.clock = ManualClock()
        self._portal_cm = anyio.from_thread.start_blocking_portal("asyncio")
        self.portal = self._portal_cm.__enter__()
        self.monitor = HeartbeatMonitor(TIMEOUT, resolution=0.01, clock=self.clock)
        self._monitor_cm = self.portal.wrap_async_context_manager(self.monitor)
        self._monitor_cm.__enter__()
        self.hub: PeerHub | None = None
        self.transport = MemoryTransport()
        self.clients: list[MemoryClient] = []
        self.silent: set[int] = set()
        #: client index -> when it dropped (a graced end: it stays present for the grace)
        self.dropped_at: dict[int, float] = {}
        self.callbacks: list[tuple[str, Any]] = []
        self.meta_version = 0

    @rule(grace=st.sampled_from([0.0, 0.3, 2.0]))
    @precondition(lambda self: self.hub is None)
    def start(self, grace: float) -> None:
        self.grace = grace
        self.hub = PeerHub(self.monitor, leave_grace=grace, max_rate=None)
        self.hub.on_join(lambda e: self.callbacks.append(("join", e)))
        self.hub.on_leave(lambda e: self.callbacks.append(("leave", e)))
        self.transport.hub = self.hub

    def _open(self) -> Iterator[tuple[int, MemoryClient]]:
        for index, client in enumerate(self.clients):
            if client.closed is None and client.link is not None:
                yield index, client

    @rule(peer=st.sampled_from(PEERS), name=st.sampled_from(["Ann", "Bo"]))
    @precondition(lambda self: self.hub is not None)
    def connect(self, peer: str, name: str) -> None:
        client = self.transport.connect(peer, shared=True, meta={"name": name})
        self.clients.append(client)
        assert client.link is not None
        for index in list(self.dropped_at):  # it resumed a held slot: no longer held apart
            dropped = self.clients[index].link
            if dropped is not None and dropped.conn == client.link.conn:
                del self.dropped_at[index]

    @rule(
        data=st.data(), reason=st.sampled_from([Reason.CLIENT_DISCONNECT, Reason.TRANSPORT_CLOSE])
    )
    @precondition(lambda self: self.hub is not None)
    def disconnect(self, data: st.DataObject, reason: str) -> None:
        open_ = list(self._open())
        if open_:
            index, client = data.draw(st.sampled_from(open_))
            client.disconnect(reason)
            self.dropped_at[index] = self.clock.now()

    @rule(data=st.data())
    @precondition(lambda self: self.hub is not None)
    def go_silent(self, data: st.DataObject) -> None:
        open_ = list(self._open())
        if open_:
            index, _ = data.draw(st.sampled_from(open_))
            self.silent.add(index)

    @rule(peer=st.sampled_from(PEERS))
    @precondition(lambda self: self.hub is not None)
    def update_meta(self, peer: str) -> None:
        assert self.hub is not None
        self.meta_version += 1
        self.hub.update_meta(peer, {"name": "Ann", "v": self.meta_version})

    @rule(data=st.data())
    @precondition(lambda self: self.hub is not None)
    def sync(self, data: st.DataObject) -> None:
        open_ = list(self._open())
        if open_:
            _, client = data.draw(st.sampled_from(open_))
            client.deliver(b'{"type":"presence_sync"}')

    @rule(seconds=st.sampled_from([WINDOW / 2, WINDOW, 0.25, 0.6, 1.5, 2.5]))
    @precondition(lambda self: self.hub is not None)
    def tick(self, seconds: float) -> None:
        for index, client in self._open():
            if index not in self.silent:
                client.beat()

        async def advance() -> None:
            self.clock.advance(seconds)
            await self.monitor.wait_idle()

        self.portal.call(advance)

    @invariant()
    def every_client_list_equals_the_server(self) -> None:
        hub = self.hub
        if hub is None:
            return
        expected = server_view(hub.presence("peers"))
        for _, client in self._open():
            view = View().feed_all(client.inbox)
            assert view.errors == [], view.errors
            if hub.roster.pending or view.peers is None:
                continue  # a change not yet flushed, or its first state still to come
            if view.gaps:
                continue  # it would ask again (never here: nothing is removed unseen)
            assert view.peers == expected, (client.peer, client.inbox)
            assert view.count == hub.roster.count("peers")

    @invariant()
    def the_grace_holds_dropped_peers_only(self) -> None:
        """Present: open connections and drops within the grace; never an expired peer."""
        hub = self.hub
        if hub is None or hub.roster.pending:
            return
        now = self.clock.now()
        open_ = {client.peer for _, client in self._open()}
        must = open_ | {
            self.clients[i].peer for i, t in self.dropped_at.items() if t + self.grace > now
        }
        may = open_ | {
            self.clients[i].peer
            for i, t in self.dropped_at.items()
            if t + self.grace + WINDOW > now and self.grace > 0
        }
        present = set(hub.presence("peers"))
        assert must <= present <= may, (must, present, may)

    @invariant()
    def callbacks_alternate_per_peer(self) -> None:
        present: dict[Any, bool] = {}
        for kind, event in self.callbacks:
            assert isinstance(event, PeerJoined if kind == "join" else PeerLeft)
            was = present.get(event.key, False)
            assert was != (kind == "join"), f"{event.key} {kind}s twice"
            present[event.key] = kind == "join"
        hub = self.hub
        if hub is not None and not hub.roster.pending:
            now = {peer for peer, here in present.items() if here}
            assert now == set(hub.presence("peers"))

    def teardown(self) -> None:
        try:
            self._monitor_cm.__exit__(None, None, None)
        finally:
            self._portal_cm.__exit__(None, None, None)


PresenceVersusClients.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPresenceVersusClients = PresenceVersusClients.TestCase
