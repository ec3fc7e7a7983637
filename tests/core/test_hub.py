"""The hub on the in-memory transport, on a ManualClock: no real time, both backends."""

from __future__ import annotations

from typing import Any

import pytest
from structlog.testing import capture_logs

from heartbeat_monitor import (
    HeartbeatMonitor,
    ManualClock,
    PeerError,
    PeerGone,
    PeerHub,
    decode_message,
    parse_hello,
)
from heartbeat_monitor.testing import MemoryTransport

pytestmark = pytest.mark.anyio


async def _hub(timeout: float = 1.0) -> Any:  # noqa: ASYNC109 -- the peers' timeout
    clock = ManualClock()
    monitor = HeartbeatMonitor(timeout, resolution=0.1, clock=clock)
    gone: list[PeerGone] = []
    hub = PeerHub(monitor, on_gone=gone.append, max_rate=20, notify="peer_gone")
    transport = MemoryTransport()
    return clock, monitor, hub, transport, gone


async def test_beating_peer_stays_silent_peer_expires_once_and_others_are_told():
    clock, monitor, hub, transport, gone = await _hub()
    async with monitor:
        transport.hub = hub
        a, b = transport.connect("a"), transport.connect("b")
        for _ in range(5):
            clock.advance(0.5)
            assert a.beat()
            await monitor.wait_idle()
        assert [g.key for g in gone] == ["b"]
        assert gone[0].expired
        assert gone[0].reason == "heartbeat timeout"
        assert gone[0].detail.startswith("silent for 1.")
        assert b.closed == gone[0].reason
        assert a.inbox == [{"type": "gone", "peer": "b", "reason": gone[0].reason}]
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
        assert a.link is not None
        assert not hub.close(a.link, "again")
        clock.advance(5)
        await monitor.wait_idle()
        assert [(g.key, g.episode, g.reason) for g in gone] == [("a", 1, "client disconnect")]
        assert not a.beat()
        again = transport.connect("a")
        assert again.link is not None
        assert again.link.episode.number == 2
        assert len(monitor) == 1


async def test_bad_input_is_refused_logged_counted_and_disturbs_no_one():
    clock, monitor, hub, transport, gone = await _hub(timeout=5.0)
    async with monitor:
        transport.hub = hub
        good = transport.connect("good")
        bad = {name: transport.connect(name) for name in ("g", "o", "j", "s", "f")}
        with capture_logs() as logs:
            assert transport.connect("good").link is None  # id in use: refused
            assert not bad["g"].deliver(b"\xff\xfe garbage")
            assert not bad["o"].deliver("x" * 5000)
            assert not bad["j"].deliver('["beat"]')
            assert not bad["s"].deliver('{"type":"beat","peer":"good"}')
            for _ in range(21):
                bad["f"].beat()
            assert bad["f"].closed is None  # one burst over max_rate is no flood
            clock.advance(1.0)
            for _ in range(21):
                bad["f"].beat()  # and a second window in a row: a flood
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
        assert [(g.key, g.reason) for g in gone] == [
            ("g", "refused: malformed"),
            ("o", "refused: oversized"),
            ("j", "refused: wrong type"),
            ("s", "refused: spoofed"),
            ("f", "refused: flood"),
        ]
        assert gone[0].detail == "malformed: not UTF-8 JSON"
        assert good.closed is None
        assert "good" in hub
        assert good.link is not None
        assert monitor.tracker.last_beat(good.link.episode) == 0.0


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
        assert a.inbox == b.inbox == []
        assert len(monitor) == 0


def test_refusal_log_is_paced(monkeypatch: pytest.MonkeyPatch) -> None:
    from types import SimpleNamespace

    from heartbeat_monitor import Refusals

    now = [100.0]
    monkeypatch.setattr(
        "heartbeat_monitor._refusals.time", SimpleNamespace(monotonic=lambda: now[0])
    )
    refusals = Refusals(per_second=3)
    with capture_logs() as logs:
        logged = [refusals.add("tcp", f"malformed: {n}") for n in range(10)]
        now[0] += 0.99
        logged.append(refusals.add("tcp", "malformed: 10"))
        now[0] += 0.02
        logged.append(refusals.add("tcp", "oversized: 11"))
        logged.append(refusals.add("tcp", "malformed: 12"))
    assert logged == [True] * 3 + [False] * 8 + [True] * 2
    assert [(entry["reason"], entry.get("suppressed")) for entry in logs] == [
        ("malformed: 0", None),
        ("malformed: 1", None),
        ("malformed: 2", None),
        ("oversized: 11", 8),
        ("malformed: 12", None),
    ]
    assert refusals == {"malformed": 12, "oversized": 1}
    assert {entry["event"] for entry in logs} == {"heartbeat_monitor.tcp.peer_refused"}
