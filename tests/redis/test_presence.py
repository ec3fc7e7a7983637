"""Cluster-wide presence: a client on one node is told of every node's peers.

Real redis-server, real nodes (in-process under uvicorn, or ``serve`` processes),
real python-socketio clients whose ``presence_state`` / ``presence_diff`` are
applied as ``static/presence.js`` applies them (:class:`tests.presence._view.View`,
which records joins twice, leaves of absent peers and sequence gaps).
"""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from heartbeat_monitor import Reason
from heartbeat_monitor_redis import RedisCluster

from .conftest import (
    NODE_TIMEOUT,
    SYNC_INTERVAL,
    Presence,
    RedisServer,
    StartMember,
    StartNode,
)
from .test_nodes import start_nodes

pytestmark = pytest.mark.anyio

SLACK = 1.5
#: A peer on one node shows on another within two syncs (written, then read) and a window.
SEEN = 2 * SYNC_INTERVAL + SLACK


def leaves(presence: Presence) -> list[tuple[int, dict[str, Any]]]:
    """``(seq, leaves)`` of every diff with a leave."""
    return [
        (diff["seq"], diff["leaves"]) for diff in presence.of("presence_diff") if diff["leaves"]
    ]


def assert_sound(presence: Presence) -> None:
    view = presence.view
    assert view.errors == []
    assert view.gaps == 0
    seqs = [diff["seq"] for diff in presence.of("presence_diff")]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs))) if seqs else True


async def until(condition: Any, within: float = 5.0) -> None:
    """Poll another node's state (the cluster's health), bounded."""
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110 -- a node's view of Redis, no event to wait on
            await anyio.sleep(SYNC_INTERVAL / 4)


async def test_peers_of_another_node_in_state_and_diffs(start_member: StartMember) -> None:
    a = await start_member("a", notify="presence")
    b = await start_member("b", notify="presence")
    watcher = await b.watcher()
    connecting = time.monotonic()
    peer = await a.client()
    view = await watcher.until(lambda v: peer.sid in v.peers, within=SEEN)
    print(f"connect on a -> join in b's diff: {time.monotonic() - connecting:.3f} s (sync 0.25 s)")
    [meta] = view.peers[peer.sid]
    assert meta["conn"].startswith("a/")  # unique cluster-wide: prefixed by its node
    assert view.count == {"peers": 2, "connections": 2}

    # A newcomer on b gets a's peer in its first state.
    late = await b.watcher()
    await late.until(lambda v: v.states == 1)
    assert set(late.of("presence_state")[0]["peers"]) >= {peer.sid, watcher.client.sid}

    # A meta change on a is an update on b.
    assert a.adapter.hub.update_meta(peer.sid, {"status": "away"})
    await watcher.until(lambda v: v.peers[peer.sid][0].get("status") == "away", within=SEEN)

    # An identity on both nodes joins once, and leaves once, when its last connection goes.
    alice_a = await a.client(auth={"user": "alice"})
    alice_b = await b.client(auth={"user": "alice"})
    await watcher.until(lambda v: len(v.peers.get("alice", ())) == 2, within=SEEN)
    await alice_a.close()
    await watcher.until(lambda v: len(v.peers.get("alice", ())) == 1, within=SEEN)
    await alice_b.close()
    await watcher.until(lambda v: "alice" not in v.peers, within=SEEN)

    await peer.close()
    await watcher.until(lambda v: peer.sid not in v.peers, within=SEEN)
    assert view.joined == [peer.sid, late.client.sid, "alice"]
    assert [who for who, _ in view.left] == ["alice", peer.sid]
    assert {reason for _, reason in view.left} <= {Reason.TRANSPORT_CLOSE, Reason.CLIENT_DISCONNECT}
    assert view.count == {"peers": 2, "connections": 2}

    # A node that shuts down cleanly: its peers leave the others' presence, once.
    stayer = await a.client()
    await watcher.until(lambda v: stayer.sid in v.peers, within=SEEN)
    await a.stop()
    await watcher.until(lambda v: stayer.sid not in v.peers, within=SEEN + NODE_TIMEOUT)
    assert view.left[-1] == (stayer.sid, Reason.SERVER_SHUTDOWN)
    assert len(view.left) == 3
    assert_sound(watcher)


async def test_killed_node_peers_leave_once_in_one_diff_on_every_node(
    start_node: StartNode,
) -> None:
    a, b, c = await start_nodes(start_node, "a", "b", "c")  # serve's default: presence
    watchers = [await b.watcher(), await c.watcher()]
    on_a = {(await a.client()).sid for _ in range(3)}
    for watcher in watchers:
        await watcher.until(lambda v: on_a <= v.peers.keys(), within=SEEN)

    killed = time.monotonic()
    a.kill()
    bound = NODE_TIMEOUT + SYNC_INTERVAL + NODE_TIMEOUT / 10 + SLACK
    for watcher in watchers:
        await watcher.until(lambda v: not on_a & v.peers.keys(), within=bound)
    told = time.monotonic() - killed
    # Nothing more: not at the survivors' next syncs, not when the lease is released.
    with anyio.move_on_after(4 * SYNC_INTERVAL):
        await watchers[0].messages.wait(len(watchers[0].messages) + 1, within=10)
    for watcher in watchers:
        [(_, left)] = leaves(watcher)
        assert set(left) == on_a
        assert {entry["reason"] for entry in left.values()} == {Reason.NODE_GONE}
        assert watcher.view.count == {"peers": 2, "connections": 2}
        assert_sound(watcher)
    print(f"node SIGKILL -> leave diff on both survivors: {told:.3f} s (node timeout 1.5 s)")


async def test_redis_down_states_are_partial_then_whole_again(
    start_member: StartMember, redis_server: RedisServer
) -> None:
    a = await start_member("a", notify="presence", fence=False)
    b = await start_member("b", notify="presence", fence=False)
    watcher = await b.watcher()
    peer = await a.client()
    await watcher.until(lambda v: peer.sid in v.peers, within=SEEN)
    assert watcher.of("presence_state")[-1].get("partial") is None

    await redis_server.stop()
    await until(lambda: not b.cluster.healthy, within=NODE_TIMEOUT + SLACK)
    # The room is told at once that its presence is partial; a's peer is still there.
    view = await watcher.until(lambda v: v.partial, within=SLACK)
    assert peer.sid in view.peers
    state = await watcher.state()
    assert state["partial"] is True
    assert peer.sid in state["peers"]

    await redis_server.start()  # empty, as after a crash: every node writes its presence again
    await until(lambda: _whole(a.cluster, b.cluster), within=NODE_TIMEOUT + 2 * SLACK)
    view = await watcher.until(lambda v: not v.partial, within=SLACK)
    state = await watcher.state()
    assert "partial" not in state
    assert peer.sid in state["peers"]
    # Presence flows again, and nobody joined or left twice through the outage.
    fresh = await a.client()
    await watcher.until(lambda v: fresh.sid in v.peers, within=SEEN)
    assert view.joined == [peer.sid, fresh.sid]
    assert view.left == []
    assert_sound(watcher)


def _whole(*clusters: RedisCluster) -> bool:
    return all(
        cluster.healthy and not cluster.hub.roster.partial and len(cluster.nodes()) == len(clusters)
        for cluster in clusters
    )
