"""The promotion gate's paired non-inferiority test on synthetic logs with known values."""

from __future__ import annotations

import numpy as np

from trainer.ope.gate import GateConfig, compare

N_ITEMS = 10
GOOD = np.arange(N_ITEMS) < 3  # items 0-2 are rewarded


def _logs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Uniform logging policy; reward 1 on good items (noisy)."""
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, N_ITEMS, size=n)
    rewards = (GOOD[actions] & (rng.random(n) < 0.9)).astype(float)
    return actions, rewards, np.full(n, 1.0 / N_ITEMS)


def _policy(weights: np.ndarray) -> np.ndarray:
    return weights / weights.sum()


def test_equal_better_worse_and_too_little_data() -> None:
    actions, rewards, mu = _logs(3000, seed=0)
    uniform = _policy(np.ones(N_ITEMS))
    better = _policy(np.where(GOOD, 5.0, 1.0))
    worse = _policy(np.where(GOOD, 0.2, 1.0))
    groups = np.arange(len(actions)) // 3
    cfg = GateConfig(n_boot=300)

    same = compare(rewards, mu, uniform[actions], uniform[actions], groups=groups, config=cfg)
    assert same.decision == "promote" and same.diff == 0.0  # paired: no noise at all
    up = compare(rewards, mu, better[actions], uniform[actions], groups=groups, config=cfg)
    truth_up = 0.9 * (better[GOOD].sum() - uniform[GOOD].sum())
    assert up.decision == "promote" and up.diff_low <= truth_up <= up.diff_high
    down = compare(rewards, mu, worse[actions], uniform[actions], groups=groups, config=cfg)
    truth_down = 0.9 * (worse[GOOD].sum() - uniform[GOOD].sum())
    assert down.decision == "reject" and down.diff_low <= truth_down <= down.diff_high
    # A margin larger than the loss lets the worse one through (non-inferiority).
    lenient = compare(rewards, mu, worse[actions], uniform[actions], groups=groups,
                      config=GateConfig(n_boot=300, margin=0.5))
    assert lenient.decision == "promote"
    few = compare(rewards[:50], mu[:50], better[actions[:50]], uniform[actions[:50]],
                  config=cfg)
    assert few.decision == "wait" and "200 needed" in few.reason
    assert set(up.as_dict()) >= {"decision", "candidate", "served", "diff_low", "reason"}
