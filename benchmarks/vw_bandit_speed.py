"""Decision speed of the ``vw-bandit`` method (Vowpal Wabbit ``cb_explore_adf``).

For each environment (training split), runs the bandit online for ``--steps`` user
interactions with 16 parallel users, as ``ialp experiment`` does, and reports

* ``train_decisions_per_s``: explored decisions plus their VW updates per second
  (environment stepping included, evaluation excluded),
* ``agent_decisions_per_s``: the same counting only the bandit's own time (``act`` and
  ``observe``: features, candidates, VW predict and learn), without the user model,
* ``eval_decisions_per_s``: greedy decisions per second of a frozen snapshot,
* ``candidates``: actions scored per decision (whole catalogue or the bounded set).

    .venv/bin/python benchmarks/vw_bandit_speed.py --out benchmarks/results/vw_bandit_speed.json

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

from simulator_client.envs.by_name import make_env
from simulator_client.experiments.methods.vw_bandit import VWBanditAgent, VWBanditConfig
from trainer.agents import StepBatch


def measure(env_name: str, steps: int, seed: int) -> dict[str, Any]:
    """Online decisions/s and greedy decisions/s of the default bandit on ``env_name``."""
    env = make_env(env_name, "train", progress=False)
    agent = VWBanditAgent(env, VWBanditConfig(), seed=seed)
    rng = np.random.default_rng(seed)
    obs = env.reset(env.sample_users(16, rng))
    done_steps = 0
    agent_s = 0.0
    started = time.perf_counter()
    while done_steps < steps:
        t0 = time.perf_counter()
        actions, props = agent.act(obs.history, obs.user_ids, rng)
        agent_s += time.perf_counter() - t0
        nxt, rewards, term, trunc, info = env.step(actions)
        rows = np.flatnonzero(info["active"])
        t0 = time.perf_counter()
        agent.observe(
            StepBatch(
                histories=obs.history[rows], user_ids=obs.user_ids[rows],
                actions=actions[rows], rewards=rewards[rows],
                next_histories=nxt.history[rows], terminated=term[rows],
                truncated=trunc[rows], propensities=props[rows], slots=rows,
            )
        )
        agent_s += time.perf_counter() - t0
        done_steps += len(rows)
        finished = np.flatnonzero(term | trunc)
        if len(finished):
            env.reset_slots(finished, env.sample_users(len(finished), rng))
        obs = env.observe()
    train_s = time.perf_counter() - started
    actor = agent.evaluator()
    batch = env.reset(env.sample_users(256, rng))
    started = time.perf_counter()
    actor(batch.history, batch.user_ids, rng)
    eval_s = time.perf_counter() - started
    cand = agent.candidates(batch.history[0], rng, mask=False)
    return {
        "env": env_name,
        "steps": done_steps,
        "candidates": len(cand),
        "train_decisions_per_s": done_steps / train_s,
        "agent_decisions_per_s": done_steps / agent_s,
        "eval_decisions_per_s": 256 / eval_s,
        "vw_args": agent.settings()["vw_args"],
    }


def main() -> None:
    """Measure every requested environment and write the JSON report."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--envs", default="coat,lfm,industry")
    parser.add_argument("--steps", type=int, default=4000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="benchmarks/results/vw_bandit_speed.json")
    args = parser.parse_args()
    load_before = os.getloadavg()
    results = [measure(name, args.steps, args.seed) for name in args.envs.split(",")]
    report = {
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "load_before": load_before,
        "load_after": os.getloadavg(),
        "results": results,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")
    for r in results:
        print(
            f"{r['env']:>9}: {r['candidates']:4d} candidates, "
            f"train {r['train_decisions_per_s']:7.0f} decisions/s "
            f"(bandit alone {r['agent_decisions_per_s']:5.0f}), "
            f"greedy eval {r['eval_decisions_per_s']:7.0f} decisions/s"
        )


if __name__ == "__main__":
    main()
