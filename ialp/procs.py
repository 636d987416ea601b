"""Child ``ialp`` processes: start them with a log file, stop them politely then firmly."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path


def spawn_ialp(
    args: Sequence[str], log: Path, *, cwd: Path | None = None
) -> subprocess.Popen[bytes]:
    """Run ``python -m ialp ARGS`` in the background with stdout and stderr to ``log``."""
    with log.open("wb") as fh:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "ialp", *args], cwd=cwd, stdout=fh, stderr=subprocess.STDOUT
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
