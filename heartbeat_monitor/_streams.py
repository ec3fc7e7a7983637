"""``EventStream``: the monitor's events as an async iterator, for consumers that pull."""

from __future__ import annotations

from typing import TYPE_CHECKING, Self, final

import anyio
import structlog
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._errors import ConfigurationError
from ._events import Event

if TYPE_CHECKING:
    from ._monitor import HeartbeatMonitor

__all__ = ("EventStream",)

_logger = structlog.get_logger("heartbeat_monitor")


@final
class EventStream:
    """An async iterator over the monitor's events, registered as soon as it is created.

    Use it as ``async with monitor.events() as events: async for event in events``.
    It ends when the monitor stops. A consumer that falls more than ``max_buffer``
    events behind loses the newest ones (logged as ``heartbeat_monitor.events_dropped``);
    the monitor itself never waits for a consumer.
    """

    __slots__ = ("_monitor", "_receive", "_send", "dropped")

    def __init__(self, monitor: HeartbeatMonitor, max_buffer: int) -> None:
        if max_buffer < 1:
            raise ConfigurationError(f"max_buffer must be >= 1, not {max_buffer!r}")
        send, receive = anyio.create_memory_object_stream[Event](max_buffer)
        self._send: MemoryObjectSendStream[Event] = send
        self._receive: MemoryObjectReceiveStream[Event] = receive
        self._monitor = monitor
        #: How many events this consumer missed because it fell behind.
        self.dropped = 0
        monitor._streams.add(self)

    def _offer(self, event: Event) -> None:
        try:
            self._send.send_nowait(event)
        except anyio.WouldBlock:
            self.dropped += 1
            if self.dropped == 1 or self.dropped % 1000 == 0:
                _logger.warning("heartbeat_monitor.events_dropped", dropped=self.dropped)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            self.close()

    def close(self) -> None:
        """Stop receiving events (idempotent)."""
        self._monitor._streams.discard(self)
        self._send.close()
        self._receive.close()

    def _end(self) -> None:
        """The monitor stopped: let the consumer drain what is buffered, then stop."""
        self._monitor._streams.discard(self)
        self._send.close()

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> Event:
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            self.close()
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.close()
