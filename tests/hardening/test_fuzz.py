"""Fuzzing every transport's decoder: whatever a peer sends ends as a beat or a refusal of it.

For each transport a real server runs on loopback (in a thread of its own, a
blocking portal, so that hypothesis can drive plain test functions) with two
bystanders on the same hub. Each example is one connection (one source for
UDP) sending a sequence of arbitrary messages: bytes, text, JSON of any shape,
JSON nested thousands deep, oversized messages, forged ids, Socket.IO packets
and binary attachments, in any order. Then the client closes and waits until
the server has closed its side too. Whatever happened, these must hold:

* no exception escapes: nothing is logged at error level (structlog or the
  standard library's ``logging``, where python-socketio and engine.io log) and
  the server keeps serving;
* the sender's episode, if it had one, ended with a reason of the vocabulary
  (``client disconnect``, ``transport close``/``error`` or ``refused: <kind>``),
  and each refusal was counted by its kind;
* the bystanders still have their episode, were told nothing but departures,
  and no one else's state changed;
* memory is bounded per connection: nothing stays buffered for a closed one
  (python-socketio's pending binary packets included).

The in-memory hub (the JSON decoder the stream transports share) takes many
more examples, as it needs no sockets.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Any

import anyio
import anyio.abc
import pytest
from anyio.from_thread import BlockingPortal, start_blocking_portal
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from heartbeat_monitor import HeartbeatMonitor, ManualClock, PeerHub, Reason, Transport
from heartbeat_monitor.testing import MemoryClient

pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

UDP_KEY = b"fuzz key"

# -- what a peer may send ------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
_messages = st.one_of(
    st.binary(max_size=300),
    st.text(max_size=200),
    _json.map(json.dumps),
    st.dictionaries(
        st.sampled_from(["type", "peer", "ts", "epoch", "x"]),
        st.one_of(st.sampled_from(["beat", "hello", "bye", "fz", "victim"]), _json),
        max_size=5,
    ).map(json.dumps),
    # nested deep enough to exhaust json's recursion, yet within 4,096 bytes (hypothesis
    # raises the recursion limit by 2,000 while it runs: unclosed brackets go deeper)
    st.integers(500, 2030).map(lambda depth: '{"x":' + "[" * depth + "]" * depth + "}"),
    st.integers(3500, 4080).map(lambda depth: "[" * depth),
    st.integers(3000, 9000).map(lambda size: '{"type":"beat","pad":"' + "x" * size + '"}'),
    st.sampled_from(
        [
            '{"type":"beat"}',
            '{"type":"hello","peer":"fz"}',
            '{"type":"beat","peer":"victim"}',
            '{"type":"hello","peer":"victim"}',
        ]
    ),
)
_sequences = st.lists(_messages, max_size=12)
#: A connection's messages: the hello first or not (then the first message is taken for it).
_exchanges = st.tuples(st.booleans(), _sequences).map(
    lambda pair: (['{"type":"hello","peer":"fz"}'] if pair[0] else []) + pair[1]
)
#: How a fuzzing connection may end, besides a refusal (UDP has no connection to end: the
#: harness ends the peer itself, with ``server disconnect``).
_ALLOWED = {
    Reason.CLIENT_DISCONNECT,
    Reason.TRANSPORT_CLOSE,
    Reason.TRANSPORT_ERROR,
    Reason.SERVER_DISCONNECT,
}


def _as_bytes(data: str | bytes) -> bytes:
    return data.encode() if isinstance(data, str) else data


@contextmanager
def _no_errors(caplog: pytest.LogCaptureFixture) -> Iterator[list[Any]]:
    """structlog's and the standard library's logs: nothing at error level or above."""
    caplog.clear()
    with caplog.at_level(logging.ERROR), capture_logs() as logs:
        yield logs
    errors = [log for log in logs if log["log_level"] in ("error", "critical", "exception")]
    errors = [log for log in errors if not log["event"].endswith("accept_failed")]
    assert errors == [], errors
    assert [record.getMessage() for record in caplog.records] == []


def _check_bystanders(hub: PeerHub, bystanders: Sequence[MemoryClient]) -> None:
    for bystander in bystanders:
        assert bystander.closed is None
        assert bystander.link is not None
        assert not bystander.link.ended
        for message in bystander.inbox:
            assert message["type"] == "gone", message
            assert message["peer"] not in {b.peer for b in bystanders}


# -- the JSON decoder of the stream transports, in memory ------------------------------------


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(sequence=_sequences)
def test_the_hub_turns_any_message_into_a_beat_or_a_refusal(sequence, caplog):
    hub = PeerHub(HeartbeatMonitor(10, clock=ManualClock()))
    bystanders = [MemoryClient(hub, "a"), MemoryClient(hub, "b")]
    offender = MemoryClient(hub, "fz")
    assert offender.link is not None
    with _no_errors(caplog):
        for data in sequence:
            refused = sum(hub.refused.values())
            if offender.deliver(data):
                assert sum(hub.refused.values()) == refused  # a beat (counted or rate-limited)
                continue
            assert sum(hub.refused.values()) == refused + 1
            (kind,) = [k for k, n in hub.refused.items() if n]
            assert offender.link.episode.reason == f"refused: {kind}"
            break
    _check_bystanders(hub, bystanders)


# -- real servers on loopback, driven from this thread -----------------------------------------


@dataclass
class Served:
    portal: BlockingPortal
    hub: PeerHub
    host: str
    port: int
    bystanders: list[MemoryClient]
    transport: Any


@contextmanager
def _served(make: Callable[[], Transport]) -> Iterator[Served]:
    """A server made by ``make`` (in the portal's thread) on a hub with two bystanders."""
    with start_blocking_portal("asyncio") as portal:

        async def build() -> tuple[HeartbeatMonitor, PeerHub]:
            monitor = HeartbeatMonitor(10, clock=ManualClock())
            return monitor, PeerHub(monitor)

        monitor, hub = portal.call(build)
        with portal.wrap_async_context_manager(monitor):
            transport: Transport = portal.call(make)
            future, (host, port) = portal.start_task(transport.serve, hub)

            async def bystanders() -> list[MemoryClient]:
                return [MemoryClient(hub, "a"), MemoryClient(hub, "b")]

            try:
                yield Served(portal, hub, host, port, portal.call(bystanders), transport)
            finally:
                future.cancel()


async def _ended(hub: PeerHub, peer: str) -> None:
    """The server has taken the end of ``peer``'s connection (bounded wait, no event to await)."""
    with anyio.fail_after(10):
        while peer in hub:  # noqa: ASYNC110 -- the hub has no event for it
            await anyio.sleep(0.002)


def _settle(served: Served, before: dict[str, int], peer: str) -> None:
    """After a connection ended: its episode (if any) ended as the vocabulary says."""
    hub = served.hub
    served.portal.call(_ended, hub, peer)
    gone = [n for n in served.bystanders[0].inbox if n.get("peer") == peer]
    for notice in gone:
        reason = str(notice["reason"])
        if reason.startswith("refused: "):
            kind = reason.removeprefix("refused: ")
            assert hub.refused[kind] > before.get(kind, 0), (reason, dict(hub.refused))
        else:
            assert reason in _ALLOWED, reason
    served.bystanders[0].inbox.clear()
    served.bystanders[1].inbox.clear()
    _check_bystanders(hub, served.bystanders)


async def _tcp_exchange(host: str, port: int, sequence: list[str | bytes]) -> None:
    async with await anyio.connect_tcp(host, port) as stream:
        try:
            for data in sequence:
                await stream.send(_as_bytes(data) + b"\n")
            await stream.send_eof()
        except (anyio.BrokenResourceError, OSError):
            pass  # refused and closed while we were still sending
        with anyio.fail_after(10):  # the server closes its side in turn
            try:
                while True:
                    await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                pass


async def _websocket_exchange(host: str, port: int, sequence: list[str | bytes]) -> None:
    from websockets.asyncio.client import connect
    from websockets.exceptions import ConnectionClosed

    async with connect(f"ws://{host}:{port}", max_size=None, compression=None) as ws:
        try:
            for data in sequence:
                await ws.send(data)
        except ConnectionClosed:
            pass
    with anyio.fail_after(10):
        await ws.wait_closed()


@pytest.fixture(scope="module")
def tcp_server() -> Iterator[Served]:
    from heartbeat_monitor_tcp import TcpTransport

    with _served(TcpTransport) as served:
        yield served


@pytest.fixture(scope="module")
def websocket_server() -> Iterator[Served]:
    from heartbeat_monitor_websockets import WebSocketTransport

    with _served(WebSocketTransport) as served:
        yield served


_fuzz = settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


@_fuzz
@given(sequence=_exchanges)
def test_fuzz_tcp(tcp_server, sequence, caplog):
    before = dict(tcp_server.hub.refused)
    with _no_errors(caplog):
        tcp_server.portal.call(_tcp_exchange, tcp_server.host, tcp_server.port, sequence)
        _settle(tcp_server, before, "fz")


@_fuzz
@given(sequence=_exchanges)
def test_fuzz_websocket(websocket_server, sequence, caplog):
    before = dict(websocket_server.hub.refused)
    with _no_errors(caplog):
        websocket_server.portal.call(
            _websocket_exchange, websocket_server.host, websocket_server.port, sequence
        )
        _settle(websocket_server, before, "fz")


# -- UDP: datagrams from one source --------------------------------------------------------

_datagrams = st.lists(
    st.one_of(
        st.tuples(st.just("raw"), st.binary(max_size=300)),
        st.tuples(st.just("signed"), _messages.map(_as_bytes)),  # a key holder's garbage
        st.tuples(st.sampled_from(["beat", "bye", "stale", "no epoch", "wrong key"]), st.none()),
    ),
    max_size=12,
)


def _udp_datagram(kind: str, data: bytes | None, epoch: str) -> bytes:
    import hashlib
    import hmac

    from heartbeat_monitor_udp import datagram

    if kind == "raw":
        assert data is not None
        return data
    if kind == "signed":
        assert data is not None
        return data + hmac.new(UDP_KEY, data, hashlib.sha256).digest()
    if kind == "stale":
        return datagram("fz", key=UDP_KEY, ts=1, epoch=epoch)
    if kind == "no epoch":
        return datagram("fz", key=UDP_KEY)
    if kind == "wrong key":
        return datagram("fz", key=b"not the key", epoch=epoch)
    return datagram("fz", key=UDP_KEY, type=kind, epoch=epoch)


async def _udp_exchange(served: Served, datagrams: list[bytes], probe: str) -> None:
    from heartbeat_monitor_udp import datagram

    async with await anyio.create_connected_udp_socket(served.host, served.port) as sock:
        for data in datagrams:
            await sock.send(data)
        # the same source, so it is read after them: once it is in, they have been read
        await sock.send(datagram(probe, key=UDP_KEY, epoch=served.transport.epoch))
        with anyio.fail_after(10):
            while probe not in served.hub:  # noqa: ASYNC110 -- the hub has no event for it
                await anyio.sleep(0.002)
    served.hub.end(probe)
    served.hub.end("fz")


@pytest.fixture(scope="module")
def udp_server() -> Iterator[Served]:
    from heartbeat_monitor_udp import UdpTransport

    with _served(partial(UdpTransport, key=UDP_KEY)) as served:
        yield served


@_fuzz
@given(sequence=_datagrams)
def test_fuzz_udp(udp_server, sequence, caplog):
    served = udp_server
    epoch = served.transport.epoch
    datagrams = [_udp_datagram(kind, data, epoch) for kind, data in sequence]
    before = dict(served.hub.refused)
    with _no_errors(caplog):
        served.portal.call(_udp_exchange, served, datagrams, "probe")
        _settle(served, before, "fz")


# -- Socket.IO: engine.io frames on one connection -----------------------------------------

_packets = st.builds(
    lambda kind, count, namespace, ack, payload: f"4{kind}{count}{namespace}{ack}{payload}",
    st.sampled_from("0123456789"),
    st.one_of(st.just(""), st.integers(0, 10**11).map(lambda n: f"{n}-")),
    st.sampled_from(["", "/", "/elsewhere,"]),
    st.one_of(st.just(""), st.integers(0, 10**6).map(str)),
    st.one_of(_messages.filter(lambda m: isinstance(m, str)), _json.map(json.dumps)),
)
_frames = st.lists(
    st.one_of(
        _packets,
        st.builds(lambda payload: '42["heartbeat",' + payload + "]", _json.map(json.dumps)),
        st.builds(
            lambda n: f'45{n}-["heartbeat",{{"_placeholder":true,"num":0}}]', st.integers(0, 12)
        ),
        st.integers(0, 300_000).map(lambda size: b"\x00" * size),  # a binary attachment
        _messages,
    ),
    max_size=10,
)


@pytest.fixture(scope="module")
def socketio_server() -> Iterator[Served]:
    from heartbeat_monitor_socketio import SocketIOTransport

    with _served(partial(SocketIOTransport, "127.0.0.1", 0)) as served:
        yield served


async def _socketio_exchange(served: Served, frames: list[str | bytes]) -> str:
    from tests.socketio.conftest import RawClient

    url = f"http://{served.host}:{served.port}"
    raw = await RawClient.open(url)
    sid = await raw.connect()
    try:
        for frame in frames:
            await raw.send(frame)
    except Exception:  # refused and closed while we were still sending
        pass
    await raw.close()
    await _ended(served.hub, sid)
    return sid


@_fuzz
@given(frames=_frames)
def test_fuzz_socketio(socketio_server, frames, caplog):
    served = socketio_server
    before = dict(served.hub.refused)
    with _no_errors(caplog):
        sid = served.portal.call(_socketio_exchange, served, frames)
        _settle(served, before, sid)
    assert served.transport.adapter.sio._binary_packet == {}  # nothing left buffered
