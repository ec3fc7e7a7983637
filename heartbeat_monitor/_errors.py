"""Errors: misuse by the caller is told apart from bad behaviour by a peer.

After h11's ``LocalProtocolError`` / ``RemoteProtocolError``. A peer's bad input
is never raised into the server that embeds us: adapters log it, count it and
answer it; :class:`PeerError` exists so that they can say what was wrong.
"""

from __future__ import annotations

__all__ = ("ConfigurationError", "HeartbeatMonitorError", "PeerError")


class HeartbeatMonitorError(Exception):
    """Base class of every error this package raises."""


class ConfigurationError(HeartbeatMonitorError, ValueError):
    """The caller gave a bad argument (a negative timeout, a resolution larger than it, ...)."""


class PeerError(HeartbeatMonitorError):
    """A peer sent something it should not have (malformed, spoofed, too large, too often)."""
