"""Cluster nodes in this process (real uvicorn, python-socketio, redis-server): the hard cases."""

from __future__ import annotations

import json
import signal
from collections.abc import Iterable
from typing import Any

import anyio
import pytest

from heartbeat_monitor import Reason
from heartbeat_monitor_redis import RedisCluster
from tests.socketio.conftest import Client

from .conftest import (
    INTERVAL,
    MISSES,
    NODE_TIMEOUT,
    SYNC_INTERVAL,
    Cut,
    RedisServer,
    StartMember,
    StartNode,
)

pytestmark = pytest.mark.anyio

SLACK = 1.5
#: From the moment a node stops beating until a survivor has ended it.
NODE_BOUND = NODE_TIMEOUT + SYNC_INTERVAL + NODE_TIMEOUT / 10 + SLACK


async def until(condition, within: float = 5.0) -> None:
    """Poll a condition about Redis or another node's view, at short intervals, bounded."""
    with anyio.fail_after(within):
        while not await condition():  # noqa: ASYNC110 -- another node's state, over Redis
            await anyio.sleep(SYNC_INTERVAL / 4)


async def assert_no_more(clients: Iterable[Client], count: int, within: float = 0.6) -> None:
    clients = list(clients)
    with anyio.move_on_after(within):
        for client in clients:
            await client.peer_gone.wait(count + 1, within=within * 2)
    for client in clients:
        assert len(client.peer_gone) == count, client.peer_gone.items


async def add_ghost(
    redis_server: RedisServer, cluster: RedisCluster, peers: dict[str, list[str]]
) -> None:
    """A node that beat once into Redis, with ``peers`` (peer -> rooms), then died."""
    redis = await redis_server.client()
    try:
        await redis.hset(cluster.prefix + "nodes", "ghost", 1)
        if peers:
            await redis.hset(
                cluster.prefix + "presence:ghost",
                mapping={json.dumps(peer): json.dumps(rooms) for peer, rooms in peers.items()},
            )
    finally:
        await redis.aclose()


async def test_identity_on_two_nodes_stays_present_while_either_beats(
    start_member: StartMember,
) -> None:
    n1 = await start_member("n1")
    n2 = await start_member("n2")
    watchers = [await n1.client(), await n2.client()]
    alice_1 = await n1.client(beat=False, auth={"user": "alice"})
    alice_2 = await n2.client(auth={"user": "alice"})

    async def alice_on(*nodes: str) -> bool:
        return await n1.cluster.locate("alice") == frozenset(nodes)

    await until(lambda: alice_on("n1", "n2"))
    # Alice's connection to n1 is silent: n1 drops it, but Alice is still on n2.
    await alice_1.disconnects.wait(1, within=INTERVAL * MISSES + SLACK)
    await until(lambda: alice_on("n2"))
    await assert_no_more(watchers, 0)
    assert n1.gone.items == []
    assert n2.gone.items == []
    where = await n2.cluster.presence()
    assert where["alice"] == {"n2"}

    # Her last connection leaves: gone cluster-wide, announced once, cleaned up once.
    await alice_2.close()
    [(peer, reason)] = await n2.gone.wait(1)
    assert peer == "alice"
    for watcher in watchers:
        assert await watcher.peer_gone.wait(1) == [{"peer": "alice", "reason": reason}]
    await assert_no_more(watchers, 1)
    assert n1.gone.items == []
    await until(lambda: alice_on())


async def test_dead_node_ended_once_by_one_of_three(
    start_member: StartMember, redis_server: RedisServer
) -> None:
    n1 = await start_member("n1")
    await add_ghost(
        redis_server,
        n1.cluster,
        {**{f"g{i}": ["peers"] for i in range(20)}, "bob": ["peers"]},
    )
    n2 = await start_member("n2")
    n3 = await start_member("n3")
    watchers = [await member.client() for member in (n1, n2, n3)]
    await n1.client(auth={"user": "bob"})  # Bob is on the ghost and on n1: he stays.

    expected = sorted(f"g{i}" for i in range(20))
    with anyio.fail_after(NODE_BOUND + SLACK):
        for watcher in watchers:
            events = await watcher.peer_gone.wait(20, within=NODE_BOUND + SLACK)
            assert sorted(event["peer"] for event in events) == expected
            assert {event["reason"] for event in events} == {Reason.NODE_GONE}
    await assert_no_more(watchers, 20)
    members = (n1, n2, n3)
    cleaned = sorted(peer for member in members for peer, _ in member.gone.items)
    assert cleaned == expected  # the on_gone callbacks ran once per peer, cluster-wide
    assert sum(member.cluster.stats.nodes_ended for member in members) == 1
    for member in members:
        assert "ghost" not in member.cluster.nodes()
    assert (await n2.cluster.presence())["bob"] == {"n1"}


async def test_lease_of_a_winner_that_died_mid_way_is_taken_over(
    start_member: StartMember, redis_server: RedisServer
) -> None:
    n1 = await start_member("n1", lease=NODE_TIMEOUT)
    prefix = n1.cluster.prefix
    # A winner ("departed") announced g0-g4 and died holding the lease; g0 was marked but
    # not yet removed from the ghost's presence.
    await add_ghost(redis_server, n1.cluster, {f"g{i}": ["peers"] for i in (0, 5, 6, 7, 8, 9)})
    redis = await redis_server.client()
    try:
        await redis.set(prefix + "lease:ghost", "departed", px=round(NODE_TIMEOUT * 1500))
        await redis.sadd(prefix + "announced:ghost", *[json.dumps(f"g{i}") for i in range(5)])
    finally:
        await redis.aclose()
    n2 = await start_member("n2", lease=NODE_TIMEOUT)
    watchers = [await n1.client(), await n2.client()]
    # The first expiry finds the lease held; a later one (after it ran out) takes over.
    within = NODE_BOUND + NODE_TIMEOUT * 1.5
    for watcher in watchers:
        events = await watcher.peer_gone.wait(5, within=within)
        assert sorted(event["peer"] for event in events) == [f"g{i}" for i in range(5, 10)]
    await assert_no_more(watchers, 5)
    assert n1.cluster.stats.nodes_ended + n2.cluster.stats.nodes_ended == 1


async def test_slow_redis_without_fencing_no_false_gone_and_local_notifications_catch_up(
    start_member: StartMember, redis_server: RedisServer
) -> None:
    n1 = await start_member("n1", fence=False)
    n2 = await start_member("n2", fence=False)
    on_1 = await n1.client()
    on_2 = await n2.client()
    await until(lambda: _present(n1.cluster, {on_1.sid: {"n1"}, on_2.sid: {"n2"}}))
    process = redis_server.process
    assert process is not None
    process.send_signal(signal.SIGSTOP)  # Redis hangs: every call times out
    try:
        silent = await n1.client(beat=False)
        # Local monitoring and local notifications go on without Redis.
        gone = {"peer": silent.sid, "reason": "heartbeat timeout"}
        assert await on_1.peer_gone.wait(1, within=INTERVAL * MISSES + SLACK) == [gone]
        await until(lambda: _unhealthy(n1.cluster, n2.cluster), within=SLACK * 2)
        # Longer than a node timeout: nobody is declared dead, nobody is fenced.
        await anyio.sleep(NODE_TIMEOUT * 1.5)
    finally:
        process.send_signal(signal.SIGCONT)
    # n2's client hears of it once Redis answers (from n1's outbox).
    assert await on_2.peer_gone.wait(1, within=SLACK * 3) == [gone]
    await until(lambda: _healthy(n1.cluster, n2.cluster))
    await until(lambda: _present(n2.cluster, {on_1.sid: {"n1"}, on_2.sid: {"n2"}}))
    for member in (n1, n2):
        assert member.cluster.stats.nodes_ended == 0
        assert member.cluster.stats.fences == 0
    assert n1.cluster.nodes() == ["n1", "n2"]
    assert on_1.sio.connected
    assert on_2.sio.connected
    await assert_no_more([on_1, on_2], 1)


async def test_slow_redis_fences_every_node_then_each_announces_its_own_peers_once(
    start_member: StartMember, redis_server: RedisServer
) -> None:
    n1 = await start_member("n1")
    n2 = await start_member("n2")
    on_1 = await n1.client()
    on_2 = await n2.client()
    await until(lambda: _present(n1.cluster, {on_1.sid: {"n1"}, on_2.sid: {"n2"}}))
    process = redis_server.process
    assert process is not None
    process.send_signal(signal.SIGSTOP)  # Redis hangs for everyone
    try:
        # Neither node can know whether the other has declared it dead: both fence.
        fence_bound = NODE_TIMEOUT - SYNC_INTERVAL + SLACK
        await on_1.disconnects.wait(1, within=fence_bound)
        await on_2.disconnects.wait(1, within=fence_bound)
        assert n1.cluster.fenced
        assert n2.cluster.fenced
        # Their departures wait for Redis; new connections are served locally meanwhile.
        assert n1.gone.items == n2.gone.items == []
        fresh_1 = await n1.client()
        fresh_2 = await n2.client()
    finally:
        process.send_signal(signal.SIGCONT)
    # Each node announces its own fenced peer once Redis answers, to every node's clients.
    expected = sorted(
        [{"peer": client.sid, "reason": Reason.NODE_ISOLATED} for client in (on_1, on_2)],
        key=str,
    )
    for fresh in (fresh_1, fresh_2):
        assert sorted(await fresh.peer_gone.wait(2, within=SLACK * 3), key=str) == expected
    assert n1.gone.items == [(on_1.sid, Reason.NODE_ISOLATED)]
    assert n2.gone.items == [(on_2.sid, Reason.NODE_ISOLATED)]
    await until(lambda: _present(n1.cluster, {fresh_1.sid: {"n1"}, fresh_2.sid: {"n2"}}))
    assert not _fenced(n1.cluster)  # rejoined
    assert n1.cluster.nodes() == n2.cluster.nodes() == ["n1", "n2"]
    for member in (n1, n2):
        assert member.cluster.stats.nodes_ended == 0
        assert member.cluster.stats.fences == 1
    await assert_no_more([fresh_1, fresh_2], 2)


async def _present(cluster: RedisCluster, expected: dict[str, set[str]]) -> bool:
    try:
        return await cluster.presence() == expected
    except Exception:
        return False


async def _unhealthy(*clusters: RedisCluster) -> bool:
    return not any(cluster.healthy for cluster in clusters)


def _fenced(cluster: RedisCluster) -> bool:
    return cluster.fenced


async def _healthy(*clusters: RedisCluster) -> bool:
    return all(cluster.healthy for cluster in clusters)


async def test_bad_presence_entries_are_logged_not_fatal(
    start_member: StartMember, redis_server: RedisServer
) -> None:
    n1 = await start_member("n1")
    redis = await redis_server.client()
    try:
        await redis.hset(n1.cluster.prefix + "nodes", mapping={"ghost": 1, "garbage": "x"})
        await redis.hset(
            n1.cluster.prefix + "presence:ghost",
            mapping={
                "{not json": "[]",
                json.dumps("ok"): "not json either",
                json.dumps("g2"): "5",
                '"g1"': '["peers"]',
            },
        )
    finally:
        await redis.aclose()
    watcher = await n1.client()
    events = await watcher.peer_gone.wait(1, within=NODE_BOUND)
    assert events == [{"peer": "g1", "reason": Reason.NODE_GONE}]
    await assert_no_more([watcher], 1)
    await until(lambda: _present(n1.cluster, {watcher.sid: {"n1"}}))
    assert n1.cluster.healthy


async def test_restart_under_the_same_id_announces_the_previous_incarnation(
    start_member: StartMember, redis_server: RedisServer
) -> None:
    n2 = await start_member("n2")
    watcher = await n2.client()
    redis = await redis_server.client()
    try:  # n1 ran with two clients and was killed; it is restarted before anyone noticed
        await redis.hset(n2.cluster.prefix + "nodes", "n1", 5)
        await redis.hset(
            n2.cluster.prefix + "presence:n1",
            mapping={json.dumps("old1"): '["peers"]', json.dumps("old2"): '["peers"]'},
        )
    finally:
        await redis.aclose()
    n1 = await start_member("n1")
    events = await watcher.peer_gone.wait(2, within=SLACK * 2)
    assert sorted(event["peer"] for event in events) == ["old1", "old2"]
    assert {event["reason"] for event in events} == {Reason.NODE_GONE}
    assert sorted(peer for peer, _ in n1.gone.items) == ["old1", "old2"]
    fresh = await n1.client()
    await until(lambda: _present(n2.cluster, {watcher.sid: {"n2"}, fresh.sid: {"n1"}}))
    await assert_no_more([watcher], 2, within=NODE_TIMEOUT)
    assert n2.cluster.stats.nodes_ended == 0


async def test_node_started_while_redis_is_down_joins_when_it_comes_up(
    start_member: StartMember, redis_server: RedisServer
) -> None:
    await redis_server.stop()
    n1 = await start_member("n1")  # starts, logs, serves local clients
    assert not n1.cluster.healthy
    watcher = await n1.client()
    silent = await n1.client(beat=False)
    assert await watcher.peer_gone.wait(1, within=INTERVAL * MISSES + SLACK) == [
        {"peer": silent.sid, "reason": "heartbeat timeout"}
    ]
    await redis_server.start()
    await until(lambda: _healthy(n1.cluster), within=SLACK * 2)
    await until(lambda: _present(n1.cluster, {watcher.sid: {"n1"}}))
    n2 = await start_member("n2")
    await until(lambda: _present(n2.cluster, {watcher.sid: {"n1"}}))

    async def both_see_both() -> bool:
        return n1.cluster.nodes() == n2.cluster.nodes() == ["n1", "n2"]

    await until(both_see_both)


async def test_outbox_is_bounded_by_age_and_size() -> None:
    import socketio
    from structlog.testing import capture_logs

    from heartbeat_monitor_redis import ClusterRedisManager
    from tests.redis.conftest import free_port

    manager = ClusterRedisManager(
        f"redis://127.0.0.1:{free_port()}/0", op_timeout=0.2, outbox_size=2, outbox_max_age=0.3
    )
    sio = socketio.AsyncServer(async_mode="asgi", client_manager=manager)
    try:
        with capture_logs() as logs:
            for index in range(3):  # nobody listens on that port: every publish fails
                await sio.emit("news", {"n": index})
            assert manager.pending == 2  # the oldest was dropped, and said so
            assert not await manager.flush()
            await anyio.sleep(0.4)
            assert await manager.flush()  # expired events are dropped, not sent late
        assert manager.pending == 0
        events = [log["event"] for log in logs]
        assert "heartbeat_monitor.cluster.outbox_full" in events
        assert "heartbeat_monitor.cluster.publish_failed" in events
        assert events.count("heartbeat_monitor.cluster.outbox_expired") == 2
        assert manager.dropped == 3
    finally:
        await manager.aclose()


async def test_clean_shutdown_of_a_node_tells_the_other_nodes_once(
    start_member: StartMember,
) -> None:
    n1 = await start_member("n1")
    n2 = await start_member("n2")
    watcher = await n2.client()
    leaving = [await n1.client(), await n1.client()]
    await until(
        lambda: _present(n2.cluster, {watcher.sid: {"n2"}, **{c.sid: {"n1"} for c in leaving}})
    )
    await n1.stop()  # the server stops (its peers end), then the node leaves Redis
    events = await watcher.peer_gone.wait(2, within=SLACK)
    assert sorted(events, key=str) == sorted(
        [{"peer": client.sid, "reason": Reason.SERVER_SHUTDOWN} for client in leaving], key=str
    )
    assert sorted(n1.gone.items) == sorted((c.sid, Reason.SERVER_SHUTDOWN) for c in leaving)
    # Its leave marker says it left cleanly: the others forget it, nobody announces it again.
    await until(lambda: _nodes_are(n2.cluster, ["n2"]))
    await assert_no_more([watcher], 2, within=NODE_BOUND)
    assert n2.cluster.stats.nodes_ended == 0
    assert n2.gone.items == []


async def _nodes_are(cluster: RedisCluster, nodes: list[str]) -> bool:
    return cluster.nodes() == nodes


async def test_node_cut_off_from_redis_fences_itself_before_it_is_declared_dead(
    cut_link: Cut, start_member: StartMember
) -> None:
    n1 = await start_member("n1", url=cut_link.url)
    n2 = await start_member("n2")
    watcher = await n2.client()
    on_1 = await n1.client()
    # When the watcher hears that on_1 is gone, is on_1 still connected to n1?
    still_served: list[bool] = []

    def peer_gone(data: dict[str, str]) -> None:
        if data["peer"] == on_1.sid:
            still_served.append(len(on_1.disconnects) == 0)
        watcher.peer_gone.append(data)

    watcher.sio.on("peer_gone", peer_gone, namespace="/")
    await until(lambda: _present(n2.cluster, {watcher.sid: {"n2"}, on_1.sid: {"n1"}}))
    await cut_link.cut()  # n1 cannot reach Redis; n2 can: n1 looks dead
    events = await watcher.peer_gone.wait(1, within=NODE_BOUND)
    assert events == [{"peer": on_1.sid, "reason": Reason.NODE_GONE}]
    assert still_served == [False]  # fenced first: never "gone" while still served
    assert n1.cluster.fenced
    assert n2.gone.items == [(on_1.sid, Reason.NODE_GONE)]
    assert n1.gone.items == []  # its departure was announced once, by n2
    fresh = await n1.client()  # n1 serves new connections locally meanwhile
    cut_link.open = True  # n1 takes its lease, finds on_1 announced, writes its presence again
    await until(lambda: _present(n2.cluster, {watcher.sid: {"n2"}, fresh.sid: {"n1"}}), SLACK * 3)

    async def both_see_both() -> bool:
        return n1.cluster.nodes() == n2.cluster.nodes() == ["n1", "n2"]

    await until(both_see_both)
    assert not _fenced(n1.cluster)  # rejoined
    await assert_no_more([watcher], 1, within=NODE_TIMEOUT)
    assert n1.gone.items == []
    assert n1.cluster.stats.fences == 1


async def test_node_that_dies_just_before_redis_restarts_empty_is_still_announced(
    start_member: StartMember, start_node: StartNode, redis_server: RedisServer
) -> None:
    # n1 with a longer node timeout, so that the restart below cannot fence it.
    n1 = await start_member("n1", node_timeout=3.0)
    watcher = await n1.client()
    n2 = await start_node("n2")
    on_2 = [await n2.client() for _ in range(3)]
    sids = frozenset(client.sid for client in on_2)

    async def n1_knows_them() -> bool:
        return n1.cluster.last_known("n2") == sids

    await until(n1_knows_them)
    n2.kill()
    with anyio.fail_after(10):
        await n2.process.wait()
    await redis_server.stop()
    await redis_server.start()  # empty: n2 is in no nodes hash, its presence is gone
    events = await watcher.peer_gone.wait(3, within=3.0 + SYNC_INTERVAL + 2 * SLACK)
    assert sorted(event["peer"] for event in events) == sorted(sids)
    assert {event["reason"] for event in events} == {Reason.NODE_GONE}
    assert sorted(peer for peer, _ in n1.gone.items) == sorted(sids)
    await assert_no_more([watcher], 3)
    assert n1.cluster.nodes() == ["n1"]
    assert n1.cluster.stats.nodes_ended == 1


async def test_a_gap_in_a_nodes_changes_is_mended_by_a_full_read(
    start_member: StartMember, redis_server: RedisServer
) -> None:
    n1 = await start_member("n1")
    n2 = await start_member("n2")
    first = [await n2.client(), await n2.client()]

    async def n1_knows(clients: list[Client]) -> bool:
        sids = {client.sid for client in clients}  # in its copy, and in its roster's presence
        return n1.cluster.last_known("n2") == sids == set(n1.adapter.hub.presence("peers"))

    left: list[Any] = []
    n1.adapter.hub.on_leave(left.append)
    await until(lambda: n1_knows(first))
    reads = n1.cluster.stats.full_reads
    # An entry that skips a number (as if one had been trimmed away unread), claiming a peer
    # n2 does not have: n1 must not trust it, and reads n2's presence in full instead.
    changes = n1.cluster.prefix + "changes:n2"
    redis = await redis_server.client()
    try:
        entries: Any = await redis.xrevrange(changes, count=1)
        [(_, last)] = entries
        seq = json.loads(last[b"d"])["seq"]
        entry = {
            "seq": seq + 2,
            "reset": False,
            "set": {json.dumps("ghost"): "[]"},
            "del": [],
            "put": {json.dumps(["peers", "x.1"]): json.dumps(["ghost", {}])},
        }
        await redis.xadd(changes, {"d": json.dumps(entry)})
    finally:
        await redis.aclose()
    await until(lambda: _more_full_reads(n1.cluster, reads))
    assert "ghost" not in n1.cluster.last_known("n2")
    assert "ghost" not in n1.adapter.hub.presence("peers")
    later = await n2.client()
    await until(lambda: n1_knows([*first, later]))
    assert "ghost" not in n1.cluster.last_known("n2")
    assert left == []  # the full read told nothing of the peers it already showed


async def _more_full_reads(cluster: RedisCluster, than: int) -> bool:
    return cluster.stats.full_reads > than
