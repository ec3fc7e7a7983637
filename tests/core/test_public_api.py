"""The public surface: a tuple ``__all__`` naming everything public, and the layering rule."""

from __future__ import annotations
import __future__

import subprocess
import sys
import types

import heartbeat_monitor


def test_all_is_a_sorted_tuple_of_existing_names():
    assert isinstance(heartbeat_monitor.__all__, tuple)

    def isort_style(name: str) -> tuple[int, str]:  # as ruff's RUF022: CONSTANTS, Classes, rest
        return (0 if name.isupper() else 1 if name[0].isupper() else 2, name)

    assert list(heartbeat_monitor.__all__) == sorted(heartbeat_monitor.__all__, key=isort_style)
    for name in heartbeat_monitor.__all__:
        assert hasattr(heartbeat_monitor, name), name


def test_every_public_name_is_in_all():
    public = {
        name
        for name, value in vars(heartbeat_monitor).items()
        if not name.startswith("_")
        and not isinstance(value, types.ModuleType | __future__._Feature)
    }
    assert public <= set(heartbeat_monitor.__all__)


def test_public_objects_say_they_live_in_the_package():
    for name in heartbeat_monitor.__all__:
        value = getattr(heartbeat_monitor, name)
        if not isinstance(value, type):
            continue  # type aliases such as ExpireCallback
        module = getattr(value, "__module__", "heartbeat_monitor")
        assert module.startswith("heartbeat_monitor"), (name, module)


def test_the_core_imports_no_transport_library():
    code = (
        "import sys, heartbeat_monitor\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'socketio', 'engineio', 'websockets', 'redis', 'aiohttp', 'uvicorn', "
        "'prometheus_client'})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert out == "", f"importing heartbeat_monitor imported {out}"


def test_the_top_level_names_the_issue_promises():
    from heartbeat_monitor import HeartbeatMonitor, LivenessTracker, ManualClock

    assert ManualClock(start=5.0).now() == 5.0
    assert LivenessTracker(1.0).timeout == 1.0
    assert HeartbeatMonitor(1.0).tracker.timeout == 1.0
