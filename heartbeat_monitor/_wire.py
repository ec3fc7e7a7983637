"""The JSON wire codec of the stream and datagram transports (websockets, TCP, UDP).

Messages are JSON objects with a string ``type``::

    peer -> server   {"type": "hello", "peer": "<id>"}       first message: opens
                     {"type": "beat"}                          any later message beats
                     {"type": "presence_sync"[, "room": r]}    a fresh presence_state, please
    server -> peer   {"type": "welcome", "peer": ..., "episode": n, "timeout": s}
                     {"type": "presence_state", "room", "seq", "peers", "count"}
                     {"type": "presence_diff", "room", "seq", "joins", "leaves", ...}
                     {"type": "gone", "peer": ..., "reason": ...}   (notify="peer_gone")
                     {"type": "closed", "reason": ...}         (where no close frame exists)

Decoding never raises anything but :class:`~heartbeat_monitor.PeerError`, whose
message starts with the refusal's kind (``oversized``, ``malformed``, ``wrong
type``, ``bad peer id``, ``protocol``): whatever a peer sends, the server gets a
clear verdict about that peer, never a crash.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ._errors import PeerError

__all__ = (
    "MAX_MESSAGE_SIZE",
    "MAX_PEER_ID",
    "check_peer_id",
    "decode_message",
    "encode_message",
    "encode_shared",
    "parse_hello",
)

#: Largest message a peer may send, in bytes (transports may lower or raise it).
MAX_MESSAGE_SIZE = 4096
#: Longest peer id, in characters.
MAX_PEER_ID = 128


def encode_message(message: Mapping[str, object]) -> str:
    """One compact JSON text, as every transport sends it."""
    return json.dumps(message, separators=(",", ":"))


_last_encoded: tuple[object, str] = (None, "")


def encode_shared(message: Mapping[str, object]) -> str:
    """:func:`encode_message`, encoded once when one message object goes to many peers.

    A broadcast hands the same object to each connection's ``send`` in turn;
    remembering the last one turns N encodings into one.
    """
    global _last_encoded
    last = _last_encoded
    if last[0] is message:
        return last[1]
    data = encode_message(message)
    _last_encoded = (message, data)
    return data


def decode_message(data: bytes | str, *, max_size: int = MAX_MESSAGE_SIZE) -> dict[str, Any]:
    """Decode one message from a peer; :class:`PeerError` says clearly what is wrong."""
    if len(data) > max_size:
        raise PeerError(f"oversized: {len(data)} bytes > {max_size}")
    try:
        message = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise PeerError("malformed: not UTF-8 JSON") from None
    except RecursionError:
        # json's C decoder recurses once per nesting level: a few KB of "[[[[..." is enough.
        raise PeerError("malformed: JSON nested too deeply") from None
    if not isinstance(message, dict):
        raise PeerError(f"wrong type: expected a JSON object, got {type(message).__name__}")
    kind = message.get("type")
    if not isinstance(kind, str):
        raise PeerError(f"wrong type: 'type' must be a string, got {type(kind).__name__}")
    return message


def check_peer_id(peer: object) -> str:
    """A peer id is a non-empty printable string of at most :data:`MAX_PEER_ID` characters."""
    if not isinstance(peer, str):
        raise PeerError(f"wrong type: 'peer' must be a string, got {type(peer).__name__}")
    if not 0 < len(peer) <= MAX_PEER_ID or not peer.isprintable():
        raise PeerError(f"bad peer id: 1-{MAX_PEER_ID} printable characters expected")
    return peer


def parse_hello(data: bytes | str, *, max_size: int = MAX_MESSAGE_SIZE) -> str:
    """The peer id from a connection's first message (``{"type": "hello", "peer": id}``)."""
    message = decode_message(data, max_size=max_size)
    if message["type"] != "hello":
        raise PeerError(f"protocol: expected 'hello' first, got {message['type']!r:.40}")
    return check_peer_id(message.get("peer"))
