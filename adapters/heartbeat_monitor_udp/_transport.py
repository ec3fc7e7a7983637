"""The UDP server: one socket, one receive loop, every peer id in its datagrams.

Wire format (:mod:`._datagram`): one JSON object, followed (when the server
has a key) by a 32-byte HMAC-SHA256 tag of those JSON bytes::

    {"type": "beat" | "bye" | "presence_sync", "peer": "<id>", "ts": <sender's wall clock, int ns>,
     "epoch": "<the server's boot epoch>"} + tag

Rules, cheapest first (each refusal is logged, paced, as
``heartbeat_monitor.udp.peer_refused`` with its reason, counted, and changes no
peer's state; UDP gets no answer, so a forged source address cannot be used to
reflect traffic):

0. at most ``max_source_rate`` datagrams a second from one source address, in
   bursts of at most as many (a token bucket, checked before anything is decoded;
   the excess is dropped, counted in :attr:`UdpTransport.gated` and logged as
   ``source_gated`` at most once a second). The hub's own ``max_rate`` per peer
   still applies to what passes: a flooding peer is refused as ``flood``;
1. at most ``max_size`` bytes of JSON (``oversized``);
2. with a key, the tag must verify (``spoofed``) *before* the JSON is decoded:
   nobody without the key can keep a peer alive, nor make the server parse
   anything. With ``per_peer_keys=True`` each peer signs with
   ``peer_key(key, peer_id)`` instead of the shared key, so that peers holding
   their own key cannot beat for one another either;
3. well-formed JSON (``malformed``, ``wrong type``, ``bad peer id``);
4. ``ts`` within ``max_skew`` seconds of the server's wall clock (``stale``; this
   wall clock only judges freshness, never liveness) and strictly greater than
   the last accepted ``ts`` of that peer id (``replayed``);
5. ``epoch`` must be this server's boot epoch; a datagram without it, or with an
   earlier boot's, changes nothing and is answered with a signed
   ``{"type": "challenge", "epoch": "<current>"}`` (a beat) or dropped (a bye).

Floods: the socket is read directly, up to 256 datagrams per wake-up, into a
kernel buffer of ``receive_buffer`` bytes (capped by ``net.core.rmem_max``: the
effective size is logged, with a warning when the cap cut it). What one process
absorbs, and what to do beyond it, is in ``docs/limits.md``.

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

import math
import secrets
import socket
from collections.abc import Callable, Mapping
from typing import ClassVar, Final, final

import anyio
import anyio.abc
import anyio.lowlevel
import structlog

from heartbeat_monitor import (
    MAX_MESSAGE_SIZE,
    Link,
    PeerError,
    PeerHub,
    Reason,
    encode_message,
    encode_shared,
)

from ._datagram import chunks, open_datagram, sign, wall_clock_ns

__all__ = ("UdpTransport",)

_NS = 1_000_000_000
#: Datagrams read per wake-up of the receive loop before the other tasks get a turn.
_BATCH: Final = 256
#: Sources counted per second by the gate; more are let through uncounted (a flood from
#: that many addresses is not one source's flood, and the table must stay bounded).
_MAX_SOURCES: Final = 65_536

_logger = structlog.get_logger("heartbeat_monitor")


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
        max_source_rate: int | None = 1000,
        receive_buffer: int = 4 << 20,
        wall_clock: Callable[[], int] = wall_clock_ns,
    ) -> None:
        if per_peer_keys and key is None:
            raise ValueError("per_peer_keys needs a key")
        if max_source_rate is not None and (
            type(max_source_rate) is not int or max_source_rate < 1
        ):
            raise ValueError(
                f"max_source_rate must be an int >= 1 or None, not {max_source_rate!r}"
            )
        self.host = host
        self.port = port
        self.key = key
        self.per_peer_keys = per_peer_keys
        self.max_skew = max_skew
        self.max_size = max_size
        self.max_source_rate = max_source_rate
        self._wall_clock = wall_clock
        self._last_ts: dict[str, int] = {}
        #: peer id -> its link (an ended one is dropped when its peer is next heard of).
        self._links: dict[str, Link] = {}
        #: address -> (signing key, messages not yet sent there)
        self._pending: dict[tuple[str, int], tuple[bytes | None, list[str]]] = {}
        self._max_queue = max_queue
        self.receive_buffer = receive_buffer
        #: Notices dropped because a peer had ``max_queue`` unsent.
        self.dropped = 0
        #: Datagrams dropped unread: their source sent more than ``max_source_rate`` a second.
        self.gated = 0
        #: source address -> [tokens left, when last refilled] (rule 0)
        self._sources: dict[tuple[str, int], list[float]] = {}
        self._pruned = -math.inf
        self._gate_logged = -math.inf
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
        family, _, _, _, address = (
            await anyio.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
        )[0]
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.setblocking(False)
            # Beats arrive in bursts: a deep kernel buffer keeps them while the loop is busy.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
            sock.bind(address)
            host, port = sock.getsockname()[:2]
            granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) // 2  # Linux doubles
            _logger.info(
                "heartbeat_monitor.udp.listening", host=host, port=port, receive_buffer=granted
            )
            if granted < self.receive_buffer:
                _logger.warning(
                    "heartbeat_monitor.udp.receive_buffer_capped",
                    asked=self.receive_buffer,
                    granted=granted,
                    hint="raise net.core.rmem_max (sysctl) to absorb longer bursts",
                )
            async with anyio.create_task_group() as task_group:
                task_group.start_soon(self._write, sock)
                task_status.started((str(host), int(port)))
                try:
                    await self._receive_all(hub, sock)
                finally:
                    hub.close_all(transport="udp")  # the server is stopping: one gone each
                    task_group.cancel_scope.cancel()

    def _new_epoch(self) -> None:
        self.epoch = secrets.token_hex(8)
        self._challenge = encode_message({"type": "challenge", "epoch": self.epoch})

    async def _receive_all(self, hub: PeerHub, sock: socket.socket) -> None:
        receive = sock.recvfrom
        clock = hub.monitor.clock
        admit = self._admit
        while True:
            await anyio.wait_readable(sock)
            now = clock.now()
            if now - self._pruned >= 1.0:
                self._prune(now)
            for _ in range(_BATCH):
                try:
                    data, address = receive(65_536)
                except BlockingIOError:
                    break
                except OSError:  # an ICMP error for something we sent: nothing to read
                    continue
                if not admit(address, now):
                    continue
                try:
                    self._receive(hub, data, address)
                except PeerError as exc:
                    hub.refuse_input("udp", str(exc), address=f"{address[0]}:{address[1]}")
                except Exception:  # never let one datagram take the server down
                    _logger.exception("heartbeat_monitor.udp.datagram_failed")
            else:
                await anyio.lowlevel.checkpoint()  # more may be waiting: let the others run

    def _admit(self, address: tuple[str, int], now: float) -> bool:
        """Rule 0, a token bucket per source: ``rate`` a second, bursts of up to ``rate``."""
        rate = self.max_source_rate
        if rate is None:
            return True
        bucket = self._sources.get(address)
        if bucket is None:
            if len(self._sources) < _MAX_SOURCES:
                self._sources[address] = [rate - 1.0, now]
            return True
        tokens = min(float(rate), bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if tokens >= 1.0:
            bucket[0] = tokens - 1.0
            return True
        bucket[0] = tokens
        self.gated += 1
        if now - self._gate_logged >= 1.0:
            self._gate_logged = now
            _logger.warning(
                "heartbeat_monitor.udp.source_gated",
                address=f"{address[0]}:{address[1]}",
                max_source_rate=rate,
                gated=self.gated,
            )
        return False

    def _prune(self, now: float) -> None:
        """Forget sources silent for a second (their buckets are full again): bounded memory."""
        self._pruned = now
        self._sources = {a: b for a, b in self._sources.items() if now - b[1] < 1.0}

    def _receive(self, hub: PeerHub, data: bytes, address: tuple[str, int]) -> None:
        message, peer, ts, signing_key = open_datagram(
            data, key=self.key, per_peer_keys=self.per_peer_keys, max_size=self.max_size
        )
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
        if kind != "beat" and kind != "bye" and kind != "presence_sync":
            raise PeerError(f"protocol: unknown message type {kind!r:.40}")
        room = message.get("room")  # presence_sync: a fresh state of this room (or all)
        if room is not None and not isinstance(room, str):
            raise PeerError(f"wrong type: 'room' must be a string, got {type(room).__name__}")
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
            if hub.beat(link) and kind == "presence_sync":
                hub.sync(link, room)

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

    async def _write(self, sock: socket.socket) -> None:
        """Send what is pending; the messages for one address coalesce into JSON arrays."""
        while True:
            pending, self._pending = self._pending, {}
            for address, (key, messages) in pending.items():
                for chunk in chunks(messages):
                    data = sign(chunk.encode(), key)
                    try:
                        try:
                            sock.sendto(data, address)
                        except BlockingIOError:  # the send buffer is full: wait once
                            await anyio.wait_writable(sock)
                            sock.sendto(data, address)
                    except OSError as exc:  # e.g. ICMP port unreachable from a dead peer
                        _logger.debug("heartbeat_monitor.udp.send_failed", error=str(exc))
            if not self._pending:
                await self._wake.wait()
                self._wake = anyio.Event()
