"""A small circuit breaker for Redis calls on the latency-critical path."""

from __future__ import annotations

import time


class RedisGate:
    """Remembers a recent Redis failure so /v1/recommend does not wait on a dead server."""

    def __init__(self, cooldown_s: float) -> None:
        """After a failure, :meth:`open` is False for ``cooldown_s`` seconds."""
        self.cooldown_s = cooldown_s
        self._down_until = 0.0
        self.up = True

    def open(self) -> bool:
        """Whether a Redis call should be attempted now."""
        return time.monotonic() >= self._down_until

    def failed(self) -> None:
        """Record a failure."""
        self.up = False
        self._down_until = time.monotonic() + self.cooldown_s

    def succeeded(self) -> None:
        """Record a success."""
        self.up = True
        self._down_until = 0.0
