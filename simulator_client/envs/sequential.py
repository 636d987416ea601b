"""Sequential user environments: LFM, Industry and datasets built with ``ialp env build``.

* Users: the dataset's users, split 80 / 20 by a seeded permutation into the training and
  test environments (disjoint pools).
* Initial state: the user's real history prefix — everything before their last
  ``continuation_items`` items (at least ``min_prefix`` items). The rest of the sequence is
  the user's true continuation, used by the ``nextitem`` reference policy.
* Reward: an attention user model (:mod:`simulator_client.user_models.sequential`) scores
  every catalogue item for the current history; the recommended item's rank among the
  items not yet in the history maps to a 1–5 scale (see :class:`RankReward`). Recommending
  an item already in the visible history gives ``repeat_reward`` (1, the floor).
* Leaving: a patience ("temper") rule in the style of HAC / KuaiSim
  (:class:`PatienceLeaveRule`): each user starts with ``initial_patience``; a reward below
  ``satisfied_reward`` drains it, and the user leaves when it runs out. At most
  ``max_steps`` recommendations per episode.
* Models: the training environment's model learns from the training users' sequences,
  the test environment's from the test users' sequences (a different model and seed), so
  a policy trained against one is never scored by it.

Built environments live under ``cache_dir()/envs/<name>/``: ``sequences.tsv`` and
``items.tsv`` in the generic format and ``manifest.json`` (counts, configuration, model
cache keys and their metrics). Trained models are in the shared user-model cache.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from policy.types import PAD
from simulator_client.datasets.sequences import (
    SequenceDataset,
)
from simulator_client.envs.base import LeaveRule, RecBatchEnv, RewardModel
from simulator_client.user_models.sequential import (
    SequentialUserModel,
)

MIN_REWARD = 1.0
"""Lowest reward: the catalogue's worst item for the user, or a repeat."""
MAX_REWARD = 5.0
"""Highest reward: the model's best item not yet in the user's history."""


@dataclass(frozen=True)
class SequentialEnvConfig:
    """Rules of a sequential environment."""

    max_steps: int = 20
    """Episode length cap (truncation)."""
    history_window: int = 50
    """How many recent items an observation carries."""
    continuation_items: int = 20
    """The last this-many items of a user's sequence are the continuation; everything
    before is the initial state (at least ``min_prefix`` items)."""
    min_prefix: int = 1
    """Shortest initial history (the paper starts LFM / Industry from an item)."""
    initial_patience: float = 3.0
    """Patience at the start of an episode (and its maximum)."""
    satisfied_reward: float = 3.0
    """Rewards at or above this cost no patience; a reward of 1 costs 1."""
    patience_recovery: float = 0.0
    """Patience regained by a reward of 5 (linearly from ``satisfied_reward``); 0 = none."""
    repeat_reward: float = MIN_REWARD
    """Reward for recommending an item already in the visible history."""
    test_fraction: float = 0.2
    """Share of users in the test environment."""
    split_seed: int = 0
    """Seed of the user split."""
    test_model_users: str = "test"
    """Data of the test environment's model: ``"test"`` (the test users' sequences) or
    ``"all"`` (every user's)."""


# -- reward and leave rule ----------------------------------------------------------------
def rank_to_reward(rank: np.ndarray, num_items: int) -> np.ndarray:
    """Map a 1-based rank among ``num_items`` to ``1 + 4 · (1 − ln rank / ln num_items)``.

    Rank 1 gives 5, the last rank gives 1. The logarithm spreads the scale over the head of
    the ranking, where preferences differ: rank 10 of 4,606 gives ≈ 3.91, rank 100 ≈ 2.82,
    and a uniformly random item ≈ 1 + 4 / ln I on average (≈ 1.47).
    """
    if num_items < 2:
        raise ValueError("a rank reward needs at least two items")
    r = 1.0 - np.log(np.asarray(rank, dtype=np.float64)) / math.log(num_items)
    return (MIN_REWARD + (MAX_REWARD - MIN_REWARD) * r).astype(np.float32)


class RankReward(RewardModel):
    """Reward from the user model's ranking of the catalogue for the current history.

    The recommended item is ranked among the items not in the history (rank 1 = the
    model's favourite); :func:`rank_to_reward` maps the rank to 1–5, and an item already in
    the history gets ``repeat_reward``. The user id is not used: the state is the history.
    """

    def __init__(self, model: SequentialUserModel, *, repeat_reward: float = MIN_REWARD) -> None:
        self.model = model
        self.num_items = model.num_items
        self.repeat_reward = float(repeat_reward)

    @staticmethod
    def _mask_history(scores: np.ndarray, history: np.ndarray) -> np.ndarray:
        """Scores with the history's items at -inf (they never outrank a candidate)."""
        valid = history != PAD
        scores[np.nonzero(valid)[0], history[valid]] = -np.inf
        return scores

    def reward(self, users: np.ndarray, history: np.ndarray, actions: np.ndarray) -> np.ndarray:
        history = np.asarray(history, dtype=np.int64)
        actions = np.asarray(actions, dtype=np.int64)
        scores = self.model.scores(history)
        own = scores[np.arange(len(actions)), actions]
        scores = self._mask_history(scores, history)
        rank = 1 + (scores > own[:, None]).sum(axis=1)
        out = rank_to_reward(rank, self.num_items)
        seen = (history == actions[:, None]).any(axis=1)
        out[seen] = self.repeat_reward
        return out

    def max_reward(self) -> float:
        return max(MAX_REWARD, self.repeat_reward)

    def reward_all(self, users: np.ndarray, history: np.ndarray, num_items: int) -> np.ndarray:
        history = np.asarray(history, dtype=np.int64)
        scores = self._mask_history(self.model.scores(history), history)
        b = len(scores)
        order = np.argsort(-scores, axis=1, kind="stable")
        rank = np.empty_like(order)
        rank[np.arange(b)[:, None], order] = np.arange(1, num_items + 1)[None, :]
        out = rank_to_reward(rank, self.num_items)
        valid = history != PAD
        out[np.nonzero(valid)[0], history[valid]] = self.repeat_reward
        return out


class PatienceLeaveRule(LeaveRule):
    """Patience ("temper") leave rule in the style of HAC / KuaiSim.

    Each episode starts with ``initial`` patience. After a reward r the patience becomes
    ``min(initial, p − drop(r) + gain(r))`` with ``drop = clip((satisfied − r) /
    (satisfied − floor), 0, 1)`` and ``gain = recovery · clip((r − satisfied) / (ceiling −
    satisfied), 0, 1)``; the user leaves when it reaches 0. With the defaults (3, 3, 1, 0) a
    user tolerates three recommendations at the floor reward, and never leaves while every
    reward is at least ``satisfied``.
    """

    def __init__(
        self,
        *,
        initial: float = 3.0,
        satisfied: float = 3.0,
        floor: float = MIN_REWARD,
        ceiling: float = MAX_REWARD,
        recovery: float = 0.0,
    ) -> None:
        if not floor < satisfied <= ceiling:
            raise ValueError("need floor < satisfied <= ceiling")
        if initial <= 0:
            raise ValueError("initial patience must be positive")
        self.initial = float(initial)
        self.satisfied = float(satisfied)
        self.floor = float(floor)
        self.ceiling = float(ceiling)
        self.recovery = float(recovery)
        self._patience = np.zeros(0, dtype=np.float64)

    def allocate(self, n_slots: int) -> None:
        self._patience = np.zeros(n_slots, dtype=np.float64)

    def start(self, slots: np.ndarray) -> None:
        self._patience[slots] = self.initial

    @property
    def patience(self) -> np.ndarray:
        """[n_slots] current patience (a copy)."""
        return self._patience.copy()

    def _after(self, slots: np.ndarray, rewards: np.ndarray) -> np.ndarray:
        r = np.asarray(rewards, dtype=np.float64)
        drop = np.clip((self.satisfied - r) / (self.satisfied - self.floor), 0.0, 1.0)
        gain = np.zeros_like(r)
        if self.recovery > 0 and self.ceiling > self.satisfied:
            span = self.ceiling - self.satisfied
            gain = self.recovery * np.clip((r - self.satisfied) / span, 0.0, 1.0)
        return np.minimum(self.initial, self._patience[slots] - drop + gain)

    def leaves(
        self,
        slots: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        recommended: np.ndarray,
        steps: np.ndarray,
    ) -> np.ndarray:
        # Pure: the oracle asks about every catalogue item; state changes in update().
        return self._after(np.asarray(slots), rewards) <= 1e-9

    def update(self, slots: np.ndarray, actions: np.ndarray, rewards: np.ndarray) -> None:
        slots = np.asarray(slots)
        self._patience[slots] = self._after(slots, rewards)


# -- the environment ------------------------------------------------------------------------
def split_users(num_users: int, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded disjoint (train, test) user index arrays, each sorted."""
    if num_users < 2:
        raise ValueError(f"need at least 2 users to split into train and test, got {num_users}")
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    perm = np.random.default_rng(seed).permutation(num_users)
    n_test = min(max(1, round(num_users * test_fraction)), num_users - 1)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def prefix_lengths(dataset: SequenceDataset, config: SequentialEnvConfig) -> np.ndarray:
    """[U] length of each user's initial history prefix."""
    n = np.asarray([len(s) for s in dataset.sequences], dtype=np.int64)
    p = np.maximum(config.min_prefix, n - config.continuation_items)
    return np.minimum(p, np.maximum(n - 1, 1))


class SequentialEnv(RecBatchEnv):
    """A :class:`RecBatchEnv` over real user sequences that knows each user's true
    continuation (for the ``nextitem`` reference policy and diagnostics)."""

    def __init__(
        self,
        *,
        dataset: SequenceDataset,
        prefixes: np.ndarray,
        user_model: SequentialUserModel,
        env_config: SequentialEnvConfig,
        **kwargs: Any,
    ) -> None:
        self.dataset = dataset
        self.prefixes = np.asarray(prefixes, dtype=np.int64)
        self.user_model = user_model
        self.env_config = env_config
        super().__init__(initial_history=self.initial_items, **kwargs)

    def initial_items(self, user: int) -> list[int]:
        """The user's real history before the episode."""
        return self.dataset.sequences[user][: self.prefixes[user]].tolist()

    def continuation(self, user: int) -> np.ndarray:
        """The user's real items after the initial history, in order."""
        return self.dataset.sequences[user][self.prefixes[user] :]
