"""Metric definitions on hand-made episodes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simulator_client.metrics import Episode, summarize


def _ep(items: list[int], rewards: list[float], left: bool = True) -> Episode:
    return Episode(user_id=0, items=np.asarray(items), rewards=np.asarray(rewards), terminated=left)


def test_return_length_ravg() -> None:
    eps = [_ep([0, 1], [1.0, 3.0]), _ep([2, 3, 0, 1], [1.0, 1.0, 1.0, 1.0], left=False)]
    m = summarize(eps, num_items=10)
    assert m["return"] == pytest.approx(4.0)  # (4 + 4) / 2
    assert m["length"] == pytest.approx(3.0)
    assert m["r_avg"] == pytest.approx((2.0 + 1.0) / 2)  # per-episode ratio, then mean
    assert m["left_rate"] == pytest.approx(0.5)
    assert m["coverage"] == pytest.approx(0.4)


def test_diversity_and_novelty() -> None:
    vectors = np.asarray([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    popularity = np.asarray([4, 0, 4])
    same = summarize([_ep([0, 2], [1, 1])], num_items=3, item_vectors=vectors,
                     item_popularity=popularity)
    orth = summarize([_ep([0, 1], [1, 1])], num_items=3, item_vectors=vectors,
                     item_popularity=popularity)
    assert same["diversity"] == pytest.approx(0.0)
    assert orth["diversity"] == pytest.approx(1.0)
    # p = (n + 1) / (N + I) = 5/11 for items 0 and 2, 1/11 for item 1.
    assert orth["novelty"] == pytest.approx((-math.log2(5 / 11) - math.log2(1 / 11)) / 2)
    assert orth["novelty"] > same["novelty"]


def test_empty_is_an_error() -> None:
    with pytest.raises(ValueError, match="no episodes"):
        summarize([], num_items=3)
