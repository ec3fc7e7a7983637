"""The conformance suite: every transport, real server, real clients, loopback.

Each test takes the ``harness`` fixture (conftest.py), parametrized over every
transport; a new transport passes this file or it does not ship.
"""

from __future__ import annotations

import time

import anyio
import pytest
from structlog.testing import capture_logs

from .conftest import RESOLUTION, SLACK, TIMEOUT, Harness

pytestmark = pytest.mark.anyio


async def test_beating_peers_stay(harness: Harness):
    clients = [await harness.connect(f"p{i}") for i in range(5)]
    start = time.monotonic()
    await anyio.sleep(2.5 * TIMEOUT)  # the point is that time passes: timeouts of beats
    assert time.monotonic() - start >= 2.5 * TIMEOUT
    assert harness.gone == []
    assert harness.count() == len(clients)
    assert all(client.closed is None for client in clients)


async def test_silent_peer_is_ended_in_time_and_others_are_told_once(harness: Harness):
    observer = await harness.connect("observer")
    silent = await harness.connect("silent", beat_every=None)
    await silent.beat()
    last_beat = time.monotonic()
    (gone,) = await harness.wait_gone("silent", within=TIMEOUT + 5)
    elapsed = {e.key: t for e, t in harness.gone}["silent"] - last_beat
    assert TIMEOUT < elapsed <= TIMEOUT + RESOLUTION + SLACK, elapsed
    assert gone.expired
    await silent.wait_for(lambda: silent.ended or silent.closed is not None)
    if silent.closed is not None:
        assert silent.closed == gone.reason  # the peer is told why
    await harness.barrier(observer)
    assert observer.gone_notices("silent") == [
        {"type": "gone", "peer": "silent", "reason": gone.reason}
    ]
    assert len(harness.gone_of("silent")) == 1
    assert harness.tracked("observer")


async def test_clean_close_gives_exactly_one_gone(harness: Harness):
    observer = await harness.connect("observer")
    leaving = await harness.connect("leaving")
    leaving.go_silent()
    await leaving.close()
    (gone,) = await harness.wait_gone("leaving")
    assert not gone.expired
    await harness.barrier(observer)
    assert len(harness.gone_of("leaving")) == 1
    assert len(observer.gone_notices("leaving")) == 1


async def test_abrupt_death_gives_exactly_one_gone(harness: Harness):
    observer = await harness.connect("observer")
    process = await harness.spawn("doomed", 3)
    assert all(harness.tracked(f"doomed{i}") for i in range(3))
    process.kill()  # SIGKILL: no goodbye
    killed_at = time.monotonic()
    for i in range(3):
        await harness.wait_gone(f"doomed{i}", within=TIMEOUT + RESOLUTION + SLACK + 1)
    assert time.monotonic() - killed_at <= TIMEOUT + RESOLUTION + SLACK + 1
    await process.wait()
    await harness.barrier(observer)
    for i in range(3):
        assert len(harness.gone_of(f"doomed{i}")) == 1
        assert len(observer.gone_notices(f"doomed{i}")) == 1


@pytest.mark.slow
@pytest.mark.parametrize("peer_timeout", [1.5])
async def test_a_thousand_concurrent_peers(harness: Harness, peer_timeout: float):
    """One client process holds 1,000 beating peers; killing it gives 1,000 gones, once each.

    The timeout is longer here: while 1,000 peers connect, two shared cores run
    the server, the client process and the handshakes; 0.4 s would measure the
    machine's load, not the adapter.
    """
    started = time.monotonic()
    process = await harness.spawn("crowd", 1000, interval=harness.timeout / 3)
    connect_time = time.monotonic() - started
    assert harness.count() == 1000
    await anyio.sleep(1.2 * harness.timeout)  # longer than a timeout of beating: nobody may go
    assert harness.gone == [], harness.gone[:3]
    process.kill()
    killed_at = time.monotonic()
    await harness.wait_for(lambda: len(harness.gone) == 1000, within=harness.departure_within)
    departed = time.monotonic() - killed_at
    await process.wait()
    await harness.barrier()
    crowd = [str(event.key) for event, _ in harness.gone if str(event.key).startswith("crowd")]
    assert sorted(crowd) == sorted(f"crowd{i}" for i in range(1000))
    assert harness.count() == 0
    print(
        f"\n{harness.name}: 1000 peers connected in {connect_time:.2f} s;"
        f" all 1000 reported gone {departed:.2f} s after SIGKILL"
    )


#: (name, raw data, the start of the logged reason)
BAD_INPUT = [
    ("garbage", b"\xff\xfe\x00garbage\x80", "malformed"),
    ("oversized", b'{"type":"beat","pad":"' + b"x" * 10_000 + b'"}', "oversized"),
    ("not-an-object", b'["beat"]', "wrong type"),
    ("type-not-a-string", b'{"type":5}', "wrong type"),
    ("spoofed-id", b'{"type":"beat","peer":"victim"}', "spoofed"),
]


@pytest.mark.parametrize(("kind", "data", "reason"), BAD_INPUT, ids=[b[0] for b in BAD_INPUT])
async def test_bad_input_is_refused_and_disturbs_no_one(harness: Harness, kind, data, reason):
    victim = await harness.connect("victim")
    bystander = await harness.connect("bystander")
    victim_session = harness.episode("victim")
    assert victim_session is not None
    offender = await harness.connect("offender", beat_every=None)
    offender_session = harness.episode("offender")
    with capture_logs() as logs:
        await offender.send_raw(offender.bad_input(kind, data))
        await harness.wait_for(lambda: harness.refusals() >= 1)
    refusals = [log for log in logs if log["event"].endswith("peer_refused")]
    assert refusals, logs
    assert refusals[0]["event"] == f"heartbeat_monitor.{harness.name}.peer_refused"
    assert refusals[0]["reason"].startswith(reason), refusals[0]
    if harness.refusal[reason] == "close":  # its episode ends with the reason
        (gone,) = await harness.wait_gone("offender")
        assert gone.reason == f"refused: {reason}"
        await offender.wait_for(lambda: offender.ended)
    else:  # the message is dropped; the sender stays as it was
        await harness.barrier()
        assert harness.episode("offender") is offender_session
        assert harness.gone_of("offender") == []
        assert offender.closed is None
    # nobody else was touched: same episode, still tracked, never told to go
    # (that a spoof does not move the victim's last beat is tested on a ManualClock in
    # tests/core/test_hub.py and tests/transports/test_udp.py)
    assert harness.episode("victim") is victim_session
    assert victim.closed is None
    assert harness.tracked("bystander")
    assert harness.gone_of("victim") == []
    assert harness.gone_of("bystander") == []
    assert bystander.closed is None


async def test_flood_is_refused(harness: Harness):
    """Over ``max_rate`` for two one-second windows in a row: a flood (one window is a burst,
    as after a stall of the server, and is no flood)."""
    bystander = await harness.connect("bystander")
    flooder = await harness.connect("flooder", beat_every=None)
    with capture_logs() as logs:
        with anyio.fail_after(10):
            while harness.refusals() < 1 and not flooder.ended:
                try:
                    for _ in range(50):
                        await flooder.beat()
                except Exception:
                    break
                await anyio.sleep(0.01)  # about 5,000 beats a second: far over max_rate
        await harness.wait_for(lambda: harness.refusals() >= 1)
        if harness.refusal["flood"] == "close":
            (gone,) = await harness.wait_gone("flooder")
    (refusal,) = [log for log in logs if log["event"].endswith("peer_refused")]  # logged once
    assert refusal["event"] == f"heartbeat_monitor.{harness.name}.peer_refused"
    assert refusal["reason"].startswith("flood")
    assert harness.refusal["flood"] == "close"
    assert gone.reason == "refused: flood"
    assert harness.tracked("bystander")
    assert harness.gone_of("bystander") == []
    assert bystander.closed is None


async def test_reconnect_is_a_new_episode(harness: Harness):
    first = await harness.connect("again")
    first_episode = harness.episode("again")
    assert first_episode is not None
    first.go_silent()
    await first.close()
    await harness.wait_gone("again")
    second = await harness.connect("again")
    second_episode = harness.episode("again")
    assert second_episode is not None
    assert second_episode is not first_episode
    second.go_silent()
    (first_gone, second_gone) = await harness.wait_gone("again", count=2, within=TIMEOUT + 5)
    assert not first_gone.expired
    assert second_gone.expired
    assert harness.episode("again") is None


async def test_a_live_peer_id_cannot_be_taken_over(harness: Harness):
    """Stream transports refuse a second connection for a live id outright; where peers
    prove their id (UDP's HMAC, Socket.IO's ``identify``), the thief is whoever lacks the key."""
    owner = await harness.connect("owner")
    session = harness.episode("owner")
    thief = harness.client("owner")
    thief.key = None
    with capture_logs() as logs:
        await thief.start(harness.task_group, wait=False)
        await harness.wait_for(lambda: harness.refusals() >= 1)
    assert not thief.welcomed
    assert any(log["event"].endswith("peer_refused") for log in logs)
    assert harness.episode("owner") is session
    assert owner.closed is None
