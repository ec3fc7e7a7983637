"""Each python-socketio / python-engineio internal the adapter touches, pinned.

``heartbeat_monitor_socketio._internals`` is the one module that reaches into
python-socketio; these tests check each thing it relies on against the
installed versions, so an upgrade that moves one fails here, by name.
"""

from __future__ import annotations

import inspect

import engineio
import socketio
from socketio import async_manager, base_manager

from heartbeat_monitor_socketio import SocketIOAdapter


def test_versions_in_use() -> None:
    major = int(socketio.__version__.split(".")[0]) if hasattr(socketio, "__version__") else 5
    assert major == 5
    assert engineio.AsyncServer is not None


def test_trigger_event_is_the_one_dispatch_point() -> None:
    """Every connect, event and disconnect goes through ``_trigger_event(event, ns, *args)``."""
    method = socketio.AsyncServer._trigger_event
    assert inspect.iscoroutinefunction(method)
    assert list(inspect.signature(method).parameters) == ["self", "event", "namespace", "args"]
    source = inspect.getsource(socketio.AsyncServer)
    assert "await self._trigger_event('disconnect', namespace, sid" in source
    assert "_trigger_event(\n" in source or "._trigger_event('connect'" in source


def test_engineio_handlers_and_handle_request() -> None:
    sio = socketio.AsyncServer(async_mode="asgi")
    assert set(sio.eio.handlers) >= {"connect", "message", "disconnect"}
    assert inspect.iscoroutinefunction(sio.eio.handlers["message"])
    assert inspect.iscoroutinefunction(sio.eio.handle_request)
    assert isinstance(sio.eio.sockets, dict)
    socket_class = engineio.async_socket.AsyncSocket
    assert "wait" in inspect.signature(socket_class.close).parameters
    assert "reason" in inspect.signature(socket_class.close).parameters
    for attribute in ("closed", "closing", "queue"):
        assert attribute in inspect.getsource(socket_class.__init__) or hasattr(
            socket_class, attribute
        )


def test_every_room_change_goes_through_the_basic_methods() -> None:
    assert list(inspect.signature(base_manager.BaseManager.basic_enter_room).parameters) == [
        "self", "sid", "namespace", "room", "eio_sid",
    ]  # fmt: skip
    assert list(inspect.signature(base_manager.BaseManager.basic_leave_room).parameters) == [
        "self", "sid", "namespace", "room",
    ]  # fmt: skip
    for method in ("enter_room", "leave_room", "close_room", "disconnect"):
        source = inspect.getsource(getattr(async_manager.AsyncManager, method))
        assert "self.basic_" in source, method
    assert "self.basic_leave_room" in inspect.getsource(base_manager.BaseManager.basic_disconnect)
    assert "self.basic_leave_room" in inspect.getsource(base_manager.BaseManager.basic_close_room)


def test_the_adapter_wraps_instances_never_classes() -> None:
    sio = socketio.AsyncServer(async_mode="asgi")
    before = (
        socketio.AsyncServer._trigger_event,
        async_manager.AsyncManager.basic_enter_room,
        async_manager.AsyncManager.basic_leave_room,
    )
    SocketIOAdapter(sio, interval=1.0)
    after = (
        socketio.AsyncServer._trigger_event,
        async_manager.AsyncManager.basic_enter_room,
        async_manager.AsyncManager.basic_leave_room,
    )
    assert before == after
    assert "_trigger_event" in vars(sio)
    assert "basic_enter_room" in vars(sio.manager)
