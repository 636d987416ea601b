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
    Greedy ties are broken towards the lower item id.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"unknown exploration strategy {strategy!r}")
    b, n = probs.shape
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    counts = allowed.sum(axis=1)
    if b and counts.min() < k:
        raise ValueError(
            f"cannot pick {k} distinct items: a row allows only {int(counts.min())} of {n}"
        )
    p = np.asarray(probs, dtype=np.float64)
    if strategy == "epsilon" and epsilon <= 0.0:
        strategy = "greedy"
    if strategy == "greedy":
        return _top_k(np.where(allowed, p, -np.inf), k), np.ones((b, k))
    if k == 1:
        items1, props1 = _draw_one(p, allowed, counts, strategy, epsilon, rng)
        return items1, clip_probability(props1)
    items = np.empty((b, k), dtype=np.int64)
    props = np.empty((b, k), dtype=np.float64)
    for row in range(b):
        if strategy == "categorical":
            items[row], props[row] = _categorical_row(p[row], allowed[row], k, rng)
        else:
            items[row], props[row] = _epsilon_row(p[row], allowed[row], k, epsilon, rng)
    return items, clip_probability(props)


def clip_probability(p: np.ndarray) -> np.ndarray:
    """``p`` clipped into [0, 1].

    Sequential draws renormalise the remaining mass, and float rounding (which differs
    between BLAS kernels) can leave the last item of a slate at 1 + 1e-16: a propensity
    is a probability, so it never leaves the unit interval at any layer.
    """
    return np.clip(p, 0.0, 1.0)


def _top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest scores per row, best first, ties → lower index."""
    n = scores.shape[1]
    cand = np.argsort(-scores, axis=1, kind="stable")[:, :k] if k * 8 >= n else None
    if cand is None:
        # Partition first (linear time), then order the few candidates. Take a margin so
        # that items tied with the k-th are all present before the tie-break.
        part = np.argpartition(-scores, k - 1, axis=1)[:, : min(n, 2 * k)]
        vals = np.take_along_axis(scores, part, axis=1)
        order = np.lexsort((part, -vals), axis=1)
        cand = np.take_along_axis(part, order, axis=1)[:, :k]
    return cand.astype(np.int64)


def _draw_one(
    p: np.ndarray, allowed: np.ndarray, counts: np.ndarray, strategy: str, epsilon: float,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray]:
    """k = 1 for every row at once (the simulator's hot path)."""
    b = p.shape[0]
    rows = np.arange(b)
    if strategy == "categorical":
        masked = np.where(allowed, p, 0.0)  # [B, I]
        total = masked.sum(axis=1)
        # All remaining mass underflowed to 0: fall back to uniform over what is allowed.
        dead = total <= 0.0
        if dead.any():
            masked[dead] = allowed[dead].astype(np.float64)
            total[dead] = masked[dead].sum(axis=1)
        a = _inverse_cdf(masked, rng)
        pa = masked[rows, a] / total
    else:
        best = _top_k(np.where(allowed, p, -np.inf), 1)[:, 0]
        uniform = _inverse_cdf(allowed.astype(np.float64), rng)
        coin = rng.random(b) < epsilon
        a = np.where(coin, uniform, best)
        pa = (1.0 - epsilon) * (a == best) + epsilon / counts
    return a[:, None].astype(np.int64), pa[:, None]


def _categorical_row(
    p: np.ndarray, allowed: np.ndarray, k: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """k draws without replacement from one row, restricted to ``allowed`` items.

    Drawing from the weights renormalised over the remaining items equals drawing from the
    full weights and redrawing repeats, so one cumulative sum serves all k draws; when the
    items already drawn hold most of the mass the row is recomputed exactly instead.
    """
    weights = np.where(allowed, p, 0.0)
    if weights.sum() <= 0.0:  # all allowed mass underflowed: uniform over allowed items
        weights = allowed.astype(np.float64)
    cum = np.cumsum(weights)
    total = float(cum[-1])
    chosen: list[int] = []
    props: list[float] = []
    used = 0.0
    for _ in range(k):
        a = -1
        for _attempt in range(32):
            cand = int(np.searchsorted(cum, rng.random() * total, side="right"))
            cand = min(cand, len(cum) - 1)
            if cand not in chosen and weights[cand] > 0.0:
                a = cand
                break
        if a < 0:  # rejection keeps failing: sample the remaining items exactly
            rest = weights.copy()
            rest[chosen] = 0.0
            if rest.sum() <= 0.0:  # only zero-weight items remain: uniform over them
                rest = allowed.astype(np.float64)
                rest[chosen] = 0.0
            a = int(_inverse_cdf(rest[None, :], rng)[0])
            remaining = float(rest.sum())
            props.append(float(rest[a]) / remaining)
        else:
            props.append(float(weights[a]) / (total - used))
        chosen.append(a)
        used += float(weights[a])
    return np.asarray(chosen, dtype=np.int64), np.asarray(props)


def _epsilon_row(
    p: np.ndarray, allowed: np.ndarray, k: int, epsilon: float, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """k ε-greedy draws without replacement from one row."""
    order = _top_k(np.where(allowed, p, -np.inf)[None, :], k)[0]  # the k best, best first
    pool = np.flatnonzero(allowed)
    chosen: list[int] = []
    props: list[float] = []
    for j in range(k):
        best = next(int(x) for x in order if int(x) not in chosen)
        remaining = len(pool) - j
        if rng.random() < epsilon:
            a = int(pool[rng.integers(len(pool))])
            while a in chosen:
                a = int(pool[rng.integers(len(pool))])
        else:
            a = best
        chosen.append(a)
        props.append((1.0 - epsilon) * (a == best) + epsilon / remaining)
    return np.asarray(chosen, dtype=np.int64), np.asarray(props)
