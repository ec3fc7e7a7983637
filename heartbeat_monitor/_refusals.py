"""Refusals of bad input: counted by kind, logged at a bounded pace.

A refusal's reason starts with its kind (``oversized: 5000 bytes > 4096``): the
kind is counted, the whole reason is logged as
``heartbeat_monitor.<transport>.peer_refused``. A flood of bad input is a few
lines a second, the next line saying how many were left out.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any, final

import structlog

__all__ = ("Refusals", "kind_of")

_logger = structlog.get_logger("heartbeat_monitor")


def kind_of(reason: str) -> str:
    """The kind of a refusal reason: the part before the first colon."""
    return reason.partition(":")[0]


@final
class Refusals(Counter[str]):
    """Refusals so far, by kind (a ``Counter``); :meth:`add` counts and logs one, paced.

    At most ``per_second`` lines a second are logged (real monotonic time: this
    paces the log, never liveness); a line left out is counted and the next
    line carries ``suppressed=<count>``.
    """

    def __init__(self, per_second: int = 10) -> None:
        super().__init__()
        self.per_second = per_second
        self._window = -1.0
        self._logged = 0
        self._suppressed = 0

    def add(self, transport: str, reason: str, **fields: Any) -> bool:
        """Count ``reason`` by its kind and log it unless this second's lines are spent."""
        self[kind_of(reason)] += 1
        now = time.monotonic()
        if now - self._window >= 1.0:
            self._window = now
            self._logged = 0
        if self._logged >= self.per_second:
            self._suppressed += 1
            return False
        self._logged += 1
        if self._suppressed:
            fields["suppressed"] = self._suppressed
            self._suppressed = 0
        _logger.warning(f"heartbeat_monitor.{transport}.peer_refused", reason=reason, **fields)
        return True
