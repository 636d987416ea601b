"""An echo server (``echo_server.py``) run by uvicorn in a child process."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from trainer.transport.redis_server import free_port

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def echo_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a fresh echo server."""
    port = free_port()
    log = tmp_path_factory.mktemp("echo") / "uvicorn.log"
    with log.open("wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "uvicorn", "tests.simulator_client.loadgen.echo_server:app",
             "--port", str(port), "--log-level", "warning", "--no-access-log"],
            cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{url}/count", timeout=1)
                break
            except httpx.HTTPError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise AssertionError(f"echo server did not start: {log.read_text()}"
                                         ) from None
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.fixture
def served(echo_url: str) -> Callable[[], int]:
    """Requests the echo server has answered so far (a function to call)."""
    return lambda: int(httpx.get(f"{echo_url}/count", timeout=5).json()["served"])
