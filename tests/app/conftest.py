"""Fixtures of the service tests: the app served over real HTTP by uvicorn in a thread."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from app.fast_refusal import http_protocol
from app.main import create_app
from app.settings import ServiceSettings
from trainer.transport.redis_server import EmbeddedRedis, free_port


class ThreadedServer:
    """uvicorn serving one app on 127.0.0.1:<free port> from a background thread."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", access_log=False,
            lifespan="on", http=http_protocol("auto")))  # as `ialp serve` runs it
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.loop: asyncio.AbstractEventLoop | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ThreadedServer:
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=5)
        if self.thread.is_alive():  # pragma: no cover - diagnostics for a hung shutdown
            import sys

            loop = getattr(self.svc.recommender, "loop", None)
            for task in asyncio.all_tasks(loop) if loop else ():
                print("still running:", task, file=sys.stderr)
                task.print_stack(limit=6, file=sys.stderr)
            self.thread.join(timeout=25)

    @property
    def svc(self) -> Any:
        return self.app.state.svc


TEST_API_KEY = "test-feedback-key"
"""The key every test service is configured with (unless a test sets its own)."""
AUTH = {"X-API-Key": TEST_API_KEY}
"""Headers of an authorised feedback or admin call."""


def make_settings(redis_url: str, **overrides: Any) -> ServiceSettings:
    """Small, fast settings on a fresh namespace, keyed with :data:`TEST_API_KEY`."""
    base: dict[str, Any] = dict(
        redis_url=redis_url, namespace=f"test-{uuid.uuid4().hex[:10]}", num_items=40,
        max_len=10, max_history=30, max_k=5, batch_max_wait_ms=2.0, policy_poll_s=0.1,
        enable_noop=True, redis_timeout_s=0.3, api_key=TEST_API_KEY)
    base.update(overrides)
    return ServiceSettings(**base)


@pytest.fixture(scope="module")
def serve() -> Iterator[Callable[[ServiceSettings], ThreadedServer]]:
    """Start apps over real HTTP; all are stopped at the end of the module."""
    started: list[ThreadedServer] = []

    def _serve(settings: ServiceSettings) -> ThreadedServer:
        server = ThreadedServer(create_app(settings)).start()
        started.append(server)
        return server

    yield _serve
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    """A plain HTTP client."""
    with httpx.Client(timeout=30) as client:
        yield client


@pytest.fixture(scope="module")
def module_redis(redis_server: EmbeddedRedis) -> str:
    """The session Redis server's URL (for module-scoped apps)."""
    return redis_server.url
