"""Three real ``serve`` processes sharing a real redis-server, with real clients on each."""

from __future__ import annotations

import time
from typing import Any

import anyio
import pytest

from tests.socketio.conftest import Client

from .conftest import INTERVAL, MISSES, NODE_TIMEOUT, SYNC_INTERVAL, Node, RedisServer, StartNode

pytestmark = pytest.mark.anyio

#: Loopback and two shared cores: the margin added to every bound.
SLACK = 1.5
#: serve's default is presence diffs only; these tests listen for peer_gone too.
PEER_GONE = ("--notify", "both")


async def start_nodes(
    start_node: StartNode, *names: str, extra: tuple[str, ...] = ()
) -> list[Node]:
    """Start the nodes at once; ``extra`` options for each (these tests listen for
    ``peer_gone``, which ``--notify both`` adds to presence: ``PEER_GONE``)."""
    nodes: list[Node] = []

    async def one(name: str) -> None:
        nodes.append(await start_node(name, *extra))

    async with anyio.create_task_group() as task_group:
        for name in names:
            task_group.start_soon(one, name)
    return sorted(nodes, key=lambda node: node.name)


async def wait_presence(
    node: Node, client: Client, expected: dict[str, set[str]], within: float
) -> dict[str, Any]:
    """Poll ``node``'s presence (over Socket.IO) until it is ``expected``; bounded."""
    reply: dict[str, Any] = {}
    try:
        with anyio.fail_after(within):
            while True:
                reply = await node.presence(client)
                got = {peer: set(nodes) for peer, nodes in reply.get("peers", [])}
                if got == expected:
                    return reply
                await anyio.sleep(SYNC_INTERVAL / 2)
    except TimeoutError:
        raise AssertionError(f"presence on {node.name}: {reply!r}, expected {expected!r}") from None


async def assert_no_more(client: Client, count: int, within: float) -> None:
    with anyio.move_on_after(within):
        await client.peer_gone.wait(count + 1, within=within * 2)
    assert len(client.peer_gone) == count, client.peer_gone.items


async def test_silent_client_announced_on_every_node_then_a_killed_node_once(
    start_node: StartNode,
) -> None:
    a, b, c = await start_nodes(start_node, "a", "b", "c", extra=PEER_GONE)
    on_a = [await a.client(), await a.client()]
    on_b = [await b.client(), await b.client()]
    on_c = [await c.client(), await c.client()]
    everyone = {
        client.sid: {node.name}
        for node, clients in ((a, on_a), (b, on_b), (c, on_c))
        for client in clients
    }

    # Presence: every peer, on its node, as seen from any node.
    await wait_presence(c, on_c[0], everyone, within=5)
    await wait_presence(a, on_a[0], everyone, within=5)

    # A silent client on A is announced to the clients of B and C (and A), once.
    silent = await a.client(beat=False)
    gone = {"peer": silent.sid, "reason": "heartbeat timeout"}
    for client in on_a + on_b + on_c:
        assert await client.peer_gone.wait(1, within=INTERVAL * MISSES + SLACK) == [gone]
    await wait_presence(b, on_b[0], everyone, within=5)

    # B is killed: each of its peers is announced once on A and C, within the bound.
    killed_at = time.monotonic()
    b.kill()
    bound = NODE_TIMEOUT + SYNC_INTERVAL + NODE_TIMEOUT / 10 + SLACK
    expected = sorted([{"peer": client.sid, "reason": "node gone"} for client in on_b], key=str)
    for client in on_a + on_c:
        events = await client.peer_gone.wait(3, within=bound)
        assert sorted(events[1:], key=str) == expected
    detected = time.monotonic() - killed_at
    assert detected <= bound
    for client in on_a + on_c:
        await assert_no_more(client, 3, within=SYNC_INTERVAL * 4)
    ended = a.logged("heartbeat_monitor.cluster.node_ended") + c.logged(
        "heartbeat_monitor.cluster.node_ended"
    )
    assert [(line["other"], line["peers_announced"]) for line in ended] == [("b", 2)]
    del everyone[on_b[0].sid], everyone[on_b[1].sid]
    await wait_presence(a, on_a[0], everyone, within=5)
    await wait_presence(c, on_c[0], everyone, within=5)
    reply = await c.presence(on_c[0])
    assert reply["nodes"] == ["a", "c"]


async def test_redis_down_for_ten_seconds(start_node: StartNode, redis_server: RedisServer) -> None:
    nodes = await start_nodes(start_node, "a", "b", "c", extra=PEER_GONE)
    a, b, _ = nodes
    before = {node.name: await node.watcher() for node in nodes}
    clients = {node.name: [before[node.name].client, await node.client()] for node in nodes}
    everyone = {client.sid: {name} for name, pair in clients.items() for client in pair}
    first = [client for pair in clients.values() for client in pair]
    await wait_presence(a, clients["a"][0], everyone, within=5)
    for presence in before.values():  # every node's presence holds every node's peers
        await presence.until(lambda view: view.peers.keys() == everyone.keys())

    await redis_server.stop()
    outage = anyio.current_time()
    # No node can tell whether the others declared it dead: each fences itself.
    for client in first:
        await client.disconnects.wait(1, within=NODE_TIMEOUT + 2 * SLACK)
    for node in nodes:
        await node.wait_logged("heartbeat_monitor.cluster.redis_unavailable")
        [fenced] = await node.wait_logged("heartbeat_monitor.cluster.fenced")
        assert fenced["peers"] == 2
    # New connections are served locally meanwhile: a client silent now is announced on
    # its node at once.
    watching = {node.name: await node.watcher() for node in nodes}
    fresh = {name: presence.client for name, presence in watching.items()}
    silent_in_outage = await a.client(beat=False)
    lost = {"peer": silent_in_outage.sid, "reason": "heartbeat timeout"}
    assert await fresh["a"].peer_gone.wait(1, within=INTERVAL * MISSES + SLACK) == [lost]
    with anyio.move_on_after(10 - (anyio.current_time() - outage)):
        # Nothing else is announced while Redis is gone: the fenced peers' departures wait.
        await fresh["b"].peer_gone.wait(1, within=20)
    for name, client in fresh.items():
        assert client.peer_gone.items == ([lost] if name == "a" else [])
        assert client.sio.connected
    await redis_server.start()  # empty, as after a crash

    for node in nodes:
        await node.wait_logged("heartbeat_monitor.cluster.redis_recovered", within=5)
        [rejoined] = await node.wait_logged("heartbeat_monitor.cluster.rejoined", within=5)
        assert rejoined["peers_announced"] == 2
    now = {client.sid: {name} for name, client in fresh.items()}
    for node in nodes:
        await wait_presence(node, fresh[node.name], now, within=5)
        assert node.logged("heartbeat_monitor.cluster.node_expired") == []
    # Every client hears, once, of each fenced peer and of the client lost in the outage.
    expected = sorted(
        [lost, *({"peer": client.sid, "reason": "node isolated"} for client in first)], key=str
    )
    try:
        for client in fresh.values():
            events = await client.peer_gone.wait(len(expected), within=SLACK * 3)
            assert sorted(events, key=str) == expected
    except BaseException:
        for node in nodes:
            for line in node.lines.items:
                if "cluster" in line.get("event", "") or "stray" in line.get("event", ""):
                    print(node.name, line)
        raise
    for client in fresh.values():
        await assert_no_more(client, len(expected), within=SYNC_INTERVAL * 4)
    # Presence said so too: each fresh client was told, in a state marked partial, the other
    # nodes' peers as last read; then, once, that they left ("node isolated"), and a state
    # whole again. Its own node's fenced peers it never saw; the one lost in the outage was
    # never written to Redis: nobody else saw it either.
    for name, presence in watching.items():
        view = presence.view
        assert presence.of("presence_state")[0]["partial"] is True
        assert not view.partial
        others = sorted(
            client.sid for other, pair in clients.items() if other != name for client in pair
        )
        isolated = [(peer, reason) for peer, reason in view.left if peer != lost["peer"]]
        assert sorted(isolated) == [(peer, "node isolated") for peer in others]
        assert view.errors == []

    # Cross-node notifications work again (the listeners re-subscribed).
    silent = await b.client(beat=False)
    gone = {"peer": silent.sid, "reason": "heartbeat timeout"}
    within = INTERVAL * MISSES + 2 * SLACK
    for client in fresh.values():
        assert (await client.peer_gone.wait(len(expected) + 1, within=within))[-1] == gone


async def test_sigterm_tells_the_other_nodes_once(start_node: StartNode) -> None:
    a, b = await start_nodes(start_node, "a", "b", extra=PEER_GONE)
    watcher = await a.client()
    leaving = [await b.client(), await b.client()]
    everyone = {watcher.sid: {"a"}, **{client.sid: {"b"} for client in leaving}}
    await wait_presence(a, watcher, everyone, within=5)
    b.process.terminate()  # SIGTERM: a clean shutdown
    events = await watcher.peer_gone.wait(2, within=SLACK * 2)
    expected = [{"peer": client.sid, "reason": "server shutdown"} for client in leaving]
    assert sorted(events, key=str) == sorted(expected, key=str)
    [stopped] = await b.wait_logged("heartbeat_monitor.cluster.stopped")
    assert stopped["node"] == "b"
    # It left a marker: nobody announces its peers again as "node gone".
    await a.wait_logged("heartbeat_monitor.cluster.node_left")
    await assert_no_more(watcher, 2, within=NODE_TIMEOUT + SYNC_INTERVAL + SLACK)
    assert a.logged("heartbeat_monitor.cluster.node_expired") == []
    await wait_presence(a, watcher, {watcher.sid: {"a"}}, within=5)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        (["--redis-url", "http://127.0.0.1/"], "--redis-url 'http://127.0.0.1/'"),
        (
            ["--redis-url", "redis://127.0.0.1:1/0", "--node-timeout", "1", "--sync-interval", "5"],
            "sync_interval must be > 0 and at most node_timeout / 3",
        ),
    ],
)
async def test_bad_cluster_options_are_refused_clearly(options: list[str], message: str) -> None:
    import sys

    command = [sys.executable, "-m", "heartbeat_monitor._cli", "serve", "--port", "0", *options]
    result = await anyio.run_process(command, check=False)
    assert result.returncode != 0
    assert message in result.stderr.decode()
    assert b"Traceback" not in result.stderr
