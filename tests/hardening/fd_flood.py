"""Measure a server out of file descriptors: does it live, and how much does it log?

    python -m tests.hardening.fd_flood TRANSPORT [--limit 1024] [--connections 3000]
                                                 [--seconds 12]

Starts ``heartbeat-monitor serve --transport TRANSPORT`` under ``RLIMIT_NOFILE``
``--limit``, opens ``--connections`` idle TCP connections to it (they never send
a byte) and watches its output for ``--seconds``: prints whether it is still
alive, the lines and bytes it wrote (its log and anything a library printed,
such as tracebacks) and how many descriptors it holds at the end. Nothing is
asserted (tests/hardening/test_fd_exhaustion.py asserts the behaviour).
"""

from __future__ import annotations

import argparse
import json
import os
import select
import subprocess
import sys
import time

from ._servers import LAUNCHER, connecting


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("transport")
    parser.add_argument("--limit", type=int, default=1024)
    parser.add_argument("--connections", type=int, default=3000)
    parser.add_argument("--seconds", type=float, default=12.0)
    args = parser.parse_args()
    command = [sys.executable, "-c", LAUNCHER, str(args.limit), "serve"]
    command += ["--transport", args.transport, "--port", "0", "--log-format", "json"]
    server = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert server.stdout is not None
    port = 0
    while not port:
        log = json.loads(server.stdout.readline())
        if log["event"].endswith(".serving"):
            port = log.get("port") or int(log["url"].split(":")[2].split("/")[0])
    idle = connecting(port, args.connections)
    os.set_blocking(server.stdout.fileno(), False)
    lines = written = 0
    end = time.monotonic() + args.seconds
    while time.monotonic() < end:
        select.select([server.stdout], [], [], 0.2)
        data = server.stdout.read() or b""
        written += len(data)
        lines += data.count(b"\n")
    alive = server.poll() is None
    descriptors = len(os.listdir(f"/proc/{server.pid}/fd")) if alive else 0
    state = "alive" if alive else f"exited with {server.returncode}"
    print(
        f"{args.transport}: {state} after {args.seconds:.0f} s; {lines} lines "
        f"({written:,} bytes) written; {descriptors} descriptors open at the end"
    )
    server.kill()
    for sock in idle:
        sock.close()


if __name__ == "__main__":
    main()
