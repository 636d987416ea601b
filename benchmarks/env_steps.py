"""Environment stepping speed: user-steps per second with random actions.

For each environment (Coat, LFM, Industry; training split, whose reward comes from a
learned user model) and each batch size, steps the batched environment with uniformly
random actions, restarting finished slots with new users, and reports

* ``steps_per_s``: user-steps (recommendations answered) per second, and
* ``seconds_per_50k_steps``: the stepping time of a 50,000-step training run at that batch
  size (policy and learner time excluded).

Everything runs on one torch thread. User models are loaded from the cache (trained first
if absent, which is not timed).

    .venv/bin/python benchmarks/env_steps.py --out benchmarks/results/env_steps.json

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
from tqdm.auto import tqdm

from simulator_client.envs.base import RecBatchEnv
from simulator_client.envs.by_name import make_env

ENVS = ("coat", "lfm", "industry")
BATCHES = (1, 16, 256)


def steps_per_second(
    env: RecBatchEnv, batch: int, *, min_steps: int, min_seconds: float, seed: int = 0
) -> dict[str, float]:
    """Step ``batch`` slots with random actions until both minimums are reached."""
    rng = np.random.default_rng(seed)
    env.reset(env.sample_users(batch, rng))
    user_steps = 0
    calls = 0
    started = time.perf_counter()
    while True:
        actions = rng.integers(0, env.num_items, size=batch)
        _, _, term, trunc, info = env.step(actions)
        user_steps += int(info["active"].sum())
        calls += 1
        done = np.flatnonzero(term | trunc)
        if len(done):
            env.reset_slots(done, env.sample_users(len(done), rng))
        elapsed = time.perf_counter() - started
        if user_steps >= min_steps and elapsed >= min_seconds:
            break
    return {
        "batch": float(batch),
        "user_steps": float(user_steps),
        "step_calls": float(calls),
        "seconds": elapsed,
        "steps_per_s": user_steps / elapsed,
        "seconds_per_50k_steps": 50_000 * elapsed / user_steps,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--envs", default=",".join(ENVS))
    parser.add_argument("--batches", default=",".join(str(b) for b in BATCHES))
    parser.add_argument("--min-steps", type=int, default=5000)
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/env_steps.json"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()
    results: dict[str, Any] = {}
    names = [n for n in args.envs.split(",") if n]
    batches = [int(b) for b in args.batches.split(",") if b]
    for name in tqdm(names, desc="environments"):
        env = make_env(name, "train", progress=True)
        results[name] = {
            "num_items": env.num_items,
            "users": len(env.users),
            "runs": [
                steps_per_second(
                    env, b, min_steps=args.min_steps, min_seconds=args.min_seconds
                )
                for b in batches
            ],
        }
    report = {
        "benchmark": "env_steps",
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "load_avg_before": load_before,
            "load_avg_after": os.getloadavg(),
        },
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    for name, res in results.items():
        for run in res["runs"]:
            print(
                f"{name:>9} batch {int(run['batch']):>4}: {run['steps_per_s']:>9.0f} steps/s, "
                f"50k steps in {run['seconds_per_50k_steps']:.1f} s"
            )


if __name__ == "__main__":
    main()
