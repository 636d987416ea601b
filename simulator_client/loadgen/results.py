"""What a load phase measured, per endpoint, in a form that merges across processes."""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simulator_client.loadgen.histogram import LogHistogram


@dataclass
class EndpointResult:
    """Answers and failures of one endpoint (``noop``, ``recommend``, ``feedback``…)."""

    statuses: dict[int, int] = field(default_factory=dict)
    """Answers per HTTP status."""
    retry_after: dict[int, int] = field(default_factory=dict)
    """Answers per status that carried a ``Retry-After`` header (e.g. 503, 429)."""
    connection_errors: dict[str, int] = field(default_factory=dict)
    """Requests that got no answer, per cause (connection reset, refused, bad framing…)."""
    latency: LogHistogram = field(default_factory=LogHistogram)
    """Latency of every answer, whatever its status."""
    ok_latency: LogHistogram = field(default_factory=LogHistogram)
    """Latency of the 2xx answers only (what accepted requests saw under overload)."""
    series_t: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Start offsets (s into the phase) of a uniform sample of answers, for plots."""
    series_ms: np.ndarray = field(default_factory=lambda: np.zeros(0))
    """Latencies (ms) of the same sample."""

    @property
    def answers(self) -> int:
        """Requests answered with any status."""
        return sum(self.statuses.values())

    @property
    def ok(self) -> int:
        """Requests answered with a 2xx status."""
        return sum(n for s, n in self.statuses.items() if 200 <= s < 300)

    def merge(self, other: EndpointResult) -> None:
        """Add ``other`` (another process's share) to this result."""
        for mine, theirs in ((self.statuses, other.statuses),
                             (self.retry_after, other.retry_after)):
            for s, n in theirs.items():
                mine[s] = mine.get(s, 0) + n
        for k, n in other.connection_errors.items():
            self.connection_errors[k] = self.connection_errors.get(k, 0) + n
        self.latency.merge(other.latency)
        self.ok_latency.merge(other.ok_latency)
        self.series_t = np.concatenate([self.series_t, other.series_t])
        self.series_ms = np.concatenate([self.series_ms, other.series_ms])

    def summary(self, wall_s: float) -> dict[str, Any]:
        """Counts, throughput over ``wall_s`` and latency percentiles, JSON-ready."""
        errors: dict[str, int] = {str(s): n for s, n in sorted(self.statuses.items())
                                  if not 200 <= s < 300}
        errors.update(self.connection_errors)
        return {
            "requests": self.answers + sum(self.connection_errors.values()),
            "ok": self.ok,
            "by_status": {str(s): n for s, n in sorted(self.statuses.items())},
            "retry_after_by_status": {str(s): n for s, n in sorted(self.retry_after.items())},
            "connection_errors": dict(self.connection_errors),
            "errors_by_status": errors,
            "throughput_rps": self.ok / wall_s if wall_s > 0 else 0.0,
            **self.latency.summary_ms(),
            **{f"ok_{k}": v for k, v in self.ok_latency.summary_ms().items()},
        }


@dataclass
class PhaseResult:
    """One phase: every endpoint it touched, and what the schedule could not send."""

    endpoints: dict[str, EndpointResult] = field(default_factory=dict)
    """Per endpoint label."""
    wall_s: float = 0.0
    """From the start until the last answer (or the end of the drain wait)."""
    dropped: int = 0
    """Open loop: arrivals not sent because every allowed connection was busy."""
    in_flight_at_end: int = 0
    """Requests still unanswered when the drain wait ran out."""
    connections_opened: int = 0
    """Connections opened (initial ones, open-loop extras and reconnects)."""
    processes: int = 1
    """Load-generating processes merged into this result."""

    def endpoint(self, name: str) -> EndpointResult:
        """The result of ``name``, empty when the phase never sent it."""
        return self.endpoints.get(name) or EndpointResult()

    def merge(self, other: PhaseResult) -> None:
        """Add another process's result."""
        for name, res in other.endpoints.items():
            if name in self.endpoints:
                self.endpoints[name].merge(res)
            else:
                self.endpoints[name] = res
        self.wall_s = max(self.wall_s, other.wall_s)
        self.dropped += other.dropped
        self.in_flight_at_end += other.in_flight_at_end
        self.connections_opened += other.connections_opened
        self.processes += other.processes

    def summary(self, name: str) -> dict[str, Any]:
        """:meth:`EndpointResult.summary` of ``name`` plus the phase's counters."""
        return {**self.endpoint(name).summary(self.wall_s), "dropped": self.dropped,
                "in_flight_at_end": self.in_flight_at_end,
                "connections_opened": self.connections_opened,
                "processes": self.processes, "seconds": self.wall_s}


class Recorder:
    """Cheap per-answer bookkeeping inside one process, folded into an
    :class:`EndpointResult` at the end (histogram bucketing is vectorised then)."""

    __slots__ = ("connection_errors", "latencies", "ok", "retry_after", "starts", "statuses")

    def __init__(self) -> None:
        self.latencies = array("d")
        self.ok = array("b")  # 1 where the answer was 2xx
        self.starts = array("d")
        self.statuses: dict[int, int] = {}
        self.retry_after: dict[int, int] = {}
        self.connection_errors: dict[str, int] = {}

    def error(self, cause: str) -> None:
        """A request that got no answer."""
        self.connection_errors[cause] = self.connection_errors.get(cause, 0) + 1

    def result(self, series_cap: int) -> EndpointResult:
        """The folded result, with at most ``series_cap`` sampled points for plots."""
        lat = np.frombuffer(self.latencies, dtype=np.float64) if self.latencies else np.zeros(0)
        starts = np.frombuffer(self.starts, dtype=np.float64) if self.starts else np.zeros(0)
        hist, ok_hist = LogHistogram(), LogHistogram()
        hist.record_many(lat)
        if self.ok:
            ok_hist.record_many(lat[np.frombuffer(self.ok, dtype=np.int8).astype(bool)])
        step = max(1, -(-lat.size // max(series_cap, 1)))
        return EndpointResult(
            statuses=dict(self.statuses), retry_after=dict(self.retry_after),
            connection_errors=dict(self.connection_errors), latency=hist, ok_latency=ok_hist,
            series_t=starts[::step].copy(), series_ms=lat[::step] * 1000.0)
