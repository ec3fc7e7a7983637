"""The package's surface: its names, the old import path, and what importing costs."""

from __future__ import annotations

import subprocess
import sys

import heartbeat_monitor_redis


def test_all_is_a_sorted_tuple_of_existing_names() -> None:
    names = heartbeat_monitor_redis.__all__
    assert isinstance(names, tuple)
    assert list(names) == sorted(names)
    for name in names:
        assert getattr(heartbeat_monitor_redis, name).__module__.startswith(
            "heartbeat_monitor_redis"
        )


def test_the_cluster_names_are_still_importable_from_the_socketio_package() -> None:
    from heartbeat_monitor_socketio import ClusterRedisManager, ClusterStats, RedisCluster

    assert RedisCluster is heartbeat_monitor_redis.RedisCluster
    assert ClusterRedisManager is heartbeat_monitor_redis.ClusterRedisManager
    assert ClusterStats is heartbeat_monitor_redis.ClusterStats


def _imported_after(statement: str) -> set[str]:
    code = f"import sys\n{statement}\nprint(','.join(sorted(sys.modules)))\n"
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.strip()
    return {name.split(".")[0] for name in out.split(",")}


def test_the_command_line_plugin_imports_no_redis_and_no_socketio() -> None:
    """``serve --help`` lists the cluster options without the redis extra."""
    loaded = _imported_after("import heartbeat_monitor_redis.cli")
    assert not loaded & {"redis", "socketio", "engineio", "heartbeat_monitor_socketio"}


def test_the_socketio_package_does_not_import_the_cluster() -> None:
    # (python-socketio itself imports redis when it is installed, for its own managers.)
    assert "heartbeat_monitor_redis" not in _imported_after("import heartbeat_monitor_socketio")
