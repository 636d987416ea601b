"""Leave (quit) rules."""

from __future__ import annotations

import numpy as np

from policy.types import PAD
from simulator_client.envs.base import LeaveRule


def euclidean_item_distances(matrix: np.ndarray) -> np.ndarray:
    """[I, I] Euclidean distances between the item columns of a [U, I] rating matrix."""
    cols = np.asarray(matrix, dtype=np.float64).T  # [I, U]
    sq = (cols**2).sum(axis=1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2.0 * cols @ cols.T, 0.0)
    np.fill_diagonal(d2, 0.0)
    return np.sqrt(d2).astype(np.float32)


class DistanceLeaveRule(LeaveRule):
    """The user quits when the new item is closer than ``threshold`` to any of the last
    ``window`` recommended items (Coat, as in EasyRL4Rec: threshold 6, window 7).

    Distances are strict (``d < threshold``); a repeated item has distance 0 and so always
    makes the user leave. The first recommendation of an episode never does.
    """

    def __init__(self, distances: np.ndarray, *, threshold: float = 6.0, window: int = 7) -> None:
        self.distances = np.asarray(distances, dtype=np.float32)
        self.threshold = float(threshold)
        self.window = int(window)

    def leaves(
        self,
        slots: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        recommended: np.ndarray,
        steps: np.ndarray,
    ) -> np.ndarray:
        n, horizon = recommended.shape
        if n == 0 or self.window <= 0:
            return np.zeros(n, dtype=bool)
        # Gather the last `window` items of each episode: positions steps-window .. steps-1.
        offs = np.arange(-self.window, 0)[None, :] + steps[:, None]  # [n, window]
        valid = offs >= 0
        recent = np.take_along_axis(recommended, np.clip(offs, 0, horizon - 1), axis=1)
        valid &= recent != PAD
        d = self.distances[actions[:, None], np.where(valid, recent, 0)]  # [n, window]
        return ((d < self.threshold) & valid).any(axis=1)
