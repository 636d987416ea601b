"""Minibatches of transitions as tensors, the learners' only input."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from policy.types import Transition, pad_histories


@dataclass
class TransitionBatch:
    """B transitions (s_t, a_t, r_t, s_t+1) with states as padded item histories."""

    histories: torch.Tensor
    """[B, L] int64 state x_1:t, right-aligned, ``PAD = -1``."""
    user_ids: torch.Tensor
    """[B] int64 user ids (used only by configs with a user embedding)."""
    actions: torch.Tensor
    """[B] int64 recommended item a_t."""
    rewards: torch.Tensor
    """[B] float32 reward r_t."""
    next_histories: torch.Tensor
    """[B, L] int64 next state x_1:t+1 (the history with a_t appended)."""
    dones: torch.Tensor
    """[B] float32, 1 where the user left: no bootstrapping from s_t+1."""
    propensities: torch.Tensor
    """[B] float32 probability of a_t under the acting policy."""
    returns: torch.Tensor | None = None
    """[B] float32 discounted Monte Carlo return from step t, when whole episodes are
    known (the in-process runner); REINFORCE uses it, the others ignore it."""

    def __len__(self) -> int:
        return int(self.actions.shape[0])

    @classmethod
    def from_arrays(
        cls,
        *,
        histories: np.ndarray,
        user_ids: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        next_histories: np.ndarray,
        dones: np.ndarray,
        propensities: np.ndarray | None = None,
        returns: np.ndarray | None = None,
    ) -> TransitionBatch:
        """Wrap numpy arrays (copied) as tensors."""
        n = len(actions)
        props = np.ones(n, dtype=np.float32) if propensities is None else propensities
        return cls(
            histories=torch.as_tensor(np.array(histories, dtype=np.int64)),
            user_ids=torch.as_tensor(np.array(user_ids, dtype=np.int64)),
            actions=torch.as_tensor(np.array(actions, dtype=np.int64)),
            rewards=torch.as_tensor(np.array(rewards, dtype=np.float32)),
            next_histories=torch.as_tensor(np.array(next_histories, dtype=np.int64)),
            dones=torch.as_tensor(np.array(dones, dtype=np.float32)),
            propensities=torch.as_tensor(np.array(props, dtype=np.float32)),
            returns=None if returns is None else torch.as_tensor(
                np.array(returns, dtype=np.float32)
            ),
        )

    @classmethod
    def from_transitions(cls, items: Sequence[Transition], max_len: int) -> TransitionBatch:
        """Stack transitions; histories keep their most recent ``max_len`` items."""
        if not items:
            raise ValueError("cannot build a batch from no transitions")
        return cls.from_arrays(
            histories=pad_histories([t.history for t in items], max_len),
            user_ids=np.asarray([t.user_id for t in items], dtype=np.int64),
            actions=np.asarray([t.action for t in items], dtype=np.int64),
            rewards=np.asarray([t.reward for t in items], dtype=np.float32),
            next_histories=pad_histories([t.next_history for t in items], max_len),
            dones=np.asarray([t.done for t in items], dtype=np.float32),
            propensities=np.asarray([t.propensity for t in items], dtype=np.float32),
        )
