"""The seam on the in-memory transport, on a ManualClock: no real time, both backends."""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from heartbeat_monitor import HeartbeatMonitor, ManualClock, MemoryTransport, PeerGone, PeerHub
from heartbeat_monitor._adapter import decode_message, parse_hello
from heartbeat_monitor._errors import PeerError

pytestmark = pytest.mark.anyio


async def _hub() -> Any:
    clock = ManualClock()
    monitor = HeartbeatMonitor(1.0, resolution=0.1, clock=clock)
    gone: list[PeerGone] = []
    hub = PeerHub(monitor, on_gone=gone.append, max_rate=20)
    transport = MemoryTransport()
    return clock, monitor, hub, transport, gone


async def test_beating_peer_stays_silent_peer_expires_once_and_others_are_told():
    clock, monitor, hub, transport, gone = await _hub()
    async with monitor:
        transport.hub = hub
        a, b = transport.connect("a"), transport.connect("b")
        assert a.inbox[0] == {"type": "welcome", "peer": "a", "episode": 1, "timeout": 1.0}
        for _ in range(5):
            clock.advance(0.5)
            assert a.beat()
            await monitor.wait_idle()
        assert [g.key for g in gone] == ["b"]
        assert gone[0].expired
        assert gone[0].reason.startswith("expired: silent for 1.")
        assert b.closed == gone[0].reason
        assert a.inbox[1:] == [{"type": "gone", "peer": "b", "reason": gone[0].reason}]
        assert "a" in hub
        assert "b" not in hub
        clock.advance(5)
        await monitor.wait_idle()
        assert [g.key for g in gone] == ["b", "a"]
        assert a.inbox[-1] == {"type": "gone", "peer": "b", "reason": gone[0].reason}


async def test_close_is_exactly_once_and_reconnect_is_a_new_episode():
    clock, monitor, hub, transport, gone = await _hub()
    async with monitor:
        transport.hub = hub
        a = transport.connect("a")
        a.disconnect()
        a.disconnect()
        assert a.session is not None
        assert not hub.close(a.session, "again")
        clock.advance(5)
        await monitor.wait_idle()
        assert [(g.key, g.episode, g.reason) for g in gone] == [("a", 1, "closed by peer")]
        assert not a.beat()
        again = transport.connect("a")
        assert again.session is not None
        assert again.session.episode == 2
        assert len(monitor) == 1


async def test_bad_input_is_refused_logged_counted_and_disturbs_no_one():
    _, monitor, hub, transport, gone = await _hub()
    async with monitor:
        transport.hub = hub
        good = transport.connect("good")
        bad = {name: transport.connect(name) for name in ("g", "o", "j", "s", "f")}
        with capture_logs() as logs:
            assert transport.connect("good").session is None  # id in use: refused
            assert not bad["g"].deliver(b"\xff\xfe garbage")
            assert not bad["o"].deliver("x" * 5000)
            assert not bad["j"].deliver('["beat"]')
            assert not bad["s"].deliver('{"type":"beat","peer":"good"}')
            for _ in range(21):
                bad["f"].beat()
        refusals = [log for log in logs if log["event"].endswith("peer_refused")]
        reasons = {log["peer"]: log["reason"] for log in refusals}
        assert reasons["good"] == "peer id in use"
        assert reasons["g"].startswith("malformed")
        assert reasons["o"].startswith("oversized")
        assert reasons["j"].startswith("wrong type")
        assert reasons["s"].startswith("spoofed")
        assert reasons["f"].startswith("flood")
        assert {log["event"] for log in refusals} == {"heartbeat_monitor.memory.peer_refused"}
        assert all(log["log_level"] == "warning" for log in refusals)
        assert sorted(hub.refused) == ["flood", "malformed", "oversized", "peer id in use",
                                       "spoofed", "wrong type"]  # fmt: skip
        assert all(c.closed and c.closed.startswith("refused: ") for c in bad.values())
        assert [g.key for g in gone] == ["g", "o", "j", "s", "f"]
        assert good.closed is None
        assert "good" in hub
        assert monitor.tracker.last_beat(good.session) == 0.0


def test_message_parsing():
    assert parse_hello('{"type":"hello","peer":"p1"}') == "p1"
    with pytest.raises(PeerError, match="expected 'hello'"):
        parse_hello('{"type":"beat"}')
    with pytest.raises(PeerError, match="'peer' must be a string"):
        parse_hello('{"type":"hello","peer":5}')
    with pytest.raises(PeerError, match="bad peer id"):
        parse_hello('{"type":"hello","peer":""}')
    with pytest.raises(PeerError, match="'type' must be a string"):
        decode_message("{}")


async def test_close_all_ends_every_episode_once_without_notices():
    _, monitor, hub, transport, gone = await _hub()
    async with monitor:
        transport.hub = hub
        a, b = transport.connect("a"), transport.connect("b")
        assert hub.close_all() == 2
        assert hub.close_all() == 0
        assert sorted((g.key, g.reason) for g in gone) == [
            ("a", "server shutdown"),
            ("b", "server shutdown"),
        ]
        assert a.closed == b.closed == "server shutdown"
        assert [m["type"] for m in a.inbox + b.inbox] == ["welcome", "welcome"]
        assert len(monitor) == 0
        assert hub.notify_others
