"""Learner speed: updates per second and online interactions per second, per environment.

For each environment (training split), with the suite's network (SASRec H = 32, one
block, window 20, factorised heads over the training logs' item features) and the
experiment harness's feeding (16 users in parallel, minibatch 64, one update per batched
step), measures

* ``updates_per_s``: learner updates alone (minibatches from a replay filled by acting),
  per method (``a2c``, ``ap``: A-iALP_ap with β copied from an untrained θ, ``dqn``);
* ``interactions_per_s``: a whole online training loop (act, step the environment, store,
  update), i.e. what a ``--steps`` budget costs without evaluations;
* ``env_interactions_per_s``: the environment stepping alone with the policy's actions.

Everything runs on one torch thread (as each suite worker does).

    .venv/bin/python benchmarks/learner_speed.py --out benchmarks/results/learner_speed.json

Numbers depend on the machine and its load; the JSON records the CPU count and the load
average before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simulator_client.envs.by_name import make_env
from simulator_client.experiments import ExperimentConfig, policy_config_for
from simulator_client.item_features import features_for
from trainer.agents import LearnerAgent, OnlineConfig, StepBatch
from trainer.learners import make_learner

ENVS = ("coat", "lfm", "industry")
METHODS = ("a2c", "ap", "dqn")


def _experiment() -> ExperimentConfig:
    return ExperimentConfig(hidden=32, blocks=1, max_len=20, num_envs=16,
                            online=OnlineConfig(batch_size=64, warmup=128, updates_per_step=1,
                                                mask_history=True))


def _agent(method: str, env: Any, cfg: ExperimentConfig, seed: int) -> LearnerAgent:
    from policy.checkpoint import init_policy

    pcfg = policy_config_for(env, cfg)
    feats = features_for(env)
    init = init_policy(pcfg, seed=seed, item_features=feats)
    hyper: dict[str, Any] = {"alpha_steps": 500} if method == "ap" else {}
    learner = make_learner(method, pcfg, seed=seed, init=init, **hyper)
    return LearnerAgent(method, learner, cfg.online, seed=seed + 1)


def online_loop(method: str, env: Any, steps: int, seed: int = 0) -> dict[str, float]:
    """Run ``steps`` online interactions; time acting+stepping and updating separately."""
    cfg = _experiment()
    agent = _agent(method, env, cfg, seed)
    rng = np.random.default_rng(seed)
    obs = env.reset(env.sample_users(cfg.num_envs, rng))
    done_steps = 0
    env_seconds = 0.0
    started = time.perf_counter()
    while done_steps < steps:
        t0 = time.perf_counter()
        actions, props = agent.act(obs.history, obs.user_ids, rng)
        nxt, rewards, term, trunc, info = env.step(actions)
        env_seconds += time.perf_counter() - t0
        rows = np.flatnonzero(info["active"])
        agent.observe(StepBatch(
            histories=obs.history[rows], user_ids=obs.user_ids[rows],
            actions=np.asarray(actions)[rows], rewards=rewards[rows],
            next_histories=nxt.history[rows], terminated=term[rows], truncated=trunc[rows],
            propensities=np.asarray(props)[rows], slots=rows))
        done_steps += len(rows)
        finished = np.flatnonzero(term | trunc)
        if len(finished):
            env.reset_slots(finished, env.sample_users(len(finished), rng))
        obs = env.observe()
    total = time.perf_counter() - started
    updates = float(agent.updates)
    update_seconds = total - env_seconds
    return {
        "interactions": float(done_steps), "updates": updates, "seconds": total,
        "interactions_per_s": done_steps / total,
        "env_interactions_per_s": done_steps / max(env_seconds, 1e-9),
        "updates_per_s": updates / max(update_seconds, 1e-9),
        "seconds_per_20k_interactions": 20_000 * total / done_steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--envs", default=",".join(ENVS))
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--steps", type=int, default=3000, help="interactions per measurement")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/learner_speed.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    results: dict[str, Any] = {}
    for name in [n for n in args.envs.split(",") if n]:
        env = make_env(name, "train", progress=False)
        results[name] = {"num_items": env.num_items,
                         "methods": {m: online_loop(m, env, args.steps)
                                     for m in args.methods.split(",") if m}}
    report = {
        "benchmark": "learner_speed",
        "settings": {"hidden": 32, "blocks": 1, "max_len": 20, "num_envs": 16,
                     "batch_size": 64, "updates_per_step": 1, "steps": args.steps},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                    "load_avg_before": load_before, "load_avg_after": os.getloadavg()},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for name, res in results.items():
        for method, r in res["methods"].items():
            print(f"{name:>9} {method:>4}: {r['updates_per_s']:7.1f} updates/s, "
                  f"{r['interactions_per_s']:7.0f} interactions/s online, "
                  f"{r['env_interactions_per_s']:7.0f} acting+env/s, "
                  f"20k in {r['seconds_per_20k_interactions']:.0f} s")


if __name__ == "__main__":
    main()
