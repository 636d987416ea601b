"""Episode metrics: the paper's Return, Length and R_avg, plus beyond-accuracy metrics.

Definitions (also in docs/environments.md):

* Return: sum of rewards of an episode; Length: number of recommendations in it;
  R_avg: Return / Length of the episode. Each is averaged over episodes.
* diversity: mean over episodes (Length ≥ 2) of the mean pairwise cosine distance
  (1 − cos) between the item vectors of the items recommended in the episode.
* novelty: mean over all recommendations of −log2 p(i), where p(i) = (n_i + 1) / (N + I) is
  the item's smoothed share of the training interactions (higher = less popular items).
* coverage: distinct items recommended across all episodes / catalogue size.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Episode:
    """One finished episode."""

    user_id: int
    items: np.ndarray
    """[T] recommended item ids."""
    rewards: np.ndarray
    """[T] rewards received."""
    terminated: bool
    """True when the user left; False when the step cap truncated the episode."""

    @property
    def ret(self) -> float:
        return float(self.rewards.sum())

    @property
    def length(self) -> int:
        return len(self.items)


def summarize(
    episodes: Sequence[Episode],
    *,
    num_items: int,
    item_vectors: np.ndarray | None = None,
    item_popularity: np.ndarray | None = None,
) -> dict[str, float]:
    """Aggregate episodes into the metric dictionary (means and standard deviations)."""
    if not episodes:
        raise ValueError("no episodes to summarize")
    rets = np.asarray([e.ret for e in episodes], dtype=np.float64)
    lens = np.asarray([e.length for e in episodes], dtype=np.float64)
    ravg = rets / np.maximum(lens, 1.0)
    out: dict[str, float] = {
        "episodes": float(len(episodes)),
        "return": float(rets.mean()),
        "return_std": float(rets.std()),
        "length": float(lens.mean()),
        "length_std": float(lens.std()),
        "r_avg": float(ravg.mean()),
        "left_rate": float(np.mean([e.terminated for e in episodes])),
    }
    all_items = np.concatenate([e.items for e in episodes])
    out["coverage"] = float(len(np.unique(all_items)) / num_items)
    if item_popularity is not None:
        pop = np.asarray(item_popularity, dtype=np.float64)
        p = (pop + 1.0) / (pop.sum() + len(pop))
        out["novelty"] = float(np.mean(-np.log2(p[all_items])))
    if item_vectors is not None:
        vec = np.asarray(item_vectors, dtype=np.float64)
        norm = vec / np.maximum(np.linalg.norm(vec, axis=1, keepdims=True), 1e-12)
        divs = []
        for e in episodes:
            if e.length < 2:
                continue
            v = norm[e.items]
            sim = v @ v.T
            n = len(v)
            divs.append(float((n * n - sim.sum()) / (n * (n - 1))))
        out["diversity"] = float(np.mean(divs)) if divs else 0.0
    return out
