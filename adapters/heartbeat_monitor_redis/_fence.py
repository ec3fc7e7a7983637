"""When a node must stop claiming its peers: too long without a good sync.

The others declare a node dead ``node_timeout`` after its counter last moved in
``<p>nodes``, which is no earlier than the start of its last good sync. So once
``node_timeout - sync_interval`` has passed since that start (``fence_after``),
the node can no longer know that it is still a member, and it fences itself
(see :mod:`._cluster`): a timer of its own, so that a hanging sync cannot delay
it, and a check before every sync, so that a process that was frozen fences
before it does anything else. Time is this node's monotonic clock only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import final

import anyio

__all__ = ("Fence",)


@final
class Fence:
    """The fencing deadline of one node: ``synced`` at each good sync, ``fence`` when late."""

    __slots__ = ("after", "enabled", "fence", "last_good", "sync_interval")

    def __init__(
        self,
        *,
        enabled: bool,
        after: float,
        sync_interval: float,
        fence: Callable[[str], None],
    ) -> None:
        self.enabled = enabled
        self.after = after
        self.sync_interval = sync_interval
        #: Called (once per fence) with why: the node stops claiming its peers.
        self.fence = fence
        #: When the last good sync began (``None``: nothing of ours is in Redis to fence).
        self.last_good: float | None = None

    def synced(self, started: float) -> None:
        """A sync that began at ``started`` (``time.monotonic()``) succeeded."""
        self.last_good = started

    def disarm(self) -> None:
        """Nothing of this node's is in Redis now (it fenced, or it has not joined yet)."""
        self.last_good = None

    def check(self) -> None:
        """Fence now if the deadline has passed."""
        last = self.last_good
        if not self.enabled or last is None:
            return
        silent = time.monotonic() - last
        if silent >= self.after:
            self.last_good = None
            self.fence(f"no good sync for {silent:.3f} s")

    async def run(self) -> None:
        """Fence on time, even while a sync hangs (each is bounded by its op_timeout)."""
        while True:
            last = self.last_good
            if last is None:
                await anyio.sleep(self.sync_interval)
                continue
            delay = last + self.after - time.monotonic()
            if delay > 0:
                await anyio.sleep(delay)
            else:
                self.check()
