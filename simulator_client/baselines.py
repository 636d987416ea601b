"""Reference policies for evaluating environments: random, popular and oracle.

A batch policy maps a ``BatchObs`` to one item per row. These baselines bracket what a
learned policy should reach: random and popular from below, oracle from above.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

from policy.types import PAD
from simulator_client.envs.base import BatchObs, RecBatchEnv, RewardModel
from simulator_client.envs.sequential import SequentialEnv


class BatchPolicy(Protocol):
    """Anything that picks one item per observation row."""

    def act(self, obs: BatchObs, rng: np.random.Generator) -> np.ndarray:
        """[B] item ids."""
        ...


class RandomPolicy:
    """Uniform over the catalogue (repeats allowed: the leave rule judges them)."""

    def __init__(self, num_items: int) -> None:
        self.num_items = num_items

    def act(self, obs: BatchObs, rng: np.random.Generator) -> np.ndarray:
        return rng.integers(0, self.num_items, size=len(obs))


class PopularPolicy:
    """The most popular training item not already in the user's visible history."""

    def __init__(self, popularity: np.ndarray) -> None:
        # Stable order: ties broken by item id, so results are deterministic.
        self.order = np.argsort(-np.asarray(popularity), kind="stable")

    def act(self, obs: BatchObs, rng: np.random.Generator) -> np.ndarray:
        out = np.empty(len(obs), dtype=np.int64)
        for b in range(len(obs)):
            seen = set(obs.history[b][obs.history[b] != PAD].tolist())
            out[b] = next((i for i in self.order[: len(seen) + 1] if int(i) not in seen), 0)
        return out


class OraclePolicy:
    """Knows the environment's reward model and leave rule: picks, for every user, the
    highest-reward item that does not make the user leave (greedy, one step ahead).

    An upper bound to report beside learned policies, not a policy one could deploy.
    With ``reward_model`` (``train-oracle``: the training environment's) it ranks items
    by that model instead, acting in ``env``: the Return of a policy that learned the
    training simulator perfectly, one step ahead, scored by the test environment. No
    policy trained on that simulator can be expected above it.
    """

    def __init__(self, env: RecBatchEnv, reward_model: RewardModel | None = None) -> None:
        self.env = env
        self.reward_model = reward_model or env.reward_model

    def act(self, obs: BatchObs, rng: np.random.Generator) -> np.ndarray:
        env = self.env
        n_items = env.num_items
        rewards = self.reward_model.reward_all(obs.user_ids, obs.history, n_items)  # [B, I]
        b = len(obs)
        rec = env.recommended()  # [B, T]
        slots = np.repeat(np.arange(b), n_items)
        leave = env.leave_rule.leaves(
            slots,
            np.tile(np.arange(n_items), b),
            rewards.reshape(-1),
            np.repeat(rec, n_items, axis=0),
            np.repeat(obs.steps, n_items),
        ).reshape(b, n_items)
        # Small seeded noise breaks ties between equally rated items without bias.
        score = rewards + rng.uniform(0.0, 1e-3, size=rewards.shape)
        score[leave] -= 1e6
        return score.argmax(axis=1)


def make_baseline(name: str, env: RecBatchEnv) -> BatchPolicy:
    """Build ``random``, ``popular`` or ``oracle`` for ``env``."""
    if name == "random":
        return RandomPolicy(env.num_items)
    if name == "popular":
        if env.item_popularity is None:
            raise ValueError(f"environment {env.name!r} has no item popularity")
        return PopularPolicy(env.item_popularity)
    if name == "oracle":
        return OraclePolicy(env)
    raise ValueError(f"unknown baseline policy {name!r}: choose random, popular or oracle")


class NextItemPolicy:
    """Recommends the user's true next item: their real continuation, in order.

    Once the continuation is used up (short sequences), it falls back to the most popular
    training item not in the visible history. A calibration reference, not a deployable
    policy: it reads the users' future.
    """

    def __init__(self, env: SequentialEnv) -> None:
        if env.item_popularity is None:
            raise ValueError(f"environment {env.name!r} has no item popularity")
        self.env = env
        self.fallback = PopularPolicy(env.item_popularity)

    def act(self, obs: BatchObs, rng: np.random.Generator) -> np.ndarray:
        out = self.fallback.act(obs, rng)
        for b in range(len(obs)):
            cont = self.env.continuation(int(obs.user_ids[b]))
            t = int(obs.steps[b])
            if t < len(cont):
                out[b] = cont[t]
        return out


def baseline_for(name: str, env: RecBatchEnv, train_env: RecBatchEnv | None = None
                 ) -> BatchPolicy:
    """``make_baseline`` plus ``nextitem`` (alias ``replay``) for sequential environments
    and ``train-oracle`` (the oracle of ``train_env``'s reward model, acting in ``env``)."""
    if name == "train-oracle":
        if train_env is None:
            raise ValueError("policy 'train-oracle' needs the training environment")
        if train_env.num_items != env.num_items:
            raise ValueError("training and test environments have different catalogues")
        return OraclePolicy(env, train_env.reward_model)
    if name in ("nextitem", "replay"):
        if not isinstance(env, SequentialEnv):
            raise ValueError(f"policy {name!r} needs a sequential environment, not {env.name!r}")
        return NextItemPolicy(env)
    try:
        return make_baseline(name, env)
    except ValueError as exc:
        if isinstance(env, SequentialEnv) and name not in ("random", "popular", "oracle"):
            raise ValueError(f"{exc}, nextitem") from None
        raise
