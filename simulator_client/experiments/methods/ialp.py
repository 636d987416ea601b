"""iALP and A-iALP as experiment methods (sections 4.2 and 5.2), and exploration variants.

Methods registered with :func:`simulator_client.experiments.register_method`:

* ``ialp``: the pre-trained πθ, frozen (no updates), evaluated greedily ("without further
  exploration"): section 5.2's "iALP" baseline; ``ialp-sampled``: the same πθ evaluated
  with its sampling (the experiment's ``eval_explore``).
* ``ialp-ft`` (alias ``ft``): A-iALP_ft, learner ``ft`` started from πθ.
* ``ialp-ap`` (alias ``ap``): A-iALP_ap, learner ``ap`` (θ frozen, β learned, α annealed)
  with the learner's default β start (a copy of θ); ``ialp-ap-copy`` and ``ialp-ap-random``
  force β = copy of θ (Algorithm 2) or a random β (section 5.2's setup).
* ``<method>+<strategy>`` for method in ``a2c``, ``ialp``, ``ialp-ft``, ``ialp-ap`` and
  strategy in ``greedy``, ``epsilon``, ``categorical``: the same method acting with that
  exploration strategy in training and evaluation (section 6.4, Figures 8–9). Their
  hyperparameters default to those of the base method.

Where πθ comes from (per method, in the experiment's ``hyper`` for that method name, or
for every iALP method at once under the key ``"ialp"``):

* ``"checkpoint": PATH``: a checkpoint written by ``ialp pretrain`` (its network shape
  must be the experiment's);
* otherwise πθ is pre-trained here with Algorithm 1 (``trainer.pretrain``) and the
  dataset's default offline judge (``policy.judge.spec.DEFAULT_PRETRAIN_JUDGES``), with the
  settings under ``"pretrain"`` (fields of :class:`trainer.pretrain.PretrainConfig`, plus
  ``users``: how many training users to start from, 0 = all, ``judge``: ``embedding`` or
  ``cooc``, and ``threshold`` of the embedding judge), and cached under
  ``<cache dir>/ialp-theta/<env>-<key>/`` where the key hashes the environment, the seed,
  the network shape and these settings. Later runs load it instead of pre-training again.
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from policy.checkpoint import init_policy, load_checkpoint
from policy.config import PolicyConfig
from policy.exploration import STRATEGIES, ExplorationConfig
from policy.item_features import ItemFeatures
from policy.judge.spec import default_pretrain_judge
from policy.mixed import MixedPolicy
from simulator_client.envs.base import RecBatchEnv
from simulator_client.experiments.cached import cache_folder, write_atomically
from simulator_client.experiments.context import MethodContext, register_method
from trainer.agents import Agent, EvalActor, LearnerAgent, OnlineConfig, StepBatch
from trainer.learners import make_learner
from trainer.learners.base import Learner

log = logging.getLogger(__name__)

IALP_KEYS = ("checkpoint", "pretrain", "exploration", "epsilon")
"""Settings of the iALP methods that are not learner hyperparameters."""
SHARED_KEY = "ialp"
"""Experiment ``hyper`` key whose settings apply to every iALP method."""

QUICK_PRETRAIN: dict[str, Any] = {"epochs": 1, "horizon": 10, "users": 128,
                                  "updates_per_step": 4, "warmup": 128,
                                  "candidates": "topk", "listwise": 1.0}
"""A small Algorithm 1 budget (seconds per environment), used by ``--quick`` suites."""

_MEMO: dict[str, MixedPolicy] = {}


# -- agents -----------------------------------------------------------------------------
class ExploringAgent(LearnerAgent):
    """A :class:`LearnerAgent` whose policy acts with a fixed exploration strategy."""

    def __init__(self, name: str, learner: Learner, config: OnlineConfig, *, seed: int,
                 exploration: ExplorationConfig | None = None) -> None:
        super().__init__(name, learner, config, seed=seed)
        self.exploration = exploration

    def _masked(self, policy: MixedPolicy) -> MixedPolicy:
        policy = super()._masked(policy)
        if self.exploration is not None:
            policy.exploration = replace(policy.exploration,
                                         strategy=self.exploration.strategy,
                                         epsilon=self.exploration.epsilon)
        return policy


class FrozenAgent:
    """Acts with a fixed policy and never learns (the iALP row of Tables 3 and 5).

    ``greedy``: evaluate with the likeliest item ("without further exploration", §5.2);
    otherwise as the experiment says (``eval_explore``: sampled by default)."""

    def __init__(self, name: str, policy: MixedPolicy, config: OnlineConfig, *,
                 greedy: bool = False) -> None:
        self.name = name
        self.policy = policy
        self.config = config
        self.greedy = greedy
        self.updates = 0
        if config.mask_history:
            policy.exploration = replace(policy.exploration, mask_history=True)

    def act(
        self, histories: np.ndarray, user_ids: np.ndarray, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray]:
        """Training-time actions: the policy with its exploration."""
        return self.policy.act_arrays(histories, user_ids, explore=True, rng=rng)

    def observe(self, step: StepBatch) -> dict[str, float]:
        """Nothing is learned."""
        return {}

    def snapshot(self) -> MixedPolicy:
        """The fixed policy (saved as the method's checkpoint by the runner)."""
        return self.policy

    def evaluator(self) -> EvalActor:
        """Acts as in deployment (``eval_explore``, or greedily) with the fixed policy."""
        explore = self.config.eval_explore and not self.greedy

        def act(
            histories: np.ndarray, user_ids: np.ndarray, rng: np.random.Generator
        ) -> np.ndarray:
            items, _ = self.policy.act_arrays(histories, user_ids, explore=explore, rng=rng)
            return items

        return act

    def ranking_scores(self, histories: np.ndarray, user_ids: np.ndarray) -> np.ndarray:
        """The fixed policy's probabilities ``[B, I]``: greedy evaluation takes their
        largest, sampled evaluation draws from them (same order either way)."""
        return self.policy.probs(histories, user_ids)


# -- πθ: load or pre-train --------------------------------------------------------------
def theta_cache_path(env_name: str, seed: int, policy_config: PolicyConfig,
                     pretrain: dict[str, Any], item_features: ItemFeatures | None = None
                     ) -> Path:
    """Folder of the cached πθ for these settings (``.../policy`` is the checkpoint)."""
    from trainer.pretrain import PretrainConfig

    # Naming the default judge is the same θ as not naming it.
    settings = {k: v for k, v in pretrain.items() if k != "judge"}
    ident_doc: dict[str, Any] = {"env": env_name, "seed": seed,
                                 "policy": policy_config.to_dict(), "pretrain": settings,
                                 "judge": pretrain.get("judge", default_pretrain_judge(env_name)),
                                 # A change of Algorithm 1's defaults is a new θ.
                                 "defaults": asdict(PretrainConfig())}
    return cache_folder("ialp-theta", env_name, ident_doc, item_features)


def pretrain_judge(name: str, train_env: RecBatchEnv, env_name: str, *,
                   threshold: float | None = None) -> Any:
    """The judge of pre-training setting ``judge`` (a :class:`policy.judge.spec.JudgeSpec`
    backend without options: ``embedding``, ``cooc``; the cooc judge counts the training
    environment's logs)."""
    from policy.judge.spec import JudgeSpec, JudgeSpecError
    from simulator_client.item_features import training_logs

    logs = training_logs(train_env) if name == "cooc" else None
    try:
        return JudgeSpec(judge=name, threshold=threshold).build(env_name, train_env.item_text,
                                                                logs)
    except JudgeSpecError as exc:
        raise ValueError(f"iALP pre-training judge {name!r}: {exc}") from exc


def pretrain_theta(train_env: RecBatchEnv, env_name: str, policy_config: PolicyConfig,
                   seed: int, pretrain: dict[str, Any], *, progress: bool = True,
                   item_features: ItemFeatures | None = None) -> Path:
    """Pre-train πθ with Algorithm 1 and the configured judge (or find it in the cache);
    returns the checkpoint folder. ``item_features`` fill the item table of a network
    with ``policy_config.item_features`` > 0 before pre-training."""
    out = theta_cache_path(env_name, seed, policy_config, pretrain, item_features)
    ckpt = out / "policy"
    if ckpt.exists():
        return ckpt
    from trainer.pretrain import PretrainConfig, StartState, pretrain_ialp, save_pretrain

    if train_env.item_text is None:
        raise ValueError(f"environment {env_name!r} has no item texts for the judge")
    opts = dict(pretrain)
    n_users = int(opts.pop("users", 0))
    judge_name = str(opts.pop("judge", default_pretrain_judge(env_name)))
    threshold = opts.pop("threshold", None)  # None: the dataset's default (JudgeSpec)
    users = train_env.users
    if 0 < n_users < len(users):
        users = np.sort(np.random.default_rng(seed).choice(users, n_users, replace=False))
    obs = train_env.reset(users)
    starts = [StartState(int(obs.user_ids[i]), obs.row(i).history) for i in range(len(obs))]
    cfg = PretrainConfig(seed=seed, **opts)
    judge = pretrain_judge(judge_name, train_env, env_name,
                           threshold=None if threshold is None else float(threshold))
    log.info("pre-training πθ on %s (seed %d) into %s", env_name, seed, out)
    learner = None
    if item_features is not None:
        learner = make_learner("a2c", policy_config, seed=cfg.seed,
                               **cfg.learner_hyper(policy_config),
                               init=init_policy(policy_config, seed=cfg.seed,
                                                item_features=item_features))
    try:
        result = pretrain_ialp(judge, starts, policy_config, cfg, progress=progress,
                               learner=learner)
    finally:
        judge.close()
    write_atomically(out, lambda folder: save_pretrain(
        result, folder, {"env": env_name, "policy_config": policy_config.to_dict(),
                         "pretrain_settings": pretrain}))
    return ckpt


def _settings(ctx: MethodContext, base: str, *, shared: bool = True
              ) -> tuple[dict[str, Any], dict[str, Any]]:
    """(iALP settings, learner hyperparameters) of method ``ctx.name``: the shared
    ``"ialp"`` entry, then the base method's, then the method's own, later ones winning."""
    hyper = ctx.experiment.hyper
    merged: dict[str, Any] = {**(hyper.get(SHARED_KEY, {}) if shared else {}),
                              **hyper.get(base, {}), **ctx.hyper}
    special = {k: merged.pop(k) for k in IALP_KEYS if k in merged}
    return special, merged


def load_theta(ctx: MethodContext, special: dict[str, Any], *, progress: bool = True
               ) -> MixedPolicy:
    """πθ for this experiment: the given checkpoint, or a (cached) pre-training."""
    if "checkpoint" in special:
        path = Path(special["checkpoint"])
    else:
        # Environments are named "<dataset>-train"; the judge's scenario is the dataset.
        env_name = ctx.train_env.name.removesuffix("-train")
        path = pretrain_theta(ctx.train_env, env_name, ctx.policy_config, ctx.seed,
                              dict(special.get("pretrain", {})), progress=progress,
                              item_features=ctx.item_features)
    log_file = path.parent / "pretrain.json"
    if log_file.exists():  # written by ialp pretrain and by pretrain_theta beside "policy"
        doc = json.loads(log_file.read_text(encoding="utf-8"))
        ctx.notes["pretrain"] = {k: doc["summary"][k] for k in PRETRAIN_NOTES
                                 if k in doc.get("summary", {})}
    memo = f"{path.resolve()}"
    if memo not in _MEMO:
        _MEMO[memo] = load_checkpoint(path, expected_num_items=ctx.policy_config.num_items)
    policy = _MEMO[memo]
    if policy.config != ctx.policy_config:
        raise ValueError(
            f"iALP checkpoint {path} has network {policy.config}, but the experiment builds "
            f"{ctx.policy_config}; pass matching --hidden/--blocks/--max-len"
        )
    # A fresh wrapper each time: agents may change its exploration.
    return MixedPolicy(policy.theta, version=policy.version, metadata=policy.metadata,
                       seed=ctx.seed)


PRETRAIN_NOTES = ("extremes", "seconds", "updates", "transitions", "select_rate", "judge")
"""Fields of Algorithm 1's summary copied into the results of every run that uses θ."""


def _exploration(special: dict[str, Any]) -> ExplorationConfig | None:
    if "exploration" not in special:
        return None
    return ExplorationConfig(strategy=str(special["exploration"]),
                             epsilon=float(special.get("epsilon", 0.1)))


# -- factories --------------------------------------------------------------------------
def _ialp_factory(base: str, learner: str | None, forced: dict[str, Any] | None = None,
                  strategy: str | None = None, greedy: bool = False) -> Any:
    def factory(ctx: MethodContext) -> Agent:
        special, hyper = _settings(ctx, base)
        if strategy is not None:
            special["exploration"] = strategy
        theta = load_theta(ctx, special)
        how = _exploration(special)
        if learner is None:
            agent = FrozenAgent(ctx.name, theta, ctx.experiment.online, greedy=greedy)
            if how is not None:
                agent.policy.exploration = replace(agent.policy.exploration,
                                                   strategy=how.strategy, epsilon=how.epsilon)
            return agent
        hyper.update(forced or {})
        built = make_learner(learner, ctx.policy_config, seed=ctx.seed, init=theta, **hyper)
        return ExploringAgent(ctx.name, built, ctx.experiment.online, seed=ctx.seed + 1,
                              exploration=how)

    return factory


def _a2c_factory(strategy: str) -> Any:
    def factory(ctx: MethodContext) -> Agent:
        special, hyper = _settings(ctx, "a2c", shared=False)
        special["exploration"] = strategy
        built = make_learner("a2c", ctx.policy_config, seed=ctx.seed, init=ctx.initial_policy(),
                             **hyper)
        return ExploringAgent(ctx.name, built, ctx.experiment.online, seed=ctx.seed + 1,
                              exploration=_exploration(special))

    return factory


IALP_METHODS: dict[str, tuple[str, str | None, dict[str, Any] | None]] = {
    "ialp": ("ialp", None, None),
    "ialp-ft": ("ialp-ft", "ft", None),
    "ialp-ap": ("ialp-ap", "ap", None),
    "ialp-ap-copy": ("ialp-ap", "ap", {"beta_init": "copy"}),
    "ialp-ap-random": ("ialp-ap", "ap", {"beta_init": "random"}),
    "ft": ("ialp-ft", "ft", None),
    "ap": ("ialp-ap", "ap", None),
}
"""Method name → (base name whose hyper it shares, learner or None = frozen, forced hyper)."""

for _name, (_base, _learner, _forced) in IALP_METHODS.items():
    register_method(_name, _ialp_factory(_base, _learner, _forced, greedy=_name == "ialp"))
# Frozen πθ acting as in training (categorical sampling), reported beside greedy iALP.
register_method("ialp-sampled", _ialp_factory("ialp", None, None))
for _strategy in STRATEGIES:
    register_method(f"a2c+{_strategy}", _a2c_factory(_strategy))
    for _name in ("ialp", "ialp-ft", "ialp-ap"):
        _base, _learner, _forced = IALP_METHODS[_name]
        register_method(f"{_name}+{_strategy}",
                        _ialp_factory(_base, _learner, _forced, strategy=_strategy))


__all__ = [
    "IALP_METHODS",
    "QUICK_PRETRAIN",
    "ExploringAgent",
    "FrozenAgent",
    "load_theta",
    "pretrain_theta",
    "theta_cache_path",
]
