"""The monitor alone, no network: track peers, beat them, hear who expired.

    pip install aio-heartbeat-monitor
    python examples/monitor.py

alice beats every 0.25 s; bob never does and expires once his 1 s timeout has
passed (never before it, at most one resolution after it).
"""

from __future__ import annotations

import anyio

from heartbeat_monitor import Expired, HeartbeatMonitor


# --8<-- [start:main]
async def main() -> None:
    bob_gone = anyio.Event()

    def forget(event: Expired) -> None:  # plain or async; runs once per expiry
        print(f"{event.key} expired {event.late_by:.3f} s after its deadline", flush=True)
        bob_gone.set()

    async with HeartbeatMonitor(timeout=1.0, on_expire=forget) as monitor:
        monitor.track("alice")  # starts watching; counts as a beat
        monitor.track("bob")
        while not bob_gone.is_set():
            await anyio.sleep(0.25)
            monitor.beat("alice")  # from any message handler: one dict write
        print("alice alive:", "alice" in monitor, "| bob alive:", "bob" in monitor)


# --8<-- [end:main]


if __name__ == "__main__":
    anyio.run(main)
