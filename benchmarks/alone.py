"""Our tracker and driver on the loop-block targets, alone in the process.

``python -m benchmarks`` runs every contender in one process, as the issue asks, so
that machine noise hits all alike. At 1,000,000 peers that process also holds a
million asyncio timer handles, a million-entry heap and four more dicts (~4 GB),
and our polls then pay for cache and TLB misses the others cause. This runs the
same workloads (``steady`` and ``mass_expiry`` from ``_workloads``, the same
contenders, the same thread-CPU timing) with only ``LivenessTracker`` and
``HeartbeatMonitor`` in the process, to show what a server that embeds us pays.

Run: ``python -m benchmarks.alone [--peers 1000000]`` (about two minutes at 1M).
"""

from __future__ import annotations

import argparse
import sys

from ._contenders import quiet_structlog
from ._workloads import SIM_CONTENDERS, mass_expiry, simulate, steady


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--peers", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    quiet_structlog()
    ours = SIM_CONTENDERS[:2]  # LivenessTracker, HeartbeatMonitor
    print(f"{args.peers:,} peers, only our two contenders in the process\n")
    print("| workload | contender | maintenance CPU ms | longest block ms | correct |")
    print("|---|---|--:|--:|---|")
    failed = False
    for name, schedule in (("steady", steady), ("mass expiry", mass_expiry)):
        for outcome in simulate(schedule(args.peers), ours):
            failed = failed or not outcome.correct
            print(
                f"| {name} | {outcome.contender} | {outcome.maintenance_ns / 1e6:,.0f} "
                f"| {outcome.longest_block_ns / 1e6:.2f} | {'yes' if outcome.correct else 'NO'} |",
                flush=True,
            )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
