"""The cluster's timing options: one frozen dataclass, validated once."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Self, final

from heartbeat_monitor import ConfigurationError

__all__ = ("ClusterOptions",)


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigurationError(f"{name} must be seconds, not {value!r}")
    if not (math.isfinite(value) and value > 0):
        raise ConfigurationError(f"{name} must be > 0, not {value!r}")
    return float(value)


@final
@dataclass(frozen=True, slots=True, kw_only=True)
class ClusterOptions:
    """How a :class:`RedisCluster` node times itself and the others (seconds)."""

    #: A node whose counter stands still this long is dead; its peers are announced.
    node_timeout: float = 10.0
    #: One Redis round trip this often (at most ``node_timeout / 3``).
    sync_interval: float = 1.0
    #: Every Redis call is cut off after this long.
    op_timeout: float = 0.5
    #: How long the lease on a dead node's peers lasts without renewal.
    lease: float = 10.0
    #: Disconnect this node's peers after ``fence_after`` without a good sync.
    fence: bool = True

    @classmethod
    def build(
        cls,
        *,
        node_timeout: float = 10.0,
        sync_interval: float | None = None,
        op_timeout: float | None = None,
        lease: float | None = None,
        fence: bool = True,
    ) -> Self:
        """Validate the options and fill in the defaults that depend on the others."""
        node_timeout = _seconds("node_timeout", node_timeout)
        if sync_interval is None:
            sync_interval = min(node_timeout / 5, 1.0)
        sync_interval = _seconds("sync_interval", sync_interval)
        if sync_interval > node_timeout / 3:
            raise ConfigurationError(
                f"sync_interval must be > 0 and at most node_timeout / 3, not {sync_interval!r}"
            )
        if op_timeout is None:
            op_timeout = min(max(sync_interval, 0.5), node_timeout / 2)
        op_timeout = _seconds("op_timeout", op_timeout)
        lease = _seconds("lease", max(node_timeout, 5 * op_timeout) if lease is None else lease)
        return cls(
            node_timeout=node_timeout,
            sync_interval=sync_interval,
            op_timeout=op_timeout,
            lease=lease,
            fence=bool(fence),
        )

    @property
    def fence_after(self) -> float:
        """Without a good sync for this long, a node can no longer know it is a member.

        The others declare it dead ``node_timeout`` after its counter last moved,
        which is after its last good sync began: fencing ``sync_interval`` before
        that leaves the disconnects time to go out.
        """
        return self.node_timeout - self.sync_interval
