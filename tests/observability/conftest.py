"""Fixtures borrowed from the Redis tests: a real redis-server, and ``serve --redis-url`` nodes."""

from __future__ import annotations

from tests.redis.conftest import redis_server, start_node

__all__ = ("redis_server", "start_node")
