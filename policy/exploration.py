"""Exploration strategies (section 6.4): greedy, ε-greedy and categorical sampling.

Every strategy turns a row of action probabilities into a slate of k distinct items and
reports, for each item, its *propensity*: the probability with which the strategy drew that
item at its draw, given the items drawn before it in the slate and the masked items.

* ``greedy``: the k most probable allowed items, best first; propensity 1 (deterministic).
* ``epsilon``: each slot takes the most probable remaining item with probability 1 − ε and
  a uniformly random remaining item with probability ε; propensity
  (1 − ε)·[a is the best remaining] + ε / (#remaining). ε = 0 is exactly ``greedy``.
* ``categorical``: each slot samples from the probabilities renormalised over the
  remaining items (sampling without replacement); propensity = that renormalised mass.
  For k = 1 and no masking the propensity is exactly π(a|s).

Masked items (``exclude``, and the history when ``mask_history`` is set) get probability 0.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STRATEGIES = ("greedy", "epsilon", "categorical")


@dataclass(frozen=True)
class ExplorationConfig:
    """How a policy picks items when asked to explore (``explore=True``).

    ``explore=False`` always means greedy, whatever the strategy here.
    """

    strategy: str = "categorical"
    """One of ``greedy``, ``epsilon``, ``categorical``."""
    epsilon: float = 0.1
    """Probability of a uniformly random slot under ``epsilon``."""
    mask_history: bool = False
    """Never recommend items already in the user's history (dropped for a row whose
    history leaves fewer than k items)."""

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise ValueError(
                f"unknown exploration strategy {self.strategy!r}; choose one of "
                f"{', '.join(STRATEGIES)}"
            )
        if not 0.0 <= self.epsilon <= 1.0:
            raise ValueError(f"epsilon must lie in [0, 1], got {self.epsilon}")


def _inverse_cdf(weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One index per row of non-negative ``weights`` [B, I] (each row with positive sum),
    drawn with probability proportional to the weights."""
    cum = np.cumsum(weights, axis=1)  # [B, I]
    u = rng.random(weights.shape[0]) * cum[:, -1]  # [B]
    above = cum > u[:, None]
    idx = above.argmax(axis=1)
    # Float rounding can leave u == total: take the last item with positive weight.
    stuck = ~above.any(axis=1)
    if stuck.any():
        last = weights.shape[1] - 1 - (weights[stuck, ::-1] > 0).argmax(axis=1)
        idx[stuck] = last
    return idx


def draw_slates(
    probs: np.ndarray,
    allowed: np.ndarray,
    k: int,
    *,
    strategy: str,
    epsilon: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``k`` distinct items per row.

    ``probs`` [B, I] action probabilities, ``allowed`` [B, I] bool mask (each row must
    allow at least k items). Returns ``(items [B, k] int64, propensities [B, k] float64)``.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown exploration strategy {strategy!r}")
    b, n = probs.shape
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    free = allowed.copy()
    counts = free.sum(axis=1)
    if b and counts.min() < k:
        raise ValueError(
            f"cannot pick {k} distinct items: a row allows only {int(counts.min())} of {n}"
        )
    p = np.asarray(probs, dtype=np.float64)
    items = np.empty((b, k), dtype=np.int64)
    props = np.empty((b, k), dtype=np.float64)
    rows = np.arange(b)
    for j in range(k):
        masked = np.where(free, p, 0.0)  # [B, I]
        if strategy == "categorical":
            total = masked.sum(axis=1)
            # All remaining mass underflowed to 0: fall back to uniform over what is left.
            dead = total <= 0.0
            if dead.any():
                masked[dead] = free[dead].astype(np.float64)
                total[dead] = masked[dead].sum(axis=1)
            a = _inverse_cdf(masked, rng)
            pa = masked[rows, a] / total
        else:
            best = np.where(free, p, -np.inf).argmax(axis=1)  # ties → lowest id
            if strategy == "greedy" or epsilon <= 0.0:
                a, pa = best, np.ones(b)
            else:
                remaining = free.sum(axis=1).astype(np.float64)
                uniform = _inverse_cdf(free.astype(np.float64), rng)
                coin = rng.random(b) < epsilon
                a = np.where(coin, uniform, best)
                pa = (1.0 - epsilon) * (a == best) + epsilon / remaining
        items[:, j] = a
        props[:, j] = pa
        free[rows, a] = False
    return items, props
