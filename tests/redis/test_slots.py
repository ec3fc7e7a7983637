"""Roster slots from one node's roster to another's, through a real Redis stream.

Two hubs on ManualClocks with in-memory connections: node a's
:class:`LocalSlots` makes the entries a sync would append (``change_entries``),
they are ``XADD``-ed to a real redis-server and read back with ``XREAD``, one
entry at a time, into node b's :class:`Copies`, whose :class:`Mirror` shows them
in b's roster. Exact, and quick: no sockets but Redis's.
"""

from __future__ import annotations

from typing import Any

import pytest

from heartbeat_monitor import PeerJoined, PeerLeft, Reason
from heartbeat_monitor_redis._copies import Copies, change_entries
from heartbeat_monitor_redis._keys import CHUNK, ClusterStats, Keys
from heartbeat_monitor_redis._slots import LocalSlots, Mirror
from tests.presence.test_roster import Setup, running

from .conftest import RedisServer

pytestmark = pytest.mark.anyio

KEYS = Keys("slots-test:")
STREAM = KEYS.changes("a")


class Stream:
    """Node a's change stream in Redis, read by node b one entry at a time."""

    def __init__(self, redis: Any, slots: LocalSlots, copies: Copies) -> None:
        self.redis = redis
        self.slots = slots
        self.copies = copies
        self.seq = 0
        self.ids: list[bytes] = []
        self.read_until: bytes | str = "0-0"

    async def sync(self, *, resync: bool = False, gone: str = "") -> int:
        """What a's next sync appends: its slots' changes; how many entries."""
        write = self.slots.write(resync=resync)
        entries = list(
            change_entries(
                self.seq,
                reset=resync,
                added={},
                removed=[],
                put=write.put,
                dropped=write.dropped,
                gone=gone,
            )
        )
        for seq, entry in entries:
            self.ids.append(await self.redis.xadd(STREAM, {"d": entry}))
            self.seq = seq
        self.slots.written(write)
        return len(entries)

    async def read_one(self) -> None:
        reply = await self.redis.xread({STREAM: self.read_until}, count=1)
        [(_, [(entry_id, _)])] = reply
        self.read_until = entry_id
        self.copies.apply(reply)


async def shown(b: Setup) -> dict[str, list[str]]:
    await b.advance()
    return {str(p): [str(m["conn"]) for m in metas] for p, metas in b.hub.presence("peers").items()}


async def test_a_sync_split_across_reads_is_shown_once_whole_then_forgotten_once(
    redis_server: RedisServer,
) -> None:
    redis = await redis_server.client()
    try:
        async with running(timeout=60) as a, running(timeout=60) as b:
            told: list[PeerJoined | PeerLeft] = []
            b.hub.on_join(told.append)
            b.hub.on_leave(told.append)
            copies = Copies(KEYS, ClusterStats(), "b", Mirror(b.hub.roster, "b"))
            copies.watch("a")
            await copies.read_full(redis, "a", 5.0)  # nothing yet
            assert not copies.unsettled()
            stream = Stream(redis, LocalSlots(a.hub.roster, "a"), copies)

            clients = [a.connect(f"p{i}") for i in range(CHUNK + 10)]
            await a.advance()
            assert await stream.sync(resync=True) == 2  # a full rewrite: two entries
            await stream.read_one()
            # Half a sync read: nothing is shown, nobody told, and presence says partial.
            assert copies.unsettled()
            assert await shown(b) == {}
            await stream.read_one()
            assert not copies.unsettled()
            expected = {f"p{i}": [f"a/{c.link.conn}"] for i, c in enumerate(clients) if c.link}
            assert len(expected) == CHUNK + 10
            assert await shown(b) == expected
            assert len(told) == CHUNK + 10
            assert b.hub.roster.diffs == 1  # one diff for them all
            assert b.hub.roster.window == b.hub.roster.diff_interval  # b told nobody: no stretch

            # A leave, a meta update, a join: one entry, told as they happened on a.
            clients[0].disconnect()
            a.hub.update_meta("p1", {"status": "away"})
            late = a.connect("late")
            await a.advance()
            assert await stream.sync() == 1
            await stream.read_one()
            presence = b.hub.presence("peers")
            assert "p0" not in presence
            assert presence["p1"][0]["status"] == "away"
            assert late.link is not None
            assert presence["late"] == [{"conn": f"a/{late.link.conn}"}]
            await b.advance()
            [left] = [event for event in told if isinstance(event, PeerLeft)]
            assert (left.key, left.reason) == ("p0", Reason.CLIENT_DISCONNECT)

            # A rewrite that no longer has some slots: those whose drop a recorded leave with
            # its reason, the others with the reset's (here: a's previous incarnation died);
            # the slots still there stay, untold.
            clients[2].disconnect()
            await a.advance()
            stream.slots.written(stream.slots.write(resync=False))  # lost, with p2's reason
            clients[1].disconnect()
            await a.advance()
            before = len(told)
            assert await stream.sync(resync=True, gone=Reason.NODE_GONE) == 2
            await stream.read_one()
            await stream.read_one()
            await b.advance()
            news = [(e.key, e.reason) for e in told[before:] if isinstance(e, PeerLeft)]
            assert sorted(news) == [("p1", Reason.CLIENT_DISCONNECT), ("p2", Reason.NODE_GONE)]
            assert len(told) == before + 2

            # The node is ended: every slot leaves once, with "node gone"; never again.
            copies.forget("a", Reason.NODE_GONE)
            assert await shown(b) == {}
            gone = [e for e in told[before + 2 :] if isinstance(e, PeerLeft)]
            assert len(gone) == CHUNK + 10 - 3 + 1
            assert {e.reason for e in gone} == {Reason.NODE_GONE}
            copies.forget("a", Reason.NODE_GONE)
            await stream.sync()  # what a wrote meanwhile: no copy reads it any more
            assert await shown(b) == {}
            assert len(told) == before + 2 + len(gone)
    finally:
        await redis.aclose()
