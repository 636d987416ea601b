"""Log-bucket latency histogram (HDR style): exact merges, percentiles within 0.8 %.

Values are whole microseconds. Below 128 µs every value has its own bucket; above, each
power of two is split into 64 buckets, so a bucket's width is at most 1/64 of its lower
bound and a percentile read from its midpoint is within 0.8 % of the true value. Counts
are integers, so histograms of several processes add up exactly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

_SUB = 64
"""Buckets per power of two above 128 µs (the resolution)."""
_BUCKETS = 64 * 40
"""Enough buckets for 2**40 µs (12 days); longer latencies land in the last one."""


def bucket_index(us: np.ndarray) -> np.ndarray:
    """Bucket of each latency in whole microseconds (values below 1 count as 1)."""
    v = np.maximum(np.asarray(us, dtype=np.int64), 1)
    # frexp's exponent of an integer is its bit length (exact below 2**53).
    bits = np.frexp(v.astype(np.float64))[1].astype(np.int64)
    shift = np.maximum(bits - 7, 0)
    idx = np.where(shift == 0, v, shift * _SUB + (v >> shift))
    return np.minimum(idx, _BUCKETS - 1)


def bucket_midpoint_us(idx: np.ndarray) -> np.ndarray:
    """Midpoint (µs) of each bucket, the value percentiles report."""
    idx = np.asarray(idx, dtype=np.int64)
    shift = np.maximum(idx // _SUB - 1, 0)
    low = np.where(idx < 2 * _SUB, idx, (idx - shift * _SUB) << shift)
    width = np.int64(1) << shift
    return low + (width - 1) / 2.0


@dataclass
class LogHistogram:
    """Counts of latencies per log bucket, plus the exact count, sum and maximum."""

    counts: np.ndarray = field(default_factory=lambda: np.zeros(_BUCKETS, dtype=np.int64))
    """Requests per bucket (see :func:`bucket_index`)."""
    total: int = 0
    """Number of recorded latencies."""
    sum_s: float = 0.0
    """Sum of recorded latencies, for the mean."""
    max_s: float = 0.0
    """Largest recorded latency, exact."""

    def record_many(self, seconds: np.ndarray | list[float]) -> None:
        """Add latencies given in seconds."""
        s = np.asarray(seconds, dtype=np.float64)
        if s.size == 0:
            return
        np.add.at(self.counts, bucket_index(s * 1e6), 1)
        self.total += int(s.size)
        self.sum_s += float(s.sum())
        self.max_s = max(self.max_s, float(s.max()))

    def merge(self, other: LogHistogram) -> None:
        """Add ``other``'s counts to this histogram."""
        self.counts += other.counts
        self.total += other.total
        self.sum_s += other.sum_s
        self.max_s = max(self.max_s, other.max_s)

    def percentile_ms(self, q: float) -> float:
        """The ``q``-th percentile (0–100) in milliseconds; 0 when empty."""
        if self.total == 0:
            return 0.0
        rank = max(1, int(np.ceil(q / 100.0 * self.total)))
        idx = int(np.searchsorted(np.cumsum(self.counts), rank))
        # The midpoint can exceed the exact maximum in the top bucket.
        return min(float(bucket_midpoint_us(np.array([idx]))[0]) / 1000.0, self.max_s * 1000.0)

    def summary_ms(self) -> dict[str, Any]:
        """p50/p90/p99/max and mean in milliseconds."""
        return {
            "p50_ms": self.percentile_ms(50), "p90_ms": self.percentile_ms(90),
            "p99_ms": self.percentile_ms(99), "max_ms": self.max_s * 1000.0,
            "mean_ms": self.sum_s / self.total * 1000.0 if self.total else 0.0,
        }
