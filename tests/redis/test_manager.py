"""Pins: the python-socketio internals ClusterRedisManager overrides, against the installed version.

``ClusterRedisManager`` replaces two private methods of ``socketio.AsyncRedisManager``
(``_publish`` and ``_redis_listen_with_retries``). If python-socketio renames or
reshapes them, these tests fail here, in one place, instead of the cluster
silently losing its outbox or its quick re-subscribe.
"""

from __future__ import annotations

import inspect

import socketio
from socketio.async_pubsub_manager import AsyncPubSubManager

from heartbeat_monitor_redis import ClusterRedisManager


def test_publish_is_the_one_redis_write_of_every_emit() -> None:
    upstream = socketio.AsyncRedisManager.__dict__["_publish"]
    assert inspect.iscoroutinefunction(upstream)
    assert list(inspect.signature(upstream).parameters) == ["self", "data"]
    # Every cross-node operation funnels through it (emit, disconnect, rooms, callbacks).
    source = inspect.getsource(AsyncPubSubManager)
    for method in ("emit", "can_disconnect", "disconnect", "enter_room", "close_room"):
        body = inspect.getsource(getattr(AsyncPubSubManager, method))
        assert "self._publish(" in body, method
    assert "self._publish(" in source


def test_listen_with_retries_is_what_listen_iterates() -> None:
    upstream = socketio.AsyncRedisManager.__dict__["_redis_listen_with_retries"]
    assert inspect.isasyncgenfunction(upstream)
    assert list(inspect.signature(upstream).parameters) == ["self"]
    listen = inspect.getsource(socketio.AsyncRedisManager._listen)
    assert "self._redis_listen_with_retries()" in listen


def test_the_overrides_keep_the_upstream_shapes() -> None:
    assert issubclass(ClusterRedisManager, AsyncPubSubManager)
    ours = vars(ClusterRedisManager)
    assert inspect.iscoroutinefunction(ours["_publish"])
    assert inspect.isasyncgenfunction(ours["_redis_listen_with_retries"])
