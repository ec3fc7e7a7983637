"""Helpers shared by the transport tests."""

from __future__ import annotations

from collections.abc import Callable

import anyio


async def until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """Wait (bounded) for something the server does in its own tasks."""
    with anyio.fail_after(within):
        while not predicate():  # noqa: ASYNC110 -- a server-side counter has no event to await
            await anyio.sleep(0.005)
