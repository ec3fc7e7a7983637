"""The datagram codec: what a peer sends, how the server signs, and what it accepts to read.

A datagram is one JSON object, followed (when the server has a key) by a
32-byte HMAC-SHA256 tag of those JSON bytes. :func:`open_datagram` checks, in
order of cost, so that a datagram nobody signed costs one HMAC and no parsing:

1. size: at most ``max_size`` bytes of JSON (``oversized``);
2. with a key, the tag (``spoofed``). Under ``per_peer_keys`` the key depends on
   the peer id, so the id is first *found* (a bounded search for the ``"peer"``
   string, no parsing) and checked again once the JSON is decoded;
3. only then the JSON (``malformed``, ``wrong type``, ``bad peer id``): deeply
   nested or otherwise hostile JSON from someone without the key is never
   decoded.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import time
from typing import Any, Final

from heartbeat_monitor import PeerError, check_peer_id, decode_message

__all__ = ("TAG_SIZE", "chunks", "datagram", "open_datagram", "peer_key", "sign", "wall_clock_ns")

#: Length of the HMAC-SHA256 tag that ends a signed datagram.
TAG_SIZE: Final = 32
#: Server datagrams stay below a typical path MTU (no IP fragmentation).
DATAGRAM_LIMIT: Final = 1200
#: The first ``"peer": "<id>"`` of a payload (its JSON string, escapes and all).
_PEER: Final = re.compile(rb'"peer"\s*:\s*("(?:[^"\\\x00-\x1f]|\\.){1,768}")')


def peer_key(key: bytes, peer: str) -> bytes:
    """The key one peer signs with under ``per_peer_keys``: HMAC-SHA256(key, peer id)."""
    return hmac.new(key, peer.encode(), hashlib.sha256).digest()


def sign(payload: bytes, key: bytes | None) -> bytes:
    """``payload`` followed by its tag (as is without a key)."""
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
    return sign(json.dumps(message, separators=(",", ":")).encode(), key)


def _claimed_peer(payload: bytes) -> str:
    """The peer id a payload names, found without decoding the JSON (``spoofed`` if none)."""
    found = _PEER.search(payload)
    if found is None:
        raise PeerError("spoofed: no peer id to check the HMAC with")
    try:
        peer = json.loads(found.group(1))
    except ValueError:
        raise PeerError("spoofed: no peer id to check the HMAC with") from None
    assert isinstance(peer, str)
    return peer


def open_datagram(
    data: bytes, *, key: bytes | None, per_peer_keys: bool, max_size: int
) -> tuple[dict[str, Any], str, int, bytes | None]:
    """(message, peer id, ts, the key it was signed with) of a datagram, or :class:`PeerError`."""
    payload = data[:-TAG_SIZE] if key is not None else data
    if len(payload) > max_size:
        raise PeerError(f"oversized: {len(payload)} bytes > {max_size}")
    signing_key = key
    claimed = None
    if key is not None:
        if per_peer_keys:
            claimed = _claimed_peer(payload)
            key = peer_key(key, claimed)
        signing_key = key
        expected = hmac.new(key, payload, hashlib.sha256).digest()
        if not hmac.compare_digest(data[-TAG_SIZE:], expected):
            if data[-1:] == b"}":
                raise PeerError("spoofed: unsigned datagram (the server requires an HMAC)")
            raise PeerError("spoofed: bad HMAC")
    message = decode_message(payload, max_size=max_size)
    peer = check_peer_id(message.get("peer"))
    if claimed is not None and peer != claimed:
        raise PeerError(f"spoofed: signed for {claimed!r:.60}, names {peer!r:.60}")
    ts = message.get("ts")
    if not isinstance(ts, int) or isinstance(ts, bool):
        raise PeerError(f"wrong type: 'ts' must be an integer, got {type(ts).__name__}")
    return message, peer, ts, signing_key


def chunks(messages: list[str], limit: int = DATAGRAM_LIMIT) -> list[str]:
    """One message as is; several as JSON arrays of at most ``limit`` bytes."""
    if len(messages) == 1:
        return messages
    result: list[str] = []
    current: list[str] = []
    size = 2
    for message in messages:
        if current and size + len(message) + 1 > limit:
            result.append(f"[{','.join(current)}]")
            current, size = [], 2
        current.append(message)
        size += len(message) + 1
    result.append(f"[{','.join(current)}]")
    return result
