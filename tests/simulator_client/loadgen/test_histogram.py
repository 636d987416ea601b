"""The log-bucket latency histogram."""

from __future__ import annotations

import numpy as np

from simulator_client.loadgen.histogram import LogHistogram, bucket_index, bucket_midpoint_us


def test_buckets_are_monotone_and_within_one_part_in_128() -> None:
    v = np.arange(1, 3_000_000)
    idx = bucket_index(v)
    assert (np.diff(idx) >= 0).all()
    mid = bucket_midpoint_us(idx)
    assert (np.abs(mid - v) / v).max() < 1 / 128
    assert (bucket_index(np.arange(1, 128)) == np.arange(1, 128)).all()  # exact below 128 µs


def test_percentiles_match_numpy_and_merges_are_exact() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.lognormal(-5, 1, 50_000), rng.lognormal(-3, 0.5, 20_000)
    whole, left, right = LogHistogram(), LogHistogram(), LogHistogram()
    whole.record_many(np.concatenate([a, b]))
    left.record_many(a)
    right.record_many(b)
    left.merge(right)
    assert (left.counts == whole.counts).all() and left.total == whole.total == 70_000
    assert left.max_s == whole.max_s == max(a.max(), b.max())
    both = np.concatenate([a, b]) * 1000
    for q in (50, 90, 99, 99.9):
        assert abs(left.percentile_ms(q) - np.percentile(both, q)) <= 0.01 * np.percentile(
            both, q)
    assert left.percentile_ms(100) <= left.max_s * 1000


def test_empty_histogram_reports_zeros() -> None:
    s = LogHistogram().summary_ms()
    assert s == {"p50_ms": 0.0, "p90_ms": 0.0, "p99_ms": 0.0, "max_ms": 0.0, "mean_ms": 0.0}
