"""The Redis side of the cluster: key names, Lua scripts, the peer codec, counters.

Keys (``prefix`` is ``heartbeat_monitor:<namespace>:`` by default):

========================  ======  ==================================================
``<p>nodes``              hash    node id -> beat counter (``HINCRBY`` once per sync)
``<p>presence:<node>``    hash    peer (JSON) -> the rooms it is in (JSON list)
``<p>slots:<node>``       hash    [room, conn] (JSON) -> [peer, meta] (JSON): its roster
``<p>changes:<node>``     stream  that node's presence changes (the others' copies)
``<p>lease:<node>``       string  who ends that node's peers: ``SET NX PX``
``<p>announced:<node>``   set     peers (JSON) of that node already announced
``<p>dead:<node>``        string  another node ended that node (it rejoins if alive)
``<p>left:<node>``        string  that node left cleanly (its peers were told)
========================  ======  ==================================================

The scripts read keys they are not given (other nodes' presence), so they need one
Redis server (or Sentinel), not Redis Cluster.
"""

from __future__ import annotations

import json
from collections.abc import Hashable
from typing import Any, Final, final

__all__ = (
    "CHUNK",
    "END",
    "LEASE",
    "LEAVE",
    "MARKER_TTL",
    "ClusterStats",
    "Keys",
    "decode",
    "encode",
    "frozen",
    "text",
)

#: Peers per script call, presence write or change entry (the lease is renewed between chunks).
CHUNK: Final = 500
#: How long the announced set and the dead / left markers of a node are kept (seconds).
MARKER_TTL: Final = 3600

# KEYS: nodes hash, own presence. ARGV: presence key prefix, own node, peer.
LEAVE: Final = """
redis.call('HDEL', KEYS[2], ARGV[3])
for _, node in ipairs(redis.call('HKEYS', KEYS[1])) do
  if node ~= ARGV[2] and redis.call('HEXISTS', ARGV[1] .. node, ARGV[3]) == 1 then
    return 0
  end
end
return 1
"""

# KEYS: nodes hash, the ended node's presence, its announced set.
# ARGV: presence key prefix, the ended node, marker ttl, peers...
# Returns the peers newly marked announced (present on no other node, not marked before).
END: Final = """
local nodes = redis.call('HKEYS', KEYS[1])
local out = {}
for i = 4, #ARGV do
  local peer = ARGV[i]
  redis.call('HDEL', KEYS[2], peer)
  local elsewhere = false
  for _, node in ipairs(nodes) do
    if node ~= ARGV[2] and redis.call('HEXISTS', ARGV[1] .. node, peer) == 1 then
      elsewhere = true
      break
    end
  end
  if not elsewhere and redis.call('SADD', KEYS[3], peer) == 1 then
    out[#out + 1] = peer
  end
end
redis.call('EXPIRE', KEYS[3], ARGV[3])
return out
"""

# KEYS: lease. ARGV: holder, ttl ms (0: release).
LEASE: Final = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[2] == '0' then redis.call('DEL', KEYS[1]) else redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 1
"""


def encode(peer: Hashable) -> str:
    """A peer id as a presence field (JSON; tuples become lists)."""
    return json.dumps(peer, separators=(",", ":"), sort_keys=True)


def frozen(value: Any) -> Hashable:
    """Decoded JSON made hashable again: lists become tuples, objects sorted pairs."""
    if isinstance(value, list):
        return tuple(frozen(item) for item in value)
    if isinstance(value, dict):
        return tuple(sorted((key, frozen(item)) for key, item in value.items()))
    return value  # type: ignore[no-any-return]


def decode(field: bytes | str) -> Hashable:
    """The peer id of a presence field (``ValueError`` if it is not JSON)."""
    return frozen(json.loads(field))


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


@final
class ClusterStats:
    """Counters of the cluster side of one node (plain ints)."""

    __slots__ = (
        "commands",
        "fences",
        "full_reads",
        "nodes_ended",
        "peers_announced",
        "resyncs",
        "sync_failures",
        "syncs",
    )

    def __init__(self) -> None:
        #: Good syncs (one pipeline each), and failed ones.
        self.syncs = 0
        self.sync_failures = 0
        #: Redis commands this node sent for presence and liveness (pub/sub not included).
        self.commands = 0
        #: Full presence rewrites (start, after an outage, after being fenced).
        self.resyncs = 0
        #: Nodes this node ended (it held the lease), and the peers it announced (its own
        #: fenced peers included).
        self.nodes_ended = 0
        self.peers_announced = 0
        #: Times this node fenced itself (cut off from Redis too long, or declared dead).
        self.fences = 0
        #: Other nodes' presence read in full (first sight, or a gap in their changes).
        self.full_reads = 0

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__slots__)
        return f"ClusterStats({fields})"


@final
class Keys:
    """The Redis key names of one cluster (see the module's table)."""

    __slots__ = ("changes_prefix", "nodes", "prefix", "presence_prefix", "slots_prefix")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.nodes = prefix + "nodes"
        self.presence_prefix = prefix + "presence:"
        self.changes_prefix = prefix + "changes:"
        self.slots_prefix = prefix + "slots:"

    def presence(self, node: str) -> str:
        return self.presence_prefix + node

    def slots(self, node: str) -> str:
        return self.slots_prefix + node

    def changes(self, node: str) -> str:
        return self.changes_prefix + node

    def lease(self, node: str) -> str:
        return f"{self.prefix}lease:{node}"

    def announced(self, node: str) -> str:
        return f"{self.prefix}announced:{node}"

    def dead(self, node: str) -> str:
        return f"{self.prefix}dead:{node}"

    def left(self, node: str) -> str:
        return f"{self.prefix}left:{node}"
