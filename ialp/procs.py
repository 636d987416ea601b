"""Child ``ialp`` processes: start them with a log file, stop them politely then firmly."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path


def spawn_ialp(
    args: Sequence[str], log: Path, *, cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
) -> subprocess.Popen[bytes]:
    """Run ``python -m ialp ARGS`` in the background with stdout and stderr to ``log``;
    ``env`` is added to this process's environment (e.g. ``IALP_API_KEY``)."""
    child_env = None if env is None else {**os.environ, **env}
    with log.open("wb") as fh:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "ialp", *args], cwd=cwd, stdout=fh,
            stderr=subprocess.STDOUT, env=child_env,
        )


def stop_all(procs: Iterable[subprocess.Popen[bytes]], *, timeout_s: float = 20.0) -> None:
    """SIGTERM every process, wait up to ``timeout_s`` each, then SIGKILL stragglers."""
    procs = list(procs)
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def wait_ready(urls: Iterable[str], procs: Iterable[subprocess.Popen[bytes]], *,
               timeout_s: float = 180.0, what: str = "the service") -> None:
    """Until every ``url``'s ``/readyz`` answers 200; ``RuntimeError`` naming ``what`` when
    one of ``procs`` exits first or ``timeout_s`` passes."""
    import httpx

    procs = list(procs)
    deadline = time.monotonic() + timeout_s
    for url in urls:
        while True:
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
                raise RuntimeError(f"{what} did not start")
            time.sleep(0.3)
