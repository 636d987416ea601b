"""In-process experiments: train methods online against a training environment and
evaluate them periodically on the test environment (the paper's learning curves).

Every method is an ``Agent`` (``trainer.agents``). ``random`` and every learner registered
in ``trainer.learners`` (a2c, dqn, pg, ...) are available by name; other methods (a
pre-trained iALP, LLMOnline, a bandit) plug in with :func:`register_method`.

One run = for each method, from the same seed: ``steps`` user interactions with the
training environment (``num_envs`` users in parallel, each finished user replaced by a new
one), with an evaluation of ``eval_episodes`` test episodes at step 0, every ``eval_every``
steps and at the end. Evaluations of all methods use the same test users and seed. After
the last one, an agent that can score the whole catalogue (``ranking_scores``) is also
ranked on the test users' held-out last items (``next_item_ranking``: hr@10, ndcg@10;
the result's ``"ranking"``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from policy.checkpoint import save_checkpoint
from policy.config import PolicyConfig
from simulator_client.envs.base import BatchObs, RecBatchEnv
from simulator_client.evaluation import evaluate, next_item_ranking
from simulator_client.experiments import methods as _methods  # noqa: F401  (registers them)
from simulator_client.experiments.context import (
    _METHODS,
    ExperimentConfig,
    MethodContext,
    learner_agent,
)
from simulator_client.experiments.report import plot_curves
from simulator_client.item_features import ItemFeatureConfig, features_for, operator_logs
from trainer.agents import Agent, EvalActor, LearnerAgent, RandomAgent, StepBatch
from trainer.learners import available_learners
from trainer.learners.extremes import MetricExtremes


def available_methods() -> list[str]:
    """Every selectable method name."""
    return sorted({"random", *available_learners(), *_METHODS})


def build_agent(ctx: MethodContext) -> Agent:
    """Resolve a method name to an agent."""
    if ctx.name in _METHODS:
        return _METHODS[ctx.name](ctx)
    if ctx.name == "random":
        return RandomAgent(ctx.train_env.num_items, seed=ctx.seed)
    if ctx.name in available_learners():
        return learner_agent(ctx)
    raise KeyError(f"unknown method {ctx.name!r}; known: {', '.join(available_methods())}")


class _EvalPolicy:
    """``BatchPolicy`` adapter around an agent's frozen evaluation actor."""

    def __init__(self, actor: EvalActor) -> None:
        self.actor = actor

    def act(self, obs: BatchObs, rng: np.random.Generator) -> np.ndarray:
        return self.actor(obs.history, obs.user_ids, rng)


def item_feature_config(config: ExperimentConfig) -> ItemFeatureConfig | None:
    """The item features of ``config`` (None with plain item ids)."""
    if config.items != "features":
        return None
    return ItemFeatureConfig(kinds=tuple(config.item_features))


def policy_config_for(env: RecBatchEnv, config: ExperimentConfig) -> PolicyConfig:
    """The network shape used for ``env``."""
    num_users = int(env.users.max()) + 1 if config.user_embedding else 0
    feats = item_feature_config(config)
    return PolicyConfig(
        num_items=env.num_items,
        max_len=config.max_len or env.history_window,
        hidden=config.hidden,
        heads=2,
        blocks=config.blocks,
        num_users=num_users,
        item_features=feats.dim if feats is not None else 0,
        prior_scale=config.prior_scale if feats is not None else 1.0,
        item_ids=config.item_ids,
    )


def train_method(
    name: str,
    train_env: RecBatchEnv,
    test_env: RecBatchEnv,
    config: ExperimentConfig,
    *,
    progress: bool = True,
    out_dir: Path | None = None,
) -> dict[str, Any]:
    """Train one method and return its learning curve and final metrics."""
    seed = config.seed
    torch.manual_seed(seed)  # dropout draws come from the global generator
    feat_cfg = item_feature_config(config)
    ctx = MethodContext(
        name=name,
        train_env=train_env,
        policy_config=policy_config_for(train_env, config),
        experiment=config,
        seed=seed,
        hyper=dict(config.hyper.get(name, {})),
        # Computed from the training users' logs only (cached); never the test users'.
        item_features=(features_for(train_env, feat_cfg,
                                    logs=operator_logs(train_env, config.logs))
                       if feat_cfg is not None else None),
    )
    agent = build_agent(ctx)
    user_seq, act_seq = np.random.SeedSequence([seed, 17]).spawn(2)
    user_rng, act_rng = np.random.default_rng(user_seq), np.random.default_rng(act_seq)
    eval_seed = seed + 10_000

    curve: list[dict[str, float]] = []
    train_log: list[dict[str, float]] = []
    extremes = MetricExtremes()
    eval_seconds = 0.0

    def run_eval(step: int) -> None:
        nonlocal eval_seconds
        started = time.perf_counter()
        metrics = evaluate(
            test_env, _EvalPolicy(agent.evaluator()), episodes=config.eval_episodes,
            seed=eval_seed,
        )
        eval_seconds += time.perf_counter() - started
        curve.append({"step": float(step), **metrics})

    started = time.perf_counter()
    run_eval(0)
    obs = train_env.reset(train_env.sample_users(config.num_envs, user_rng))
    ep_returns: list[float] = []
    running = np.zeros(config.num_envs, dtype=np.float64)
    steps, next_eval = 0, config.eval_every
    bar = tqdm(total=config.steps, desc=f"{name} on {train_env.name}", unit="step",
               disable=not progress)
    act_seconds, decisions = 0.0, 0
    while steps < config.steps:
        # Decision time alone (network, plus a judge for llm-online), not env or learning.
        act_started = time.perf_counter()
        actions, props = agent.act(obs.history, obs.user_ids, act_rng)
        act_seconds += time.perf_counter() - act_started
        decisions += len(actions)
        nxt, rewards, term, trunc, info = train_env.step(actions)
        rows = np.flatnonzero(info["active"])
        metrics = agent.observe(
            StepBatch(
                histories=obs.history[rows],
                user_ids=obs.user_ids[rows],
                actions=np.asarray(actions)[rows],
                rewards=rewards[rows],
                next_histories=nxt.history[rows],
                terminated=term[rows],
                truncated=trunc[rows],
                propensities=np.asarray(props)[rows],
                slots=rows,
            )
        )
        running[rows] += rewards[rows]
        steps += len(rows)
        bar.update(len(rows))
        if metrics:
            train_log.append({"step": float(steps), **metrics})
            extremes.add(metrics)
        finished = np.flatnonzero(term | trunc)
        if len(finished):
            ep_returns.extend(running[finished].tolist())
            running[finished] = 0.0
            train_env.reset_slots(finished, train_env.sample_users(len(finished), user_rng))
        obs = train_env.observe()
        if steps >= next_eval and steps < config.steps:
            run_eval(steps)
            bar.set_postfix(ret=f"{curve[-1]['return']:.1f}")
            next_eval += config.eval_every
    bar.close()
    if config.steps > 0:
        run_eval(steps)
    # Offline accuracy of the final model (after the step-0 evaluation when steps == 0):
    # held-out next items of the test users, for agents that can score every item.
    ranking: dict[str, float] | None = None
    scorer = getattr(agent, "ranking_scores", None)
    if callable(scorer):
        ranking_started = time.perf_counter()
        ranking = next_item_ranking(test_env, scorer, k=10, seed=eval_seed)
        eval_seconds += time.perf_counter() - ranking_started
        if not ranking["cases"]:  # no test log of two items or more: nothing measured
            ranking = None
    seconds = time.perf_counter() - started
    if out_dir is not None and isinstance(agent, LearnerAgent):
        save_checkpoint(agent.snapshot(), out_dir / "policies" / name)
    last_train = train_log[-1] if train_log else {}
    return {
        "method": name,
        "curve": curve,
        "final": curve[-1],
        "train": {
            "steps": steps,
            "updates": float(getattr(agent, "updates", 0)),
            "episodes": len(ep_returns),
            "train_return_last100": float(np.mean(ep_returns[-100:])) if ep_returns else 0.0,
            "seconds": seconds,
            "eval_seconds": eval_seconds,
            "act_seconds": act_seconds,
            "seconds_per_step": act_seconds / max(decisions, 1),
            "train_seconds_per_step": (seconds - eval_seconds) / max(steps, 1),
            "last_metrics": last_train,
            # Largest |loss| and |Q| of every logged update: the suite's stability check.
            "extremes": extremes.as_dict(),
        },
        # Algorithm 1's run behind πθ (iALP methods): its summary, extremes included.
        "pretrain": ctx.notes.get("pretrain"),
        # Method-specific statistics (e.g. llm-online's judge timing and answer rates).
        "report": report() if callable(report := getattr(agent, "report", None)) else {},
        # Leave-last-out hr@10 / ndcg@10 on the test users' logs (next_item_ranking).
        **({"ranking": ranking} if ranking is not None else {}),
        "policy_config": ctx.policy_config.to_dict() if name != "random" else None,
    }


def run_experiment(
    env_name: str,
    train_env: RecBatchEnv,
    test_env: RecBatchEnv,
    methods: Sequence[str],
    config: ExperimentConfig,
    *,
    out_dir: str | Path | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train and evaluate ``methods``; writes ``results.json`` and ``curves.png`` to
    ``out_dir`` when given. Returns the results dictionary."""
    unknown = [m for m in methods if m not in available_methods()]
    if unknown:
        raise KeyError(
            f"unknown method(s) {', '.join(unknown)}; known: {', '.join(available_methods())}"
        )
    if train_env.num_items != test_env.num_items:
        raise ValueError("training and test environments have different catalogues")
    out = Path(out_dir) if out_dir is not None else None
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {
        "env": env_name,
        "train_env": train_env.name,
        "test_env": test_env.name,
        "config": asdict(config),
        # The largest Return an episode of the training environment can reach.
        "max_return": train_env.max_return(),
        "methods": {},
    }
    for name in methods:
        results["methods"][name] = train_method(
            name, train_env, test_env, config, progress=progress, out_dir=out
        )
    if out is not None:
        (out / "results.json").write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
        plot_curves(results, out / "curves.png")
    return results
