"""UDP transport for heartbeat_monitor: signed datagram heartbeats, as cluster daemons do.

``UdpTransport(host, port, key=b"...").serve(hub)``; ``datagram(...)`` builds
what a peer sends. Install with the ``udp`` extra.
"""

from __future__ import annotations

from ._datagram import TAG_SIZE, datagram, peer_key
from ._transport import UdpTransport

__all__ = ("TAG_SIZE", "UdpTransport", "datagram", "peer_key")
