"""Side-by-side benchmarks of heartbeat_monitor against what users would otherwise write.

Run ``python -m benchmarks`` from a checkout; ``--quick`` is the CI smoke test,
``--full`` adds a million peers. Not shipped in the wheel (a source-tree tool).
"""
