"""A cluster's nodes in the metrics: ``serve --redis-url ... --metrics`` on a real redis-server."""

from __future__ import annotations

import anyio
import pytest

from heartbeat_monitor import Reason
from tests.redis.conftest import NODE_TIMEOUT, SYNC_INTERVAL, StartNode
from tests.redis.test_nodes import wait_presence

from ._http import get, samples

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # python-socketio


#: A dead node is noticed within its timeout, a sync and a resolution, plus loaded-machine slack.
NODE_BOUND = NODE_TIMEOUT + SYNC_INTERVAL + 5.0


async def test_each_node_counts_the_nodes_it_sees(start_node: StartNode) -> None:
    a = await start_node("a", "--metrics", "--notify", "both")  # peer_gone, heard below
    b = await start_node("b", "--metrics", "--notify", "both")
    watcher = await a.client()
    leaver = await b.client()
    with anyio.fail_after(NODE_BOUND):
        while True:  # b joins a's view at a's next sync
            scraped = samples((await get(a.url + "/metrics")).text)
            if scraped["heartbeat_monitor_cluster_nodes"][(("state", "alive"),)] == 2:
                break
            await anyio.sleep(SYNC_INTERVAL)
    assert scraped["heartbeat_monitor_cluster_nodes"][(("state", "fenced"),)] == 0
    assert samples((await get(b.url + "/metrics")).text)["heartbeat_monitor_peers"] == {
        (("state", "alive"),): 1,
        (("state", "suspect"),): 0,
        (("state", "held"),): 0,
    }  # per node: b's own peers

    everyone = {watcher.sid: {"a"}, leaver.sid: {"b"}}
    await wait_presence(a, watcher, everyone, within=NODE_BOUND)  # a knows b's peer

    b.kill()  # no goodbye: a notices b gone and announces its peer
    [told] = await watcher.peer_gone.wait(1, within=NODE_BOUND)
    assert (told["peer"], told["reason"]) == (leaver.sid, Reason.NODE_GONE)
    scraped = samples((await get(a.url + "/metrics")).text)
    assert scraped["heartbeat_monitor_cluster_nodes"][(("state", "alive"),)] == 1
    status = (await get(a.url + "/status.json")).json()
    assert status["figures"]["cluster_nodes"] == {"alive": 1, "fenced": 0}
    assert [(d["peer"], d["reason"]) for d in status["departures"]] == [
        (leaver.sid, Reason.NODE_GONE)
    ]
