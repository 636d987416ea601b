"""What an experiment method is given, and the registry methods plug into.

A method is a factory ``MethodContext -> Agent`` registered under a name with
:func:`register_method`; :mod:`simulator_client.experiments.methods` registers the
built-in ones (A-iALP variants, the VW bandit, LLMOnline, supervised SASRec, ...).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from policy.checkpoint import init_policy
from policy.config import PolicyConfig
from policy.item_features import ItemFeatures
from policy.mixed import MixedPolicy
from simulator_client.envs.base import RecBatchEnv
from simulator_client.item_features import LOG_SUBSETS, operator_logs
from trainer.agents import Agent, LearnerAgent, OnlineConfig
from trainer.learners import make_learner

CURVE_METRICS = ("return", "length", "r_avg")


@dataclass(frozen=True)
class ExperimentConfig:
    """Budget and evaluation protocol of one experiment."""

    steps: int = 20_000
    """User interactions (transitions) of online training per method."""
    eval_every: int = 2_000
    """Interactions between evaluations."""
    eval_episodes: int = 290
    """Test episodes per evaluation (Coat: one per user)."""
    num_envs: int = 16
    """Users stepped in parallel in the training environment."""
    seed: int = 0
    """Seeds networks, users, exploration and evaluation."""
    online: OnlineConfig = field(default_factory=OnlineConfig)
    """How learners are fed (batch size, replay, warm-up, updates per step)."""
    hidden: int = 64
    """Encoder width of learned methods."""
    blocks: int = 2
    """Self-attention blocks of learned methods."""
    max_len: int | None = 20
    """History window of the encoder (None: the environment's whole window). 20 recent
    items cover the leave rule's window and keep CPU training fast."""
    user_embedding: bool = True
    """Give the encoder a user embedding sized to the environment's users."""
    hyper: dict[str, dict[str, Any]] = field(default_factory=dict)
    """Per-method learner hyperparameters, e.g. ``{"a2c": {"lr": 1e-3}}``."""
    items: str = "features"
    """Item representation of learned methods: ``features`` (factorised heads over
    features from the training logs, ``simulator_client.item_features``) or ``id`` (one
    free output row per item)."""
    item_features: tuple[str, ...] = ("logpop", "cooc")
    """Feature kinds with ``items = "features"`` (``logpop``, ``cooc``, ``text``)."""
    logs: str = "all"
    """Training logs the offline parts of a run see (item features, the popularity list,
    supervised SASRec, LAAC, the VW peer's features): ``all``, or ``imbalanced`` — a
    subset in which the most popular 10 % of the items hold 90 % of the interactions
    (``simulator_client.item_features.imbalanced_logs``). Every method of a run sees the
    same logs."""
    prior_scale: float = 3.0
    """With ``items = "features"``: weight of the log-popularity prior in the actor's
    logits at the start (``PolicyConfig.prior_scale``)."""
    item_ids: bool = True
    """With ``items = "features"``: keep a free per-item vector and bias beside the
    feature terms of the heads (``PolicyConfig.item_ids``); False scores items through
    their features only."""

    def __post_init__(self) -> None:
        if self.items not in ("features", "id"):
            raise ValueError(f"items must be 'features' or 'id', not {self.items!r}")
        if self.steps < 0 or self.eval_every <= 0 or self.eval_episodes <= 0:
            raise ValueError("steps must be >= 0, eval_every and eval_episodes positive")
        if self.num_envs <= 0:
            raise ValueError("num_envs must be positive")
        if self.logs not in LOG_SUBSETS:
            raise ValueError(f"logs must be one of {', '.join(LOG_SUBSETS)}, not {self.logs!r}")


@dataclass(frozen=True)
class MethodContext:
    """What a method factory may use to build its agent."""

    name: str
    train_env: RecBatchEnv
    policy_config: PolicyConfig
    experiment: ExperimentConfig
    seed: int
    hyper: dict[str, Any]
    item_features: ItemFeatures | None = None
    """The catalogue's features when ``policy_config.item_features`` > 0."""
    notes: dict[str, Any] = field(default_factory=dict)
    """What the factory reports about how it built the agent (``"pretrain"``: the summary
    of Algorithm 1's run behind πθ), copied into the run's results."""

    def training_logs(self) -> list[np.ndarray]:
        """The training users' logs this run's offline parts may read (the
        experiment's ``logs`` subset), one sequence per user of ``train_env.users``."""
        return operator_logs(self.train_env, self.experiment.logs, seed=0)

    def initial_policy(self) -> MixedPolicy | None:
        """A fresh policy carrying the item features (None with plain item ids): pass it
        as ``init`` to a learner that starts from scratch."""
        if self.item_features is None:
            return None
        return init_policy(self.policy_config, seed=self.seed, item_features=self.item_features)


MethodFactory = Callable[[MethodContext], Agent]
_METHODS: dict[str, MethodFactory] = {}


def register_method(name: str, factory: MethodFactory) -> None:
    """Make ``name`` selectable in :func:`run_experiment` and ``ialp experiment``."""
    _METHODS[name] = factory


def learner_agent(ctx: MethodContext, *, init: MixedPolicy | None = None) -> LearnerAgent:
    """The standard agent for learner ``ctx.name`` (optionally from pre-trained weights)."""
    init = init if init is not None else ctx.initial_policy()
    learner = make_learner(ctx.name, ctx.policy_config, seed=ctx.seed, init=init, **ctx.hyper)
    return LearnerAgent(ctx.name, learner, ctx.experiment.online, seed=ctx.seed + 1)
