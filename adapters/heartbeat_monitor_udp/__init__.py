"""UDP transport for heartbeat_monitor: signed datagram heartbeats, as cluster daemons do.

``UdpTransport(host, port, key=b"...").serve(hub)``; ``datagram(...)`` builds
what a peer sends. Install with the ``udp`` extra.
"""

from __future__ import annotations

from ._transport import TAG_SIZE, UdpTransport, datagram, peer_key

__all__ = ("TAG_SIZE", "UdpTransport", "datagram", "peer_key")
