"""Measure a UDP flood: how many datagrams a second one server absorbs, and when good peers go.

    python -m tests.hardening.udp_flood [--rates 10000,30000,0] [--seconds 8] [--peers 50]
                                        [--sources 1]

For each flood rate (0: as fast as one sending process can), a fresh
``heartbeat-monitor serve --transport udp`` process (with a key, interval 0.5 s,
so timeout 1 s) serves ``--peers`` good peers beating every 0.5 s from another
process (the conformance suite's client), while a third process floods the
server with beats signed with the wrong key for ``--seconds``, from ``--sources``
sockets in turn (one source is what the per-source gate stops before decoding;
many sources each under the gate's rate must be verified one by one). Printed per rate:
what the flooder sent a second, what reached the server's socket and what the
kernel dropped (``/proc/net/udp``'s per-socket ``drops``), what the server
processed (sent - dropped), and how many good peers expired. Machine-dependent:
run it where the server will run; nothing here is asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from tests.conformance._clients import UDP_KEY

from ._servers import free_port


def _drops(port: int) -> int:
    """The kernel's drop count of the UDP socket bound to ``port`` (``/proc/net/udp``)."""
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port:
            return int(fields[-1])
    return 0


def _flood(port: int, rate: int, seconds: float, sources: int) -> int:
    """Send wrongly signed beats to ``port`` at ``rate``/s (0: flat out) from ``sources``
    sockets in turn; the count sent."""
    code = f"""
import socket, sys, time
from heartbeat_monitor_udp import datagram
data = datagram("flood", key=b"not the key", epoch="0" * 16)
socks = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range({sources})]
for sock in socks:
    sock.connect(("127.0.0.1", {port}))
rate, end, sent = {rate}, time.monotonic() + {seconds}, 0
start = time.monotonic()
while (now := time.monotonic()) < end:
    if rate and sent >= rate * (now - start):
        time.sleep(0.0005)
        continue
    for sock in socks * (1 + 64 // len(socks)):
        try:
            sock.send(data)
            sent += 1
        except OSError:
            pass
print(sent)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    return int(result.stdout.strip() or 0)


def measure(rate: int, seconds: float, peers: int, sources: int) -> dict[str, float]:
    port = free_port()
    with tempfile.TemporaryDirectory() as folder:
        key_file = Path(folder) / "key"
        key_file.write_bytes(UDP_KEY)
        server = subprocess.Popen(
            [
                *(sys.executable, "-m", "heartbeat_monitor._cli", "serve", "--transport", "udp"),
                *("--port", str(port), "--interval", "0.5", "--log-format", "json"),
                *("--udp-key-file", str(key_file)),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        assert server.stdout is not None
        try:
            while b"serving" not in server.stdout.readline():
                pass
            clients = subprocess.Popen(
                [
                    *(sys.executable, "-m", "tests.conformance._clients", "udp", "127.0.0.1"),
                    *(str(port), "good", str(peers), "0.5"),
                ],
                stdout=subprocess.PIPE,
            )
            assert clients.stdout is not None
            ready = clients.stdout.readline().split()
            assert ready[:1] == [b"ready"], ready
            time.sleep(1.0)  # every good peer beating
            drops = _drops(port)
            sent = _flood(port, rate, seconds, sources)
            dropped = _drops(port) - drops
            time.sleep(1.5)  # a peer that missed its last beats in the flood expires by now
            clients.kill()
            server.terminate()
            output = server.communicate(timeout=10)[0]
        finally:
            server.kill()
    logs = [json.loads(line) for line in output.splitlines() if line.startswith(b"{")]
    expired = {
        log["peer"]
        for log in logs
        if log["event"].endswith("peer_gone") and log.get("reason") == "heartbeat timeout"
    }
    return {
        "rate": rate,
        "sent/s": sent / seconds,
        "dropped/s": dropped / seconds,
        "processed/s": (sent - dropped) / seconds,
        "expired": len(expired),
        "peers": int(ready[1]),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rates", default="10000,30000,0")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--peers", type=int, default=50)
    parser.add_argument("--sources", type=int, default=1, help="flooding sockets (1)")
    args = parser.parse_args()
    rmem_max = Path("/proc/sys/net/core/rmem_max").read_text().strip()
    print(f"cores: {os.cpu_count()}, net.core.rmem_max: {rmem_max}")
    print("| flood target/s | sent/s | kernel dropped/s | processed/s | good peers expired |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for rate in (int(text) for text in args.rates.split(",")):
        row = measure(rate, args.seconds, args.peers, args.sources)
        target = f"{rate:,}" if rate else "flat out"
        print(
            f"| {target} | {row['sent/s']:,.0f} | {row['dropped/s']:,.0f} | "
            f"{row['processed/s']:,.0f} | {row['expired']} of {row['peers']} |",
            flush=True,
        )


if __name__ == "__main__":
    socket.setdefaulttimeout(30)
    main()
