"""What a load phase sends (:class:`Workload`), where (:class:`Target`) and how
(:class:`LoadShape`). All three are plain data so that worker processes can receive them."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlsplit


@dataclass(frozen=True)
class Target:
    """The service under load."""

    host: str
    """Host name or address to connect to."""
    port: int
    """TCP port."""
    api_key: str | None = None
    """Sent as ``X-API-Key`` on every request when set (feedback needs it)."""

    @classmethod
    def from_url(cls, base_url: str, api_key: str | None = None) -> Target:
        """``http://host:port`` → target (HTTPS is not supported by this engine)."""
        parts = urlsplit(base_url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"the load engine speaks plain http://host:port, not {base_url!r}")
        return cls(parts.hostname, parts.port or 80, api_key)


@dataclass(frozen=True)
class Workload:
    """The requests of a phase: a cycle of pre-encoded requests to one endpoint, each
    answer optionally followed by chained feedback on the same connection."""

    endpoint: str
    """Label of the requests in the results (``noop``, ``recommend``…)."""
    requests: tuple[bytes, ...]
    """Complete HTTP/1.1 requests, sent in turn (see :mod:`simulator_client.loadgen.wire`)."""
    feedback_ratio: float = 0.0
    """Share of 200 answers followed by ``POST feedback_path`` for their first item, sent
    on the same connection as its next request; answers need ``event_id`` and ``items``."""
    feedback_path: str = "/v1/feedback"
    """Path of the chained feedback."""
    reward: float = 1.0
    """Reward of the chained feedback."""
    host: str = "127.0.0.1"
    """``Host`` header of the chained feedback."""
    api_key: str | None = None
    """``X-API-Key`` of the chained feedback."""


@dataclass(frozen=True)
class LoadShape:
    """Open or closed loop, size and length of a phase."""

    duration_s: float = 10.0
    """Time during which new requests start."""
    connections: int = 16
    """Keep-alive connections per process: in closed loop each sends its next request when
    the previous answer arrives; in open loop these are opened before the start."""
    rate: float | None = None
    """Open loop: arrivals per second over all processes (``None``: closed loop)."""
    max_connections: int = 1024
    """Open loop, per process: connections opened when every one is busy, up to this
    many; an arrival beyond it is counted as dropped."""
    processes: int = 1
    """Load-generating processes; each gets ``connections`` and ``rate / processes``."""
    drain_s: float = 10.0
    """After ``duration_s``, how long to wait for answers still in flight."""
    series_cap: int = 200_000
    """Per endpoint and process, at most this many (start, latency) points kept for plots."""

    def __post_init__(self) -> None:
        if self.duration_s <= 0 or self.connections < 1 or self.processes < 1:
            raise ValueError("duration, connections and processes must be positive")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be positive (None for closed loop)")
        if self.max_connections < self.connections:
            raise ValueError("max_connections must be at least connections")
