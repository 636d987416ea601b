"""Start the real service processes (``ialp serve`` + ``ialp trainer``) for a test."""

from __future__ import annotations

import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from ialp.procs import spawn_ialp, stop_all

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Stack:
    """URLs and processes of a running API + trainer pair."""

    api: str
    namespace: str
    procs: list[subprocess.Popen[bytes]]
    logs: list[Path]
    api_key: str = ""
    """The API's key (feedback needs it)."""

    def tails(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for log in self.logs)


def spawn(args: list[str], log: Path, env: dict[str, str] | None = None
          ) -> subprocess.Popen[bytes]:
    """``python -m ialp ARGS`` from the repository root with output to ``log``."""
    return spawn_ialp(args, log, cwd=ROOT, env=env)


def wait_for(pred: Callable[[], bool], what: str, stack: Stack, timeout: float = 120.0) -> None:
    """Poll ``pred`` until true; fail with the processes' logs on timeout or death."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if pred():
                return
        except httpx.HTTPError:
            pass
        dead = [p for p in stack.procs if p.poll() is not None]
        if dead or time.monotonic() > deadline:
            raise AssertionError(f"waiting for {what} failed\n{stack.tails()}")
        time.sleep(0.1)


@contextmanager
def service_stack(
    redis_url: str,
    tmp: Path,
    *,
    num_items: int,
    port: int,
    trainer_args: list[str] = (),  # type: ignore[assignment]
    serve_args: list[str] = (),  # type: ignore[assignment]
) -> Iterator[Stack]:
    """API and trainer on a fresh namespace; both are stopped on exit. The API gets a
    random key (``Stack.api_key``) and no rate limit (tests drive bursts from one
    address); ``serve_args`` can set one."""
    ns = f"t-{uuid.uuid4().hex[:8]}"
    key = uuid.uuid4().hex
    common = ["--redis-url", redis_url, "--namespace", ns, "--num-items", str(num_items),
              "--seed", "0"]
    logs = [tmp / f"{ns}-trainer.log", tmp / f"{ns}-api.log"]
    procs = [
        spawn(["trainer", *common, "--state-dir", str(tmp / f"{ns}-state"),
               "--flush-idle-s", "0.5", *trainer_args], logs[0]),
        spawn(["serve", *common, "--port", str(port), "--rate-limit-per-s", "0",
               "--rate-limit-key-per-s", "0", *serve_args], logs[1], env={"IALP_API_KEY": key}),
    ]
    stack = Stack(api=f"http://127.0.0.1:{port}", namespace=ns, procs=procs, logs=logs,
                  api_key=key)
    try:
        with httpx.Client(timeout=10) as http:
            wait_for(lambda: http.get(f"{stack.api}/readyz").status_code == 200, "API ready",
                     stack)
            wait_for(lambda: http.get(f"{stack.api}/v1/policy").json()["version"] >= 1,
                     "first published version", stack)
        yield stack
    finally:
        stop_all(procs)
