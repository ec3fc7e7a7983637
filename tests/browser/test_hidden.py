"""The hidden timeout on a ManualClock: the hub's ``retime`` and the visibility rules.

No real time and no sockets: the in-memory transport's peers, a monitor on a
manual clock, and :class:`Visibility` as the Socket.IO adapter uses it.
"""

from __future__ import annotations

from typing import Any

import pytest

from heartbeat_monitor import (
    ConfigurationError,
    HeartbeatMonitor,
    ManualClock,
    PeerGone,
    PeerHub,
    Reason,
)
from heartbeat_monitor.testing import MemoryClient, MemoryTransport
from heartbeat_monitor_socketio import SocketIOAdapter
from heartbeat_monitor_socketio._visibility import Visibility

pytestmark = pytest.mark.anyio

TIMEOUT = 1.0
HIDDEN = 10.0
RESOLUTION = 0.1


class World:
    def __init__(self) -> None:
        self.clock = ManualClock()
        self.monitor = HeartbeatMonitor(TIMEOUT, resolution=RESOLUTION, clock=self.clock)
        self.gone: list[PeerGone] = []
        self.hub = PeerHub(self.monitor, on_gone=self.gone.append, max_rate=20)
        self.transport = MemoryTransport()
        self.transport.hub = self.hub
        self.visibility = Visibility(self.hub, HIDDEN)

    def connect(self, peer: str, *, shared: bool = False) -> MemoryClient:
        return self.transport.connect(peer, shared=shared)

    def report(self, client: MemoryClient, state: Any) -> None:
        assert client.link is not None
        self.visibility.report(client.link, {"state": state})

    def beat(self, client: MemoryClient) -> None:
        """A regular heartbeat, as the adapter passes it on."""
        link = client.link
        assert link is not None
        if self.hub.beat(link) and link.episode in self.visibility.held:
            self.visibility.beat(link)

    async def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)
        await self.monitor.wait_idle()


async def test_hidden_peer_is_held_to_the_hidden_timeout_then_expires_once_with_its_reason():
    world = World()
    async with world.monitor:
        a = world.connect("a")
        await world.advance(0.5)
        world.report(a, "hidden")  # at t = 0.5: a beat, and the hidden timeout from it on
        assert world.visibility.state(a.link) == "hidden"  # type: ignore[arg-type]
        await world.advance(5 * TIMEOUT)
        assert "a" in world.hub
        assert world.gone == []
        await world.advance(HIDDEN - 5 * TIMEOUT)  # exactly at its deadline: never early
        assert "a" in world.hub
        await world.advance(2 * RESOLUTION)
        assert [(g.key, g.reason) for g in world.gone] == [("a", Reason.HIDDEN_TIMEOUT)]
        assert world.gone[0].expired
        assert world.gone[0].detail.startswith("silent for 10.")
        assert a.closed == "heartbeat timeout (hidden)"
        await world.advance(3 * HIDDEN)
        assert len(world.gone) == 1
        assert world.hub.gone == {Reason.HIDDEN_TIMEOUT: 1}


async def test_visible_report_or_next_regular_beat_restores_the_normal_timeout():
    world = World()
    async with world.monitor:
        a, b = world.connect("a"), world.connect("b")
        world.report(a, "hidden")
        world.report(b, "hidden")
        await world.advance(3 * TIMEOUT)
        world.report(a, "visible")  # back to interval * misses, from this report
        world.beat(b)  # a regular beat: its page is visible again
        assert world.visibility.held == set()
        await world.advance(TIMEOUT)
        assert world.gone == []
        await world.advance(2 * RESOLUTION)
        assert sorted((g.key, g.reason) for g in world.gone) == [
            ("a", Reason.HEARTBEAT_TIMEOUT),
            ("b", Reason.HEARTBEAT_TIMEOUT),
        ]


async def test_hidden_reports_are_beats_but_buy_only_the_hidden_timeout_each():
    world = World()
    async with world.monitor:
        a = world.connect("a")
        for _ in range(5):  # a hidden page whose throttled timer still runs: present
            world.report(a, "hidden")
            await world.advance(HIDDEN - RESOLUTION)
        assert world.gone == []
        await world.advance(2 * RESOLUTION)  # it stopped sending: the hidden timeout ends it
        assert [(g.key, g.reason) for g in world.gone] == [("a", Reason.HIDDEN_TIMEOUT)]


async def test_an_identity_is_held_only_while_every_connection_is_hidden():
    world = World()
    async with world.monitor:
        tab1 = world.connect("u", shared=True)
        world.connect("u", shared=True)  # a second tab, visible
        world.report(tab1, "hidden")
        assert world.visibility.held == set()  # tab2 is visible: a hung tab2 is a hung peer
        await world.advance(TIMEOUT + 2 * RESOLUTION)
        assert [(g.key, g.reason) for g in world.gone] == [("u", Reason.HEARTBEAT_TIMEOUT)]

        tab3 = world.connect("v", shared=True)
        tab4 = world.connect("v", shared=True)
        world.report(tab3, "hidden")
        world.report(tab4, "hidden")
        assert len(world.visibility.held) == 1
        await world.advance(3 * TIMEOUT)
        tab5 = world.connect("v", shared=True)  # a new tab opens and beats: visible
        world.beat(tab5)
        assert world.visibility.held == set()
        await world.advance(TIMEOUT + 2 * RESOLUTION)
        assert [(g.key, g.reason) for g in world.gone][1:] == [("v", Reason.HEARTBEAT_TIMEOUT)]


async def test_bad_reports_are_refused_and_a_flood_of_reports_is_a_flood():
    world = World()
    async with world.monitor:
        a, b, c = world.connect("a"), world.connect("b"), world.connect("c")
        assert a.link is not None
        world.visibility.report(a.link, "hidden")
        world.report(b, "prerender")
        assert a.closed is not None
        assert a.closed.startswith("refused: malformed: visibility must be")
        assert b.closed is not None
        assert "'prerender'" in b.closed
        assert world.hub.refused["malformed"] == 2
        assert sorted(g.reason for g in world.gone) == ["refused: malformed"] * 2
        for _ in range(21):
            world.report(c, "hidden")
        await world.advance(1.0)
        for _ in range(21):
            world.report(c, "visible")
        assert c.closed is not None
        assert c.closed.startswith("refused: flood")


async def test_ended_connections_are_forgotten():
    world = World()
    async with world.monitor:
        for round_ in range(3):
            clients = [world.connect(f"{round_}-{i}") for i in range(100)]
            for client in clients:
                world.report(client, "hidden")
            for client in clients:
                client.disconnect()
        # 300 connections said hidden and ended: the sweeps forgot most of them.
        assert len(world.visibility._hidden) < 150
        assert len(world.visibility.held) < 150


def test_hidden_timeout_options():
    import socketio

    sio = socketio.AsyncServer(async_mode="asgi")
    with pytest.raises(ConfigurationError, match="must not be shorter than interval"):
        SocketIOAdapter(sio, interval=5, misses=2, hidden_timeout=9)
    with pytest.raises(ConfigurationError, match="hidden_timeout must be a number"):
        SocketIOAdapter(sio, hidden_timeout="300")
    off = SocketIOAdapter(socketio.AsyncServer(async_mode="asgi"), hidden_timeout=None)
    assert "visibility" not in off.sio.handlers.get("/", {})
    taken = socketio.AsyncServer(async_mode="asgi")
    taken.on("visibility", lambda sid, data: None)
    with pytest.raises(ConfigurationError, match="already handles 'visibility'"):
        SocketIOAdapter(taken)
    assert SocketIOAdapter(socketio.AsyncServer(async_mode="asgi")).options.hidden_timeout == 300


async def test_presence_metas_carry_visibility():
    world = World()
    async with world.monitor:
        a = world.transport.connect("a", meta={"name": "ann"})
        assert a.link is not None
        world.hub.join(a.link, "lobby")
        conn = a.link.conn

        def metas() -> list[dict[str, object]]:
            return [dict(meta) for meta in world.hub.presence("lobby")["a"]]

        assert metas() == [{"conn": conn, "name": "ann"}]
        world.report(a, "visible")  # what the module says on connect
        assert metas() == [{"conn": conn, "name": "ann", "visibility": "visible"}]
        world.report(a, "hidden")
        assert metas() == [{"conn": conn, "name": "ann", "visibility": "hidden"}]
        world.beat(a)  # a regular heartbeat: visible again
        assert metas() == [{"conn": conn, "name": "ann", "visibility": "visible"}]
        world.hub.update_meta("a", {"name": "bob"})  # the application's fields, replaced
        world.report(a, "hidden")  # the next report puts it back
        assert metas() == [{"conn": conn, "name": "bob", "visibility": "hidden"}]


async def test_a_meta_with_no_room_left_is_logged_and_the_hidden_timeout_still_holds():
    from structlog.testing import capture_logs

    world = World()
    async with world.monitor:
        big = {"x": "y" * (1024 - 10)}  # just under the roster's limit on a meta (1 KiB)
        a = world.transport.connect("a", meta=big)
        with capture_logs() as logs:
            world.report(a, "hidden")
        assert "heartbeat_monitor.socketio.visibility_meta_failed" in [e["event"] for e in logs]
        assert a.link is not None
        assert a.link.episode in world.visibility.held
        await world.advance(5 * TIMEOUT)
        assert world.gone == []
