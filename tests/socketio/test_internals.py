"""Each python-socketio / python-engineio internal the adapter touches, pinned.

``heartbeat_monitor_socketio._internals`` is the one module that reaches into
python-socketio; these tests check each thing it relies on against the
installed versions, so an upgrade that moves one fails here, by name.
"""

from __future__ import annotations

import inspect
import re

import engineio
import socketio
from socketio import async_manager, base_manager

from heartbeat_monitor_socketio import SocketIOAdapter, _internals


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


def _state(manager: base_manager.BaseManager) -> dict[str, object]:
    """Every data attribute of a manager, rooms as plain dicts (in order)."""
    state: dict[str, object] = {}
    for name, value in vars(manager).items():
        if callable(value) or name in {"server", "logger", "json"}:
            continue
        if name == "rooms":
            value = {ns: [(r, list(m.items())) for r, m in rs.items()] for ns, rs in value.items()}
        state[name] = repr(value)
    return state


def _populated(wrapped: bool) -> tuple[socketio.AsyncServer, list[tuple[str, str]]]:
    """A manager with sids in rooms of two namespaces, pending and with callbacks."""
    sio = socketio.AsyncServer(async_mode="asgi")
    if wrapped:
        _internals.wrap_rooms(sio, "/", lambda sid, room: None, lambda sid, room: None)
    manager = sio.manager
    for number, namespace in enumerate(("/", "/", "/", "/", "/other")):
        sid, eio_sid = f"s{number}", f"e{number}"
        manager.basic_enter_room(sid, namespace, None, eio_sid=eio_sid)
        manager.basic_enter_room(sid, namespace, sid, eio_sid=eio_sid)
        for room in ("peers", ("a", number % 2), "lobby")[: number + 1]:
            manager.basic_enter_room(sid, namespace, room)
    manager.pending_connect["/"] = ["s1", "s3"]
    manager.pending_disconnect["/"] = ["s2"]
    manager.callbacks["s0"] = {1: print}
    manager.callbacks["s4"] = {2: print}
    return sio, [("s0", "/"), ("s2", "/"), ("s4", "/other"), ("s1", "/"), ("nobody", "/"),
                 ("s3", "/"), ("s3", "/")]  # fmt: skip


def test_the_indexed_disconnect_leaves_the_state_python_socketio_does() -> None:
    """``wrap_rooms``'s ``basic_disconnect`` leaves only the sid's rooms (no scan of every
    room), and leaves the manager exactly as python-socketio's does, step by step: the
    last sid of a namespace, pending connects and disconnects, callbacks, another
    namespace, an unknown sid, twice."""
    plain, steps = _populated(wrapped=False)
    wrapped, _ = _populated(wrapped=True)
    assert "basic_disconnect" in vars(wrapped.manager)
    assert _state(plain.manager) == _state(wrapped.manager)
    for sid, namespace in steps:
        plain.manager.basic_disconnect(sid, namespace)
        wrapped.manager.basic_disconnect(sid, namespace)
        assert _state(plain.manager) == _state(wrapped.manager), (sid, namespace)
    assert "/" not in wrapped.manager.rooms


def test_the_indexed_disconnect_copies_python_socketios() -> None:
    """What the indexed ``basic_disconnect`` replicates: python-socketio's touches the
    rooms, the callbacks and the two pending lists, and leaves rooms through
    ``basic_leave_room``; a version that touches more fails here."""
    source = inspect.getsource(base_manager.BaseManager.basic_disconnect)
    touched = set(re.findall(r"self\.(\w+)", source))
    assert touched == {"rooms", "basic_leave_room", "callbacks", "pending_connect",
                       "pending_disconnect"}  # fmt: skip
    assert "async def disconnect" in inspect.getsource(async_manager.AsyncManager)
    assert "self.basic_disconnect(" in inspect.getsource(async_manager.AsyncManager.disconnect)


def test_the_room_index_holds_only_other_rooms() -> None:
    """A connected sid is in its own room and ``None``: the index keeps no entry for a sid in
    no other room (memory per connection), one for a sid that entered another, and a sid
    connected before the wrapping is left to python-socketio's own scan (which leaves its
    rooms through the wrapped ``basic_leave_room``, so the index forgets it too)."""
    sio = socketio.AsyncServer(async_mode="asgi")
    manager = sio.manager
    manager.basic_enter_room("early", "/", None, eio_sid="e0")
    manager.basic_enter_room("early", "/", "early", eio_sid="e0")
    entered: list[tuple[str, object]] = []
    index = _internals.wrap_rooms(sio, "/", lambda *a: entered.append(a), lambda *a: None)
    for sid, eio_sid in (("a", "e1"), ("b", "e2")):
        manager.basic_enter_room(sid, "/", None, eio_sid=eio_sid)
        manager.basic_enter_room(sid, "/", sid, eio_sid=eio_sid)
    assert index == {}
    manager.basic_enter_room("b", "/", "lobby")
    manager.basic_enter_room("early", "/", "lobby")
    assert index == {"b": {"lobby"}, "early": {"lobby"}}
    assert entered == [("b", "lobby"), ("early", "lobby")]
    for sid in ("a", "b", "early"):
        manager.basic_disconnect(sid, "/")
    assert index == {}  # python-socketio's scan leaves rooms through the wrapped method too
    assert "/" not in manager.rooms
