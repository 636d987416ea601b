"""A fixed-capacity replay buffer D of transitions (Algorithms 1 and 2), stored as arrays."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from policy.types import PAD, Transition, pad_histories
from trainer.batch import TransitionBatch


class ReplayBuffer:
    """Ring buffer: once full, the oldest transitions are overwritten first."""

    def __init__(self, capacity: int, max_len: int) -> None:
        if capacity <= 0 or max_len <= 0:
            raise ValueError("capacity and max_len must be positive")
        self.capacity = int(capacity)
        self.max_len = int(max_len)
        self._hist = np.full((capacity, max_len), PAD, dtype=np.int64)
        self._next = np.full((capacity, max_len), PAD, dtype=np.int64)
        self._user = np.zeros(capacity, dtype=np.int64)
        self._action = np.zeros(capacity, dtype=np.int64)
        self._reward = np.zeros(capacity, dtype=np.float32)
        self._done = np.zeros(capacity, dtype=np.float32)
        self._prop = np.ones(capacity, dtype=np.float32)
        self._size = 0
        self._pos = 0

    def __len__(self) -> int:
        return self._size

    def _fit(self, arr: np.ndarray) -> np.ndarray:
        """Right-aligned [n, W] history array → [n, max_len]."""
        w = arr.shape[1]
        if w >= self.max_len:
            return arr[:, w - self.max_len :]
        pad = np.full((arr.shape[0], self.max_len - w), PAD, dtype=np.int64)
        return np.concatenate([pad, arr], axis=1)

    def add_arrays(
        self,
        *,
        histories: np.ndarray,
        user_ids: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_histories: np.ndarray,
        dones: np.ndarray,
        propensities: np.ndarray | None = None,
    ) -> None:
        """Append n transitions given as arrays (histories right-aligned, PAD-padded)."""
        n = len(actions)
        if n == 0:
            return
        if n > self.capacity:  # only the newest fit
            sl = slice(n - self.capacity, n)
            histories, user_ids, actions = histories[sl], user_ids[sl], actions[sl]
            rewards, next_histories, dones = rewards[sl], next_histories[sl], dones[sl]
            propensities = None if propensities is None else propensities[sl]
            n = self.capacity
        idx = (self._pos + np.arange(n)) % self.capacity
        self._hist[idx] = self._fit(np.asarray(histories, dtype=np.int64))
        self._next[idx] = self._fit(np.asarray(next_histories, dtype=np.int64))
        self._user[idx] = user_ids
        self._action[idx] = actions
        self._reward[idx] = rewards
        self._done[idx] = dones
        self._prop[idx] = 1.0 if propensities is None else propensities
        self._pos = int((self._pos + n) % self.capacity)
        self._size = min(self._size + n, self.capacity)

    def add_transitions(self, items: Sequence[Transition]) -> None:
        """Append transitions as they come from the feedback bus."""
        if not items:
            return
        self.add_arrays(
            histories=pad_histories([t.history for t in items], self.max_len),
            user_ids=np.asarray([t.user_id for t in items], dtype=np.int64),
            actions=np.asarray([t.action for t in items], dtype=np.int64),
            rewards=np.asarray([t.reward for t in items], dtype=np.float32),
            next_histories=pad_histories([t.next_history for t in items], self.max_len),
            dones=np.asarray([t.done for t in items], dtype=np.float32),
            propensities=np.asarray([t.propensity for t in items], dtype=np.float32),
        )

    def sample(self, batch_size: int, rng: np.random.Generator) -> TransitionBatch:
        """A uniform minibatch (with replacement) of ``batch_size`` stored transitions."""
        if self._size == 0:
            raise ValueError("cannot sample from an empty replay buffer")
        idx = rng.integers(0, self._size, size=batch_size)
        return TransitionBatch.from_arrays(
            histories=self._hist[idx],
            user_ids=self._user[idx],
            actions=self._action[idx],
            rewards=self._reward[idx],
            next_histories=self._next[idx],
            dones=self._done[idx],
            propensities=self._prop[idx],
        )
