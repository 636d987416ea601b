"""The batched recommendation environment and its gym-shaped single-user view.

An environment is a pool of users, a reward model (what rating a user gives an item given
their history) and a leave rule (when the user quits). ``RecBatchEnv`` steps many users at
once with array operations, so thousands of steps per second fit on one core; ``RecEnv``
is the gymnasium-shaped one-user view of the same machinery.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from policy.types import PAD, Observation


@dataclass(frozen=True)
class BatchObs:
    """Observations of B users, as arrays."""

    user_ids: np.ndarray
    """[B] int64 user index within the dataset."""
    history: np.ndarray
    """[B, W] int64 most recent item ids, right-aligned, left-padded with ``PAD``."""
    lengths: np.ndarray
    """[B] int64 number of valid (non-pad) items in ``history``."""
    steps: np.ndarray
    """[B] int64 recommendations made so far in this episode."""

    def __len__(self) -> int:
        return int(self.user_ids.shape[0])

    def row(self, i: int) -> Observation:
        """The single-user observation of row ``i``."""
        n = int(self.lengths[i])
        hist = self.history[i, self.history.shape[1] - n :] if n else self.history[i, :0]
        return Observation(user_id=int(self.user_ids[i]), history=tuple(int(x) for x in hist))


class RewardModel(ABC):
    """Gives the reward a user returns for an item, given their current history."""

    @abstractmethod
    def reward(self, users: np.ndarray, history: np.ndarray, actions: np.ndarray) -> np.ndarray:
        """``users`` [B], ``history`` [B, W] (``PAD``-padded), ``actions`` [B] → rewards [B]."""

    def reward_all(self, users: np.ndarray, history: np.ndarray, num_items: int) -> np.ndarray:
        """Rewards of every catalogue item: [B, I]. Override with a faster path if any."""
        b = len(users)
        items = np.tile(np.arange(num_items), b)
        out = self.reward(np.repeat(users, num_items), np.repeat(history, num_items, 0), items)
        return out.reshape(b, num_items)

    def max_reward(self) -> float | None:
        """The largest reward one step can give (None when unknown)."""
        return None


class LeaveRule(ABC):
    """Decides when a user quits. May keep per-slot state (e.g. patience).

    ``leaves`` must not change state, so an oracle may ask it about many candidate items;
    state changes happen in ``update``, called once per real step.
    """

    def allocate(self, n_slots: int) -> None:  # noqa: B027 - optional hook
        """Size per-slot state for ``n_slots`` parallel users."""

    def start(self, slots: np.ndarray) -> None:  # noqa: B027 - optional hook
        """Reset the state of ``slots`` at the start of their episodes."""

    def update(  # noqa: B027 - optional hook
        self, slots: np.ndarray, actions: np.ndarray, rewards: np.ndarray
    ) -> None:
        """Advance per-slot state after a real step of ``slots``."""

    @abstractmethod
    def leaves(
        self,
        slots: np.ndarray,
        actions: np.ndarray,
        rewards: np.ndarray,
        recommended: np.ndarray,
        steps: np.ndarray,
    ) -> np.ndarray:
        """Whether each user in ``slots`` quits after receiving ``actions``.

        ``recommended`` is [n, T] of the items recommended earlier in the episode
        (``PAD`` beyond ``steps``), excluding the current action.
        """


class MatrixReward(RewardModel):
    """Reward looked up in a dense [U, I] matrix (Coat)."""

    def __init__(self, matrix: np.ndarray) -> None:
        self.matrix = np.asarray(matrix, dtype=np.float32)

    def reward(self, users: np.ndarray, history: np.ndarray, actions: np.ndarray) -> np.ndarray:
        return self.matrix[users, actions]

    def reward_all(self, users: np.ndarray, history: np.ndarray, num_items: int) -> np.ndarray:
        return self.matrix[users]

    def max_reward(self) -> float:
        return float(self.matrix.max())


class RecBatchEnv:
    """B users stepped in lock-step. Slots that finished stay finished until reset.

    Rewards are given for every recommendation, including the one after which the user
    quits (EasyRL4Rec convention), so Length counts that last item.
    """

    def __init__(
        self,
        *,
        name: str,
        num_items: int,
        users: np.ndarray,
        reward_model: RewardModel,
        leave_rule: LeaveRule,
        max_steps: int,
        history_window: int = 50,
        initial_history: Callable[[int], Sequence[int]] | None = None,
        item_vectors: np.ndarray | None = None,
        item_popularity: np.ndarray | None = None,
        item_text: Sequence[str] | None = None,
        item_ids: Sequence[str] | None = None,
    ) -> None:
        if len(users) == 0:
            raise ValueError(f"environment {name!r} has no users")
        self.name = name
        self.num_items = int(num_items)
        self.users = np.asarray(users, dtype=np.int64)
        self.reward_model = reward_model
        self.leave_rule = leave_rule
        self.max_steps = int(max_steps)
        self.history_window = int(history_window)
        self.initial_history = initial_history
        self.item_vectors = item_vectors
        """[I, d] item representation used by the diversity metric."""
        self.item_popularity = item_popularity
        """[I] training interaction counts, used by popularity baselines and novelty."""
        self.item_text = tuple(item_text) if item_text is not None else None
        self.item_ids: tuple[str, ...] = (
            tuple(str(x) for x in item_ids) if item_ids is not None
            else tuple(str(i) for i in range(self.num_items))
        )
        """The catalogue's external id per item index (what a client sends over HTTP);
        the decimal index where the dataset has no ids of its own (Coat)."""
        if len(self.item_ids) != self.num_items:
            raise ValueError(f"environment {name!r}: {len(self.item_ids)} item ids for "
                             f"{self.num_items} items")
        self._n = 0
        self._alloc(0)

    # -- state -------------------------------------------------------------------------
    def _alloc(self, n: int) -> None:
        self._n = n
        self._user = np.zeros(n, dtype=np.int64)
        self._hist = np.full((n, self.history_window), PAD, dtype=np.int64)
        self._len = np.zeros(n, dtype=np.int64)
        self._rec = np.full((n, self.max_steps), PAD, dtype=np.int64)
        self._steps = np.zeros(n, dtype=np.int64)
        self._active = np.zeros(n, dtype=bool)
        self.leave_rule.allocate(n)

    def max_return(self) -> float | None:
        """The largest Return an episode can reach: ``max_steps`` × the reward model's
        largest one-step reward (None when the reward model does not know it). The
        experiment suite bounds logged losses and Q values by it."""
        top = self.reward_model.max_reward()
        return None if top is None else self.max_steps * float(top)

    @property
    def active(self) -> np.ndarray:
        """[B] bool: slots whose episode is still running."""
        return self._active.copy()

    def observe(self) -> BatchObs:
        """Current observations of every slot (finished slots keep their last state)."""
        return BatchObs(
            user_ids=self._user.copy(),
            history=self._hist.copy(),
            lengths=self._len.copy(),
            steps=self._steps.copy(),
        )

    # -- episodes ----------------------------------------------------------------------
    def reset(self, users: np.ndarray) -> BatchObs:
        """Start one episode per entry of ``users`` (dataset user ids) and observe."""
        users = np.asarray(users, dtype=np.int64)
        self._alloc(len(users))
        self.reset_slots(np.arange(len(users)), users)
        return self.observe()

    def reset_slots(self, slots: np.ndarray, users: np.ndarray) -> None:
        """Restart the episodes of ``slots`` with ``users`` (for auto-reset loops)."""
        slots = np.asarray(slots, dtype=np.int64)
        self._user[slots] = users
        self._hist[slots] = PAD
        self._len[slots] = 0
        self._rec[slots] = PAD
        self._steps[slots] = 0
        self._active[slots] = True
        if self.initial_history is not None:
            w = self.history_window
            for slot, user in zip(slots.tolist(), np.asarray(users).tolist(), strict=True):
                init = list(self.initial_history(int(user)))[-w:]
                if init:
                    self._hist[slot, w - len(init) :] = init
                    self._len[slot] = len(init)
        self.leave_rule.start(slots)

    def sample_users(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` users drawn by cycling seeded permutations of the pool (balanced)."""
        reps = -(-n // len(self.users))
        perms = [rng.permutation(self.users) for _ in range(reps)]
        return np.concatenate(perms)[:n]

    def step(
        self, actions: np.ndarray
    ) -> tuple[BatchObs, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Recommend ``actions[b]`` to every active slot b.

        Returns ``(obs, rewards, terminated, truncated, info)``; for slots that were
        already finished the reward is 0 and both flags are False. ``info["active"]`` is
        the mask of slots that took this step.
        """
        actions = np.asarray(actions, dtype=np.int64)
        if actions.shape != (self._n,):
            raise ValueError(f"expected {self._n} actions, got shape {actions.shape}")
        act = np.flatnonzero(self._active)
        rewards = np.zeros(self._n, dtype=np.float32)
        terminated = np.zeros(self._n, dtype=bool)
        truncated = np.zeros(self._n, dtype=bool)
        if len(act):
            a = actions[act]
            if a.min() < 0 or a.max() >= self.num_items:
                bad = int(a[(a < 0) | (a >= self.num_items)][0])
                raise ValueError(f"item id {bad} outside [0, {self.num_items})")
            r = self.reward_model.reward(self._user[act], self._hist[act], a)
            rewards[act] = r
            leave = self.leave_rule.leaves(act, a, r, self._rec[act], self._steps[act])
            self.leave_rule.update(act, a, r)
            # Record the action: episode log and sliding history window.
            self._rec[act, self._steps[act]] = a
            self._steps[act] += 1
            self._hist[act, :-1] = self._hist[act, 1:]
            self._hist[act, -1] = a
            self._len[act] = np.minimum(self._len[act] + 1, self.history_window)
            terminated[act] = leave
            truncated[act] = ~leave & (self._steps[act] >= self.max_steps)
            self._active[act] = ~(terminated[act] | truncated[act])
        info = {"active": np.isin(np.arange(self._n), act)}
        return self.observe(), rewards, terminated, truncated, info

    def recommended(self) -> np.ndarray:
        """[B, T] items recommended so far in each slot's episode (``PAD`` beyond)."""
        return self._rec.copy()

    def episode_items(self, slot: int) -> np.ndarray:
        """Items recommended so far in ``slot``'s episode."""
        return self._rec[slot, : self._steps[slot]].copy()


class RecEnv:
    """Gymnasium-shaped single-user view: ``reset(seed=)`` and ``step(action)``."""

    def __init__(self, core: RecBatchEnv) -> None:
        self.core = core
        self._rng = np.random.default_rng()

    @property
    def num_items(self) -> int:
        return self.core.num_items

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Observation, dict[str, Any]]:
        """Start an episode for a random user (or ``options["user_id"]``)."""
        if seed is not None:
            self._rng = np.random.default_rng(seed)
        if options and "user_id" in options:
            user = int(options["user_id"])
        else:
            user = int(self._rng.choice(self.core.users))
        obs = self.core.reset(np.asarray([user]))
        return obs.row(0), {"user_id": user}

    def step(self, action: int) -> tuple[Observation, float, bool, bool, dict[str, Any]]:
        """Recommend one item; returns ``(obs, reward, terminated, truncated, info)``."""
        if not self.core.active[0]:
            raise RuntimeError("episode is over: call reset() first")
        obs, r, term, trunc, _ = self.core.step(np.asarray([action]))
        info = {"step": int(obs.steps[0])}
        return obs.row(0), float(r[0]), bool(term[0]), bool(trunc[0]), info
