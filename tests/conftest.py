from __future__ import annotations

import os

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Driver tests run on both anyio backends."""
    return str(request.param)


def require_tool(name: str, found: bool) -> None:
    """Skip when an external tool is missing, unless CI demands all (scripts/test sets it)."""
    if found:
        return
    message = f"{name} is not installed (scripts/test installs it)"
    if os.environ.get("HEARTBEAT_MONITOR_REQUIRE_ALL") == "1":
        pytest.fail(message)
    pytest.skip(message)
