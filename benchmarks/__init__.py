"""Side-by-side benchmarks of heartbeat_monitor against what users would otherwise write.

Run ``python -m benchmarks`` (or ``heartbeat-monitor bench``); ``--quick`` is the CI
smoke test, ``--full`` adds a million peers. Not shipped in the wheel.
"""
