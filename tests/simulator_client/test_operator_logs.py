"""The imbalanced subset of the training logs (``ialp experiment --logs imbalanced``)."""

from __future__ import annotations

import numpy as np
import pytest

from simulator_client.experiments.context import ExperimentConfig
from simulator_client.item_features import imbalanced_logs


def _logs(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 200, size=int(rng.integers(5, 40))) for _ in range(80)]


def _head_share(logs: list[np.ndarray], reference: list[np.ndarray], num_items: int) -> float:
    counts = np.bincount(np.concatenate(reference), minlength=num_items)
    head = np.argsort(-counts, kind="stable")[: num_items // 10]
    flat = np.concatenate(logs)
    return float(np.isin(flat, head).mean())


def test_the_head_holds_the_requested_share_and_users_stay_aligned() -> None:
    logs = _logs()
    before = _head_share(logs, logs, 200)
    out = imbalanced_logs(logs, 200, head_items=0.1, head_share=0.9, seed=3)
    assert before < 0.5  # uniform draws: far from imbalanced
    assert _head_share(out, logs, 200) == pytest.approx(0.9, abs=0.01)
    assert len(out) == len(logs)  # one (possibly shorter) sequence per user
    for full, sub in zip(logs, out, strict=True):
        # A subsequence in the original order: every kept item appears in order.
        it = iter(full.tolist())
        assert all(any(x == y for y in it) for x in sub.tolist())
    again = imbalanced_logs(logs, 200, head_items=0.1, head_share=0.9, seed=3)
    assert all(np.array_equal(a, b) for a, b in zip(out, again, strict=True))


def test_already_imbalanced_logs_are_unchanged_and_bad_settings_are_refused() -> None:
    logs = [np.zeros(30, dtype=np.int64) for _ in range(5)] + [np.arange(3)]
    out = imbalanced_logs(logs, 50)
    assert all(np.array_equal(a, b) for a, b in zip(logs, out, strict=True))
    with pytest.raises(ValueError, match="strictly between"):
        imbalanced_logs(logs, 50, head_share=1.0)
    with pytest.raises(ValueError, match="logs must be one of all, imbalanced"):
        ExperimentConfig(logs="skewed")
