"""Presence on the hub, over the in-memory transport, on a ManualClock: exact and instant."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import pytest

from heartbeat_monitor import (
    ConfigurationError,
    HeartbeatMonitor,
    Link,
    ManualClock,
    PeerHub,
    PeerJoined,
    PeerLeft,
    PresenceChange,
    Reason,
)
from heartbeat_monitor.testing import MemoryClient, MemoryTransport

from ._view import View, server_view

pytestmark = pytest.mark.anyio

WINDOW = 0.05


class Setup:
    def __init__(self, clock: ManualClock, monitor: HeartbeatMonitor, hub: PeerHub) -> None:
        self.clock = clock
        self.monitor = monitor
        self.hub = hub
        self.transport = MemoryTransport()
        self.transport.hub = hub

    def connect(self, peer: str, **options: Any) -> MemoryClient:
        return self.transport.connect(peer, **options)

    async def advance(self, seconds: float = WINDOW) -> None:
        self.clock.advance(seconds)
        await self.monitor.wait_idle()


@asynccontextmanager
async def running(timeout: float = 1.0, **hub_options: Any) -> AsyncIterator[Setup]:  # noqa: ASYNC109 -- the peers' timeout
    clock = ManualClock()
    async with HeartbeatMonitor(timeout, resolution=0.01, clock=clock) as monitor:
        yield Setup(clock, monitor, PeerHub(monitor, **hub_options))


def conn(client: MemoryClient) -> str:
    assert client.link is not None
    return client.link.conn


def link(client: MemoryClient) -> Link:
    assert client.link is not None
    return client.link


def states(client: MemoryClient) -> list[Mapping[str, Any]]:
    return [m for m in client.inbox if m["type"] == "presence_state"]


def presence_messages(client: MemoryClient) -> list[Mapping[str, Any]]:
    return [m for m in client.inbox if str(m["type"]).startswith("presence")]


def diffs(client: MemoryClient) -> list[Mapping[str, Any]]:
    return [m for m in client.inbox if m["type"] == "presence_diff"]


async def test_state_on_join_then_one_diff_per_window_for_a_burst():
    async with running() as s:
        a = s.connect("a")
        assert presence_messages(a) == []  # the state comes with the next flush
        await s.advance()
        state = states(a)
        assert len(state) == 1
        assert state[0]["seq"] == 1
        assert state[0]["peers"] == {"a": {"metas": [{"conn": conn(a)}]}}
        assert state[0]["count"] == {"peers": 1, "connections": 1}
        burst = [s.connect(name) for name in "bcdefg"]
        await s.advance(WINDOW / 2)
        assert len(diffs(a)) == 1  # still the first window of the burst
        await s.advance(WINDOW / 2)
        assert [d["seq"] for d in diffs(a)] == [1, 2]
        assert sorted(diffs(a)[1]["joins"]) == list("bcdefg")
        assert diffs(a)[1]["count"] == {"peers": 7, "connections": 7}
        for client in (a, *burst):
            view = View().feed_all(client.inbox)
            assert view.errors == []
            assert view.peers == server_view(s.hub.presence("peers"))
        await s.advance(1.0)  # nothing changed: nothing is sent
        assert len(diffs(a)) == 2


async def test_a_leave_storm_is_one_diff_with_every_leave_and_its_reason():
    async with running() as s:
        clients = {name: s.connect(name) for name in "abcdefghij"}
        await s.advance()
        for name in "bcdef":
            clients[name].disconnect()
        clients["g"].disconnect(Reason.TRANSPORT_CLOSE)
        await s.advance()
        (storm,) = diffs(clients["a"])[1:]
        assert storm["leaves"] == {
            **{
                name: {"metas": [{"conn": conn(clients[name])}], "reason": "client disconnect"}
                for name in "bcdef"
            },
            "g": {"metas": [{"conn": conn(clients["g"])}], "reason": "transport close"},
        }
        assert storm["joins"] == {}
        assert storm["updates"] == {}
        assert storm["count"] == {"peers": 4, "connections": 4}
        assert set(s.hub.presence("peers")) == {"a", "h", "i", "j"}


async def test_a_join_and_leave_inside_one_window_shows_nothing():
    async with running() as s:
        a = s.connect("a")
        await s.advance()
        s.connect("flicker").disconnect()
        await s.advance(1.0)
        assert len(diffs(a)) == 1


async def test_several_connections_of_one_identity_join_once_and_leave_once():
    async with running() as s:
        watcher = s.connect("w")
        tab1 = s.connect("u", shared=True, meta={"name": "Ann"})
        await s.advance()
        tab2 = s.connect("u", shared=True, meta={"name": "Ann"})
        await s.advance()
        tab1.disconnect()
        await s.advance()
        tab2.disconnect()
        await s.advance()
        first, second, third, fourth = diffs(watcher)
        assert list(first["joins"]) == ["w", "u"]
        assert second["joins"] == {}
        assert list(second["updates"]) == ["u"]
        assert [m["conn"] for m in second["updates"]["u"]["metas"]] == [
            conn(tab1),
            conn(tab2),
        ]
        assert second["count"] == {"peers": 2, "connections": 3}
        assert third["leaves"] == {}
        assert third["updates"]["u"]["metas"] == [{"conn": conn(tab2), "name": "Ann"}]
        assert list(fourth["leaves"]) == ["u"]
        assert fourth["leaves"]["u"]["metas"] == [{"conn": conn(tab2), "name": "Ann"}]
        view = View().feed_all(watcher.inbox)
        assert view.errors == []
        assert view.left == [("u", "client disconnect")]
        assert view.joined == []  # both were in its first state


async def test_leave_grace_a_reconnect_in_time_shows_nothing_at_all():
    async with running(timeout=60, leave_grace=3.0) as s:
        watcher = s.connect("w")
        first = s.connect("u", shared=True, meta={"name": "Ann"})
        await s.advance()
        before = list(watcher.inbox)
        held = conn(first)
        first.disconnect(Reason.TRANSPORT_CLOSE)
        await s.advance(2.9)
        assert "u" in s.hub.presence("peers")  # held
        again = s.connect("u", shared=True, meta={"name": "Ann"})
        assert conn(again) == held  # it resumed the held slot
        await s.advance(5.0)
        assert watcher.inbox == before  # no leave, no join, no update
        assert s.hub.presence("peers")["u"] == [{"conn": held, "name": "Ann"}]
        view = View().feed_all(again.inbox)
        assert view.peers == server_view(s.hub.presence("peers"))


async def test_leave_grace_past_it_the_leave_comes_once_with_the_drop_reason():
    async with running(timeout=60, leave_grace=3.0) as s:
        watcher = s.connect("w")
        first = s.connect("u", shared=True)
        await s.advance()
        first.disconnect(Reason.TRANSPORT_ERROR)
        await s.advance(2.9)
        assert len(diffs(watcher)) == 1
        await s.advance(0.1)
        assert diffs(watcher)[-1]["leaves"] == {
            "u": {"metas": [{"conn": conn(first)}], "reason": "transport error"}
        }
        late = s.connect("u", shared=True)  # too late: a new join
        await s.advance()
        assert list(diffs(watcher)[-1]["joins"]) == ["u"]
        assert conn(late) != conn(first)
        assert View().feed_all(watcher.inbox).errors == []


async def test_no_grace_for_an_expired_a_refused_or_an_ended_peer():
    async with running(leave_grace=3.0) as s:
        watcher = s.connect("w")
        s.connect("silent")
        refused = s.connect("bad")
        s.connect("kicked")
        await s.advance()
        refused.deliver(b"not json")
        s.hub.end("kicked")
        for _ in range(12):
            assert watcher.beat()
            await s.advance(0.1)
        leaves = {
            peer: entry["reason"]
            for diff in diffs(watcher)
            for peer, entry in diff["leaves"].items()
        }
        assert leaves == {
            "bad": "refused: malformed",
            "kicked": "server disconnect",
            "silent": "heartbeat timeout",
        }
        assert list(s.hub.presence("peers")) == ["w"]


async def test_update_meta_shows_in_the_next_diff_and_bad_meta_is_a_clear_error():
    async with running() as s:
        watcher = s.connect("w")
        s.connect("u", meta={"status": "online"})
        await s.advance()
        assert s.hub.update_meta("u", {"status": "away"})
        assert not s.hub.update_meta("nobody", {"status": "away"})
        await s.advance()
        (update,) = [d["updates"] for d in diffs(watcher) if d["updates"]]
        assert update["u"]["metas"][0]["status"] == "away"
        assert s.hub.presence("peers")["u"][0]["status"] == "away"
        for bad in ({"conn": "x"}, {1: "x"}, {"x": object()}, {"x": "y" * 5000}, ["x"]):
            with pytest.raises(ConfigurationError):
                s.hub.update_meta("u", bad)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError):
            s.connect("v", meta={"conn": "mine"})
        assert "v" not in s.hub  # refused before anything changed


async def test_presence_sync_gives_a_fresh_state_and_a_bad_room_is_refused():
    async with running() as s:
        a = s.connect("a")
        s.connect("b")
        await s.advance()
        assert a.deliver(b'{"type":"presence_sync"}')
        assert a.deliver(b'{"type":"presence_sync","room":"elsewhere"}')  # not its room: nothing
        await s.advance()
        fresh = states(a)
        assert len(fresh) == 2
        assert fresh[1]["seq"] == fresh[0]["seq"] == 1
        assert not a.deliver(b'{"type":"presence_sync","room":["x"]}')
        assert a.closed == "refused: wrong type: 'room' must be a string, got list"


async def test_on_join_and_on_leave_run_as_the_rooms_are_told():
    async with running() as s:
        joined: list[PeerJoined] = []
        left: list[PeerLeft] = []
        s.hub.on_join(joined.append)

        @s.hub.on_leave
        async def leave(event: PeerLeft) -> None:
            left.append(event)

        a = s.connect("a", meta={"n": 1})
        s.connect("ghost").disconnect()  # inside the window: never told, no callback
        assert joined == []
        await s.advance()
        assert [(e.key, e.room, e.metas) for e in joined] == [
            ("a", "peers", ({"conn": conn(a), "n": 1},))
        ]
        a.disconnect()
        await s.advance()
        assert [(e.key, e.reason) for e in left] == [("a", "client disconnect")]


async def test_only_watched_rooms_have_presence():
    async with running(presence_rooms={"lobby"}) as s:
        a = s.connect("a")
        await s.advance()
        assert presence_messages(a) == []
        assert s.hub.presence("peers") == {}
        s.hub.join(link(a), "lobby")
        await s.advance()
        assert [m["type"] for m in a.inbox] == ["presence_diff", "presence_state"]
        s.hub.leave(link(a), "lobby")
        await s.advance()
        assert diffs(a)[-1]["leaves"] == {}  # it no longer hears the room
        assert s.hub.presence("lobby") == {}


async def test_peer_gone_mode_tells_no_presence_but_keeps_the_python_api():
    async with running(notify="peer_gone") as s:
        a = s.connect("a")
        b = s.connect("b")
        await s.advance()
        b.disconnect()
        await s.advance()
        assert a.inbox == [{"type": "gone", "peer": "b", "reason": "client disconnect"}]
        assert list(s.hub.presence("peers")) == ["a"]
        both = PeerHub(s.monitor, notify="both")
        assert both.roster.tell
        assert both.notify == "both"
        both.detach()


class Other:
    """A connection of another transport on the same hub (it stays when memory closes)."""

    transport = "other"

    def __init__(self) -> None:
        self.inbox: list[Mapping[str, Any]] = []

    def send(self, message: Mapping[str, object]) -> None:
        self.inbox.append(message)

    def close(self, reason: str) -> None:
        pass


async def test_a_silent_shutdown_leaves_a_gap_so_a_remaining_client_asks_again():
    async with running() as s:
        other = Other()
        link = s.hub.open(other, "o")
        assert link is not None
        for name in "abc":
            s.connect(name)
        await s.advance()
        s.hub.close_all(transport="memory")  # not told: everyone of that transport is leaving
        s.connect("d")
        await s.advance()
        view = View().feed_all(other.inbox)
        assert view.gaps == 1  # the next diff does not follow: the client must ask again
        s.hub.sync(link)
        await s.advance()
        view = View().feed_all(other.inbox)
        assert view.peers == server_view(s.hub.presence("peers"))
        assert set(view.peers) == {"o", "d"}


async def test_cluster_hooks_see_local_changes_and_add_remote_connections():
    async with running() as s:
        changes: list[PresenceChange] = []
        s.hub.roster.subscribe(changes.append)
        a = s.connect("a", meta={"k": 1})
        s.hub.roster.put("peers", "remote", {"conn": "node-b.1", "k": 2})
        await s.advance()
        assert [(c.kind, c.peer) for c in changes] == [("put", "a")]
        assert list(s.hub.roster.local()) == [("peers", "a", {"conn": conn(a), "k": 1})]
        s.hub.roster.partial = True
        assert a.deliver(b'{"type":"presence_sync"}')
        await s.advance()
        state = states(a)[-1]
        assert state["partial"] is True
        assert sorted(state["peers"]) == ["a", "remote"]
        assert s.hub.roster.discard("peers", "remote", "node-b.1", Reason.NODE_GONE)
        await s.advance()
        assert diffs(a)[-1]["leaves"]["remote"]["reason"] == "node gone"
        with pytest.raises(ConfigurationError):
            s.hub.roster.put("peers", "x", {"no": "conn"})


async def test_options_are_checked():
    monitor = HeartbeatMonitor(1.0, clock=ManualClock())
    for options in (
        {"diff_interval": 0},
        {"diff_interval": True},
        {"leave_grace": -1},
        {"notify": "everyone"},
    ):
        with pytest.raises(ConfigurationError):
            PeerHub(monitor, **options)


async def test_a_flush_that_told_many_stretches_the_next_window():
    async with running(timeout=60) as s:
        crowd = [s.connect(f"p{i}") for i in range(375)]
        await s.advance()
        # one diff to 375 and 375 states: 750 told, at most 5,000 a second: 150 ms
        assert s.hub.roster.window == pytest.approx(3 * WINDOW)
        crowd[0].disconnect()
        await s.advance(2 * WINDOW)
        assert len(diffs(crowd[1])) == 1  # not yet: the window is stretched
        await s.advance(WINDOW)
        assert len(diffs(crowd[1])) == 2
        assert s.hub.roster.window == pytest.approx(374 / 5000)


async def test_a_stretched_window_is_a_rate_not_a_delay_after_a_quiet_spell():
    """The stretch spaces flushes (at most 5,000 told a second); a change long after the
    last flush is told one ``diff_interval`` after it, not a stretched window after it."""
    async with running(timeout=60) as s:
        crowd = [s.connect(f"p{i}") for i in range(375)]
        await s.advance()
        assert s.hub.roster.window == pytest.approx(3 * WINDOW)  # 750 told
        await s.advance(4 * WINDOW)  # quiet: longer than the stretched window
        crowd[0].disconnect()
        await s.advance(WINDOW)
        assert [list(d["leaves"]) for d in diffs(crowd[1])[1:]] == [["p0"]]
        crowd[1].disconnect()  # right after that flush: the stretch spaces the next one
        await s.advance(WINDOW)
        assert len(diffs(crowd[2])) == 2
        await s.advance(WINDOW)
        assert len(diffs(crowd[2])) == 3
