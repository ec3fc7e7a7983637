"""Presence with real python-socketio clients against a real server on loopback.

What each client holds (its ``presence_state`` with every diff applied in
``seq`` order) is compared with the server's ``presence(room)``; batching is
checked on the server's own clock: joins and leaves are told at flushes at
least ``diff_interval`` apart, whatever the storm.
"""

from __future__ import annotations

import itertools
from typing import Any

import anyio
import pytest

from heartbeat_monitor import PeerLeft, Reason
from tests.socketio.conftest import RawClient

from .conftest import Serve, peers_of

pytestmark = pytest.mark.anyio

WINDOW = 0.05


def identify(sid: str, environ: Any, auth: Any) -> str | None:
    return auth.get("user") if isinstance(auth, dict) else None


def meta(sid: str, environ: Any, auth: Any) -> dict[str, object] | None:
    return {"name": auth["name"]} if isinstance(auth, dict) and "name" in auth else None


def assert_windows(flushes: list[float], window: float = WINDOW) -> None:
    gaps = [b - a for a, b in itertools.pairwise(flushes)]
    assert all(gap >= window - 1e-9 for gap in gaps), gaps


async def test_state_on_join_with_meta_and_counts(serve: Serve) -> None:
    live = await serve(presence_meta=meta)
    a = await live.client(auth={"name": "Ann"})
    view = await a.wait_for(lambda v: v.peers is not None)
    assert view.peers is not None
    assert view.peers == {a.sid: [{"conn": view.peers[a.sid][0]["conn"], "name": "Ann"}]}
    assert view.count == {"peers": 1, "connections": 1}
    b = await live.client(auth={"name": "Bob"})
    await live.settled(a, b)
    assert a.view.count == b.view.count == {"peers": 2, "connections": 2}
    assert [m["name"] for m in (a.view.peers or {})[b.sid]] == ["Bob"]
    assert live.hub.update_meta(b.sid, {"name": "Bobby"})
    await a.wait_for(lambda v: (v.peers or {})[b.sid][0].get("name") == "Bobby")
    await live.settled(a, b)
    assert a.view.errors == []
    assert b.view.errors == []


async def test_a_join_storm_is_told_in_windows(serve: Serve) -> None:
    live = await serve()
    observer = await live.client()
    await observer.wait_for(lambda v: v.peers is not None)
    async with anyio.create_task_group() as task_group:
        for _ in range(30):
            task_group.start_soon(live.client)
    await live.settled(*live.clients)
    assert len(observer.view.peers or ()) == 31
    assert observer.view.gaps == 0
    assert observer.view.errors == []
    seqs = [seq for seq, _ in observer.diffs]
    assert seqs == list(range(1, len(seqs) + 1))  # one numbered diff per flush, none missed
    assert_windows(live.flushes())
    for client in live.clients:
        assert client.view.count == {"peers": 31, "connections": 31}


async def test_a_leave_storm_is_told_in_windows_with_every_reason(serve: Serve) -> None:
    live = await serve()
    stayers = [await live.client() for _ in range(5)]
    leavers = [await live.client() for _ in range(15)]
    await live.settled(*live.clients)
    gone = {client.sid for client in leavers}
    async with anyio.create_task_group() as task_group:
        for client in leavers:
            task_group.start_soon(client.close)
    await stayers[0].wait_for(lambda v: peers_of(v).isdisjoint(gone))
    await live.settled(*stayers)
    for client in stayers:
        assert peers_of(client.view).isdisjoint(gone)
        assert sorted(peer for peer, _ in client.view.left) == sorted(gone)
        assert {reason for _, reason in client.view.left} <= Reason.DROPPED
        assert client.view.count == {"peers": 5, "connections": 5}
        assert client.view.errors == []
        assert client.view.gaps == 0
    assert_windows(live.flushes())
    leaves = [e for _, e in live.told if isinstance(e, PeerLeft)]
    assert sorted(str(e.key) for e in leaves) == sorted(gone)  # each told once


async def test_grace_a_reconnect_in_time_shows_nothing(serve: Serve) -> None:
    grace = 1.0
    live = await serve(identify=identify, presence_meta=meta, leave_grace=grace)
    observer = await live.client()
    raw = await RawClient.open(live.url)
    await raw.connect(auth={"user": "u", "name": "Ursula"})
    await live.settled(observer)
    assert "u" in peers_of(observer.view)
    diffs_before = len(observer.diffs)
    raw.abort()  # the connection drops: no goodbye
    await live.client(auth={"user": "u", "name": "Ursula"})  # back within the grace
    await anyio.sleep(grace + 2 * WINDOW)  # let the grace deadline pass ...
    marker = await live.client()  # ... then a marker join bounds what the observer saw
    await observer.wait_for(lambda v: marker.sid in (v.peers or ()))
    assert observer.view.left == []
    assert observer.view.joined == [marker.sid]  # u never left nor joined again
    assert len(observer.diffs) == diffs_before + 1
    assert [str(e.key) for _, e in live.told if isinstance(e, PeerLeft)] == []


async def test_grace_past_it_the_leave_comes_after_the_grace(serve: Serve) -> None:
    grace = 0.5
    live = await serve(identify=identify, leave_grace=grace)
    observer = await live.client()
    raw = await RawClient.open(live.url)
    await raw.connect(auth={"user": "u"})
    await live.settled(observer)
    dropped_at = live.hub.monitor.clock.now()
    raw.abort()
    await observer.wait_for(lambda v: "u" not in (v.peers or ()))
    assert [peer for peer, _ in observer.view.left] == ["u"]
    assert observer.view.left[0][1] in Reason.DROPPED
    (left_at,) = [at for at, e in live.told if isinstance(e, PeerLeft)]
    assert left_at >= dropped_at + grace  # held for the grace, on the server's clock


async def test_presence_sync_gives_a_fresh_state(serve: Serve) -> None:
    live = await serve()
    a = await live.client()
    await a.wait_for(lambda v: v.states == 1)
    await a.sio.emit("presence_sync", {"room": "peers"})
    await a.wait_for(lambda v: v.states == 2)
    await a.sio.emit("presence_sync", {"room": ["not", "a", "string"]})  # refused, logged
    await a.sio.emit("presence_sync")
    await a.wait_for(lambda v: v.states == 3)
    assert live.hub.refused["wrong type"] == 1
    assert a.view.peers == live.presence()
