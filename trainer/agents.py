"""Online training agents for the in-process runner (no environments imported here).

An :class:`Agent` turns observations into actions and learns from each batched step.
``simulator_client.experiments`` drives agents against environments; the service's trainer
drives the same learners from the feedback bus. :class:`LearnerAgent` wraps any learner
from ``trainer.learners``:

* off-policy learners (A2C, DQN): every transition goes into a replay buffer D; after a
  warm-up, each batched step triggers ``updates_per_step`` minibatch updates (Algorithms
  1–2, lines "store transition, sample minibatch b from D, update").
* on-policy learners (PG): transitions are held per episode; when an episode ends its
  discounted returns G_t are computed, and once ``batch_size`` finished transitions are
  collected they are used for one update and dropped.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from policy.mixed import MixedPolicy
from trainer.batch import TransitionBatch
from trainer.learners.base import Learner
from trainer.replay import ReplayBuffer


@dataclass(frozen=True)
class StepBatch:
    """One step of B parallel users, as arrays (rows of finished users are excluded)."""

    histories: np.ndarray
    """[B, W] state before the step (PAD-padded, right-aligned)."""
    user_ids: np.ndarray
    """[B] user ids."""
    actions: np.ndarray
    """[B] recommended items."""
    rewards: np.ndarray
    """[B] rewards."""
    next_histories: np.ndarray
    """[B, W] state after the step."""
    terminated: np.ndarray
    """[B] bool: the user left (no bootstrap)."""
    truncated: np.ndarray
    """[B] bool: the episode hit its step cap (bootstrap, but the episode is over)."""
    propensities: np.ndarray
    """[B] probability of each action under the acting policy."""
    slots: np.ndarray
    """[B] parallel-slot index of each row (to assemble episodes)."""


class Agent(Protocol):
    """What the experiment runner trains and evaluates.

    Two optional methods are not members of the protocol (the runner looks for them with
    ``getattr``): ``report() -> dict`` (method statistics for the results) and
    ``ranking_scores(histories [B, W], user_ids [B]) -> np.ndarray [B, I]``: a score per
    catalogue item, higher = likelier to be recommended, from the model the evaluator
    acts with (``simulator_client.evaluation.next_item_ranking`` ranks the test users'
    held-out next items with it). An agent without a cheap way to score the whole
    catalogue leaves ``ranking_scores`` out and the runner records no ranking for it.
    """

    name: str

    def act(
        self, histories: np.ndarray, user_ids: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Training-time actions and their propensities, ``([B], [B])``."""
        ...

    def observe(self, step: StepBatch) -> dict[str, float]:
        """Learn from a step; returns the metrics of any updates made (may be empty)."""
        ...

    def evaluator(self) -> EvalActor:
        """A frozen acting function for evaluation (a snapshot of the current policy)."""
        ...


class EvalActor(Protocol):
    """Acts for evaluation: ``[B, W]`` histories and ``[B]`` users → ``[B]`` items."""

    def __call__(
        self, histories: np.ndarray, user_ids: np.ndarray, rng: np.random.Generator
    ) -> np.ndarray: ...


@dataclass(frozen=True)
class OnlineConfig:
    """How a learner is fed during online training."""

    batch_size: int = 64
    """Minibatch size (replay samples, or finished on-policy transitions per update)."""
    replay_capacity: int = 100_000
    """Replay buffer size (off-policy learners)."""
    warmup: int = 256
    """Transitions stored before the first off-policy update."""
    updates_per_step: int = 1
    """Off-policy updates per batched environment step."""
    mask_history: bool = False
    """Never recommend an item already in the user's history (training and evaluation)."""
    replay_window: int = 50
    """History items stored per replayed state with ``mask_history`` (at least the
    encoder's window): the learner masks the same items the acting policy did."""
    eval_explore: bool = True
    """Evaluate with the policy's exploration, as it acts when deployed (True; the paper's
    curves come from the online episodes themselves), or greedily (False)."""


class RandomAgent:
    """Uniform random recommendations; learns nothing (the floor of every table)."""

    def __init__(self, num_items: int, name: str = "random", *, seed: int = 0) -> None:
        self.name = name
        self.num_items = num_items
        self._score_rng = np.random.default_rng(np.random.SeedSequence([seed, 47]))

    def act(
        self, histories: np.ndarray, user_ids: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        n = len(histories)
        return rng.integers(0, self.num_items, size=n), np.full(n, 1.0 / self.num_items)

    def observe(self, step: StepBatch) -> dict[str, float]:
        return {}

    def evaluator(self) -> EvalActor:
        def act(
            histories: np.ndarray, user_ids: np.ndarray, rng: np.random.Generator
        ) -> np.ndarray:
            return rng.integers(0, self.num_items, size=len(histories))

        return act

    def ranking_scores(self, histories: np.ndarray, user_ids: np.ndarray) -> np.ndarray:
        """Seeded uniform random scores ``[B, I]`` (the chance level of a ranking)."""
        return self._score_rng.random((len(histories), self.num_items))


@dataclass
class _Episode:
    histories: list[np.ndarray] = field(default_factory=list)
    next_histories: list[np.ndarray] = field(default_factory=list)
    user_ids: list[int] = field(default_factory=list)
    actions: list[int] = field(default_factory=list)
    rewards: list[float] = field(default_factory=list)
    terminated: list[bool] = field(default_factory=list)
    propensities: list[float] = field(default_factory=list)


class LearnerAgent:
    """Collects experience with the learner's live policy and updates the learner."""

    def __init__(self, name: str, learner: Learner, config: OnlineConfig, *, seed: int) -> None:
        self.name = name
        self.learner = learner
        self.config = config
        self._rng = np.random.default_rng(seed)
        max_len = learner.config.max_len
        if config.mask_history:
            max_len = max(max_len, config.replay_window)
            if hasattr(learner, "mask_history"):
                learner.mask_history = True
        self.replay = None if learner.on_policy else ReplayBuffer(config.replay_capacity, max_len)
        self._open: dict[int, _Episode] = {}
        self._ready: list[_Episode] = []
        self._ready_count = 0
        self.updates = 0
        # Discount for Monte Carlo returns: the learner's own γ (1 if it has none).
        self.gamma = float(getattr(getattr(learner, "hyper", None), "gamma", 1.0))

    def act(
        self, histories: np.ndarray, user_ids: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        policy = self._masked(self.learner.acting_policy())
        return policy.act_arrays(histories, user_ids, explore=True, rng=rng)

    def _masked(self, policy: MixedPolicy) -> MixedPolicy:
        if self.config.mask_history:
            policy.exploration = replace(policy.exploration, mask_history=True)
        return policy

    def observe(self, step: StepBatch) -> dict[str, float]:
        if self.replay is not None:
            return self._observe_off_policy(step)
        return self._observe_on_policy(step)

    def _observe_off_policy(self, step: StepBatch) -> dict[str, float]:
        assert self.replay is not None
        self.replay.add_arrays(
            histories=step.histories,
            user_ids=step.user_ids,
            actions=step.actions,
            rewards=step.rewards,
            next_histories=step.next_histories,
            dones=step.terminated.astype(np.float32),
            propensities=step.propensities,
        )
        if len(self.replay) < max(self.config.warmup, 1):
            return {}
        metrics: dict[str, float] = {}
        for _ in range(self.config.updates_per_step):
            batch = self.replay.sample(self.config.batch_size, self._rng)
            metrics = self.learner.update(batch)
            self.updates += 1
        return metrics

    def _observe_on_policy(self, step: StepBatch) -> dict[str, float]:
        for i, slot in enumerate(step.slots.tolist()):
            ep = self._open.setdefault(int(slot), _Episode())
            ep.histories.append(step.histories[i])
            ep.next_histories.append(step.next_histories[i])
            ep.user_ids.append(int(step.user_ids[i]))
            ep.actions.append(int(step.actions[i]))
            ep.rewards.append(float(step.rewards[i]))
            ep.terminated.append(bool(step.terminated[i]))
            ep.propensities.append(float(step.propensities[i]))
            if step.terminated[i] or step.truncated[i]:
                self._ready.append(self._open.pop(int(slot)))
                self._ready_count += len(ep.actions)
        if self._ready_count < self.config.batch_size:
            return {}
        batch = self._episodes_batch(self._ready)
        self._ready, self._ready_count = [], 0
        self.updates += 1
        return self.learner.update(batch)

    def _episodes_batch(self, episodes: list[_Episode]) -> TransitionBatch:
        gamma = self.gamma
        returns: list[float] = []
        for ep in episodes:
            g, out = 0.0, []
            for r in reversed(ep.rewards):
                g = r + gamma * g
                out.append(g)
            returns.extend(reversed(out))
        return TransitionBatch.from_arrays(
            histories=np.stack([h for ep in episodes for h in ep.histories]),
            user_ids=np.asarray([u for ep in episodes for u in ep.user_ids]),
            actions=np.asarray([a for ep in episodes for a in ep.actions]),
            rewards=np.asarray([r for ep in episodes for r in ep.rewards]),
            next_histories=np.stack([h for ep in episodes for h in ep.next_histories]),
            dones=np.asarray([d for ep in episodes for d in ep.terminated], dtype=np.float32),
            propensities=np.asarray([p for ep in episodes for p in ep.propensities]),
            returns=np.asarray(returns, dtype=np.float32),
        )

    def snapshot(self) -> MixedPolicy:
        """Independent copy of the current policy."""
        return self.learner.snapshot()

    def ranking_scores(self, histories: np.ndarray, user_ids: np.ndarray) -> np.ndarray:
        """π̃'s probabilities ``[B, I]`` (the α-mixture for A-iALP_ap), the distribution the
        evaluator acts from: its exploration (ε, sampling, greedy) keeps their order.

        Read through the live weights, which equal :meth:`evaluator`'s snapshot while
        nothing is learned, and without copying the network for every batch. Subclasses
        that re-rank the actor's proposals (llm-online's judge) are scored by the actor."""
        return self.learner.acting_policy().probs(histories, user_ids)

    def evaluator(self) -> EvalActor:
        policy = self._masked(self.learner.snapshot())
        explore = self.config.eval_explore

        def act(
            histories: np.ndarray, user_ids: np.ndarray, rng: np.random.Generator
        ) -> np.ndarray:
            items, _ = policy.act_arrays(histories, user_ids, explore=explore, rng=rng)
            return items

        return act
