"""The UDP server: one socket, one receive loop, every peer id in its datagrams.

Wire format: a datagram is one JSON object, followed (when the server has a
key) by a 32-byte HMAC-SHA256 tag of those JSON bytes::

    {"type": "beat" | "bye", "peer": "<id>", "ts": <sender's wall clock, int ns>,
     "epoch": "<the server's boot epoch>"} + tag

Rules, in order (each refusal is logged as ``heartbeat_monitor.udp.peer_refused``
with its reason, counted, and changes no peer's state; UDP gets no answer, so a
forged source address cannot be used to reflect traffic):

1. at most ``max_size`` bytes of JSON (``oversized``), well-formed (``malformed``,
   ``wrong type``);
2. with a key, the tag must verify (``spoofed``): nobody without the key can keep
   a peer alive. With ``per_peer_keys=True`` each peer signs with
   ``peer_key(key, peer_id)`` instead of the shared key, so that peers holding
   their own key cannot beat for one another either;
3. ``ts`` within ``max_skew`` seconds of the server's wall clock (``stale``; this
   wall clock only judges freshness, never liveness) and strictly greater than
   the last accepted ``ts`` of that peer id (``replayed``);
4. ``epoch`` must be this server's boot epoch; a datagram without it, or with an
   earlier boot's, changes nothing and is answered with a signed
   ``{"type": "challenge", "epoch": "<current>"}`` (a beat) or dropped (a bye).

Anti-replay across restarts
===========================

Rule 3 alone stops replays only while the server remembers the last ``ts`` of
each peer, that is, within one run: a restarted server has forgotten it, and a
datagram captured a few seconds before the restart is still fresh (its ``ts``
is within ``max_skew``) and newer than anything remembered (nothing is). A
wall-clock floor ("nothing older than my boot") cannot tell that capture from a
live peer whose clock runs a little behind, and a persisted high-water mark
loses the last writes before a crash and needs a writable disk.

So every run of the server draws a random 64-bit **boot epoch**, and only
datagrams that carry it (inside the HMAC) can open, beat or close an episode.
A peer learns the epoch from the server's answer to its first datagram (one
round trip per peer per server run); a peer holding an old epoch after a
restart is answered the same way and beats again at once. Hence:

* *server restart*: everything signed before it carries another epoch, so no
  captured datagram, however fresh, opens or resurrects a peer; it earns at
  most one challenge (rule 3 still holds for challenged datagrams: each
  captured one is answered once, and a challenge is smaller than the datagram,
  so there is no amplification);
* *peer restart*: the server has kept running, so rule 3 holds as before (the
  restarted peer's ``ts`` comes from its wall clock and keeps rising);
* within one run, rule 3: a replay is not newer than the last accepted ``ts``,
  and that memory is dropped only for ``ts`` older than ``max_skew``, which
  rule 3 refuses as stale anyway.

What remains is inherent to any datagram protocol: a datagram withheld from
the server (never delivered) can be delivered late, once, within ``max_skew``.
Without a key all of this is moot: anyone can forge any datagram.

The first accepted beat of an unknown peer id opens an episode; ``bye`` closes
it; the server tells the others with a ``gone`` datagram and the expired or
closed peer with a ``closed`` one, signed the same way. Several messages for
one peer that are due together travel as one JSON array (below 1,200 bytes).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import socket
import time
from collections.abc import Callable, Mapping
from typing import ClassVar, final

import anyio
import anyio.abc
import structlog

from heartbeat_monitor import (
    MAX_MESSAGE_SIZE,
    Link,
    PeerError,
    PeerHub,
    Reason,
    check_peer_id,
    decode_message,
    encode_message,
    encode_shared,
)

__all__ = ("TAG_SIZE", "UdpTransport", "datagram", "peer_key")

#: Length of the HMAC-SHA256 tag that ends a signed datagram.
TAG_SIZE = 32
_NS = 1_000_000_000
#: Server datagrams stay below a typical path MTU (no IP fragmentation).
_DATAGRAM_LIMIT = 1200

_logger = structlog.get_logger("heartbeat_monitor")


def peer_key(key: bytes, peer: str) -> bytes:
    """The key one peer signs with under ``per_peer_keys``: HMAC-SHA256(key, peer id)."""
    return hmac.new(key, peer.encode(), hashlib.sha256).digest()


def _sign(payload: bytes, key: bytes | None) -> bytes:
    if key is None:
        return payload
    return payload + hmac.new(key, payload, hashlib.sha256).digest()


def wall_clock_ns() -> int:
    """Wall-clock nanoseconds, for the anti-replay ``ts`` of datagrams and nothing else.

    Datagrams cross hosts, whose monotonic clocks share no epoch, so a timestamp's
    freshness can only be judged on the wall clock (within ``max_skew``). Liveness never
    reads it: expiry is decided by the monitor's monotonic clock.
    """
    return time.time_ns()


def datagram(
    peer: str,
    *,
    key: bytes | None = None,
    type: str = "beat",
    ts: int | None = None,
    epoch: str | None = None,
) -> bytes:
    """What a peer sends: a beat (or ``type="bye"``), signed with ``key`` if given.

    ``epoch``: the server's boot epoch, from its last ``challenge`` (without it, the
    server answers with a challenge and nothing else).
    """
    message: dict[str, object] = {
        "type": type,
        "peer": peer,
        "ts": wall_clock_ns() if ts is None else ts,
    }
    if epoch is not None:
        message["epoch"] = epoch
    return _sign(json.dumps(message, separators=(",", ":")).encode(), key)


@final
class _UdpConnection:
    transport: ClassVar[str] = "udp"

    __slots__ = ("address", "key", "server")

    def __init__(self, server: UdpTransport, address: tuple[str, int], key: bytes | None) -> None:
        self.server = server
        self.address = address
        self.key = key

    def send(self, message: Mapping[str, object]) -> None:
        self.server._queue(encode_shared(message), self.key, self.address)

    def close(self, reason: str) -> None:
        self.send({"type": "closed", "reason": reason})


@final
class UdpTransport:
    """A UDP heartbeat server on ``host:port`` (port 0: any free port)."""

    name: ClassVar[str] = "udp"

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        key: bytes | None = None,
        per_peer_keys: bool = False,
        max_skew: float = 30.0,
        max_size: int = MAX_MESSAGE_SIZE,
        max_queue: int = 1024,
        receive_buffer: int = 4 << 20,
        wall_clock: Callable[[], int] = wall_clock_ns,
    ) -> None:
        if per_peer_keys and key is None:
            raise ValueError("per_peer_keys needs a key")
        self.host = host
        self.port = port
        self.key = key
        self.per_peer_keys = per_peer_keys
        self.max_skew = max_skew
        self.max_size = max_size
        self._wall_clock = wall_clock
        self._last_ts: dict[str, int] = {}
        #: peer id -> its link (an ended one is dropped when its peer is next heard of).
        self._links: dict[str, Link] = {}
        #: address -> (signing key, messages not yet sent there)
        self._pending: dict[tuple[str, int], tuple[bytes | None, list[str]]] = {}
        self._max_queue = max_queue
        self.receive_buffer = receive_buffer
        self.dropped = 0
        #: This run's boot epoch (drawn again by each :meth:`serve`): see the module notes.
        self.epoch = ""
        self._challenge = ""
        self._new_epoch()
        self._wake = anyio.Event()

    async def serve(
        self,
        hub: PeerHub,
        *,
        task_status: anyio.abc.TaskStatus[tuple[str, int]] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        self._new_epoch()
        async with (
            await anyio.create_udp_socket(local_host=self.host, local_port=self.port) as sock,
            anyio.create_task_group() as task_group,
        ):
            raw = sock.extra(anyio.abc.SocketAttribute.raw_socket)
            # Beats arrive in bursts: a deep kernel buffer keeps them while the loop is busy.
            raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
            address = sock.extra(anyio.abc.SocketAttribute.local_address)
            assert isinstance(address, tuple)
            host, port = address[0], address[1]
            _logger.info("heartbeat_monitor.udp.listening", host=host, port=port)
            task_group.start_soon(self._write, sock)
            task_status.started((str(host), int(port)))
            try:
                await self._receive_all(hub, sock)
            finally:
                hub.close_all(transport="udp")  # the server is stopping: one gone each

    def _new_epoch(self) -> None:
        self.epoch = secrets.token_hex(8)
        self._challenge = encode_message({"type": "challenge", "epoch": self.epoch})

    async def _receive_all(self, hub: PeerHub, sock: anyio.abc.UDPSocket) -> None:
        async for data, address in sock:
            try:
                self._receive(hub, data, (str(address[0]), int(address[1])))
            except PeerError as exc:
                hub.refuse_input("udp", str(exc), address=f"{address[0]}:{address[1]}")
            except Exception:  # never let one datagram take the server down
                _logger.exception("heartbeat_monitor.udp.datagram_failed")

    def _receive(self, hub: PeerHub, data: bytes, address: tuple[str, int]) -> None:
        key = self.key
        payload, tag = (data[:-TAG_SIZE], data[-TAG_SIZE:]) if key is not None else (data, b"")
        try:
            message = decode_message(payload, max_size=self.max_size)
        except PeerError as exc:
            if key is not None and str(exc).startswith("malformed") and data[-1:] == b"}":
                raise PeerError(
                    "spoofed: unsigned datagram (the server requires an HMAC)"
                ) from None
            raise
        peer = check_peer_id(message.get("peer"))
        ts = message.get("ts")
        if not isinstance(ts, int) or isinstance(ts, bool):
            raise PeerError(f"wrong type: 'ts' must be an integer, got {type(ts).__name__}")
        if key is not None:
            signing_key = peer_key(key, peer) if self.per_peer_keys else key
            expected = hmac.new(signing_key, payload, hashlib.sha256).digest()
            if not hmac.compare_digest(tag, expected):
                raise PeerError(f"spoofed: bad HMAC for peer {peer!r}")
        else:
            signing_key = None
        skew = ts - self._wall_clock()
        if abs(skew) > self.max_skew * _NS:
            raise PeerError(f"stale: timestamp {skew / _NS:+.3f} s from the server's clock")
        last_ts = self._last_ts
        if ts <= last_ts.get(peer, -1):
            raise PeerError(f"replayed: timestamp of peer {peer!r} not newer than the last")
        last_ts[peer] = ts
        if len(last_ts) > 2 * len(hub) + 1024:
            self._forget_old_timestamps()
            self._links = {peer: link for peer, link in self._links.items() if not link.ended}
        kind = message["type"]
        if kind != "beat" and kind != "bye":
            raise PeerError(f"protocol: unknown message type {kind!r:.40}")
        if message.get("epoch") != self.epoch:  # a first contact, or signed in another run
            if kind == "beat":
                self._queue(self._challenge, signing_key, address)
            _logger.debug("heartbeat_monitor.udp.challenged", peer=peer, kind=kind)
            return
        link = self._links.get(peer)
        if link is not None and link.ended:
            del self._links[peer]
            link = None
        if kind == "bye":
            if link is not None:
                hub.close(link, Reason.CLIENT_DISCONNECT)
                del self._links[peer]
        elif link is None:
            link = hub.open(_UdpConnection(self, address, signing_key), peer)
            if link is not None:
                self._links[peer] = link
                timeout = hub.monitor.tracker.timeout
                welcome = {"type": "welcome", "peer": peer, "episode": link.episode.number}
                link.connection.send({**welcome, "timeout": timeout})
        else:
            connection = link.connection
            assert isinstance(connection, _UdpConnection)
            connection.address = address  # authenticated (with a key): follow NAT rebinding
            hub.beat(link)

    def _forget_old_timestamps(self) -> None:
        """Drop replay state that the freshness rule makes useless anyway."""
        horizon = self._wall_clock() - int(self.max_skew * _NS)
        self._last_ts = {peer: ts for peer, ts in self._last_ts.items() if ts >= horizon}

    def _queue(self, message: str, key: bytes | None, address: tuple[str, int]) -> None:
        pending = self._pending
        batch = pending.get(address)
        if batch is None:
            if not pending:
                self._wake.set()  # the writer waits only when nothing is pending
            pending[address] = (key, [message])
        elif len(batch[1]) < self._max_queue:
            batch[1].append(message)
        else:  # this peer does not drain what it is sent: drop, never grow without bound
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 10_000 == 0:
                _logger.warning("heartbeat_monitor.udp.notices_dropped", dropped=self.dropped)

    async def _write(self, sock: anyio.abc.UDPSocket) -> None:
        """Send what is pending; the messages for one address coalesce into JSON arrays."""
        while True:
            pending, self._pending = self._pending, {}
            for (host, port), (key, messages) in pending.items():
                for chunk in _chunks(messages):
                    try:
                        await sock.sendto(_sign(chunk.encode(), key), host, port)
                    except OSError as exc:  # e.g. ICMP port unreachable from a dead peer
                        _logger.debug("heartbeat_monitor.udp.send_failed", error=str(exc))
            if not self._pending:
                await self._wake.wait()
                self._wake = anyio.Event()


def _chunks(messages: list[str], limit: int = _DATAGRAM_LIMIT) -> list[str]:
    """One message as is; several as JSON arrays of at most ``limit`` bytes."""
    if len(messages) == 1:
        return messages
    chunks: list[str] = []
    current: list[str] = []
    size = 2
    for message in messages:
        if current and size + len(message) + 1 > limit:
            chunks.append(f"[{','.join(current)}]")
            current, size = [], 2
        current.append(message)
        size += len(message) + 1
    chunks.append(f"[{','.join(current)}]")
    return chunks
