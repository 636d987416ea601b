"""Policy inference latency and learner throughput for the catalogue sizes in use.

Measures, for each catalogue size, the wall time of ``MixedPolicy.act_batch`` for one
state and for a batch of 64 states (categorical exploration, k = 10 distinct items,
histories of 20 items), for a plain policy and an ``ap`` mixture of two networks, and the
number of learner updates per second (minibatch 64) for A2C, DQN and PG.

    .venv/bin/python benchmarks/policy_inference.py --out benchmarks/results/policy_inference.json

Numbers depend on the machine and on its load; the JSON records both (CPU count, torch
threads, load average before and after).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from policy.checkpoint import build_network, init_policy, policy_to_bytes
from policy.config import PolicyConfig
from policy.mixed import MixedPolicy
from trainer.batch import TransitionBatch
from trainer.learners import make_learner

SIZES = {"coat": 300, "industry": 4385, "lfm": 4606, "large": 100_000}


def _timeit(fn: Callable[[], object], reps: int, warmup: int = 3) -> dict[str, float]:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000.0)
    times.sort()
    return {
        "p50_ms": statistics.median(times),
        "p95_ms": times[min(len(times) - 1, int(0.95 * len(times)))],
        "mean_ms": statistics.fmean(times),
        "reps": float(reps),
    }


def bench_size(name: str, n_items: int, reps: int, update_reps: int) -> dict[str, Any]:
    """All measurements for one catalogue size."""
    cfg = PolicyConfig(num_items=n_items, max_len=50, hidden=64, heads=2, blocks=2)
    rng = np.random.default_rng(0)
    hist = [rng.integers(0, n_items, size=20).tolist() for _ in range(64)]
    plain = init_policy(cfg, seed=0)
    mixed = MixedPolicy(
        build_network(cfg, seed=1), build_network(cfg, seed=2), alpha=0.5, scheme="ap"
    )
    out: dict[str, Any] = {"num_items": n_items, "config": cfg.to_dict()}
    for label, pol in (("plain", plain), ("ap", mixed)):

        def one(p: MixedPolicy = pol) -> object:
            return p.act_batch(hist[:1], k=10, rng=rng)

        def many(p: MixedPolicy = pol) -> object:
            return p.act_batch(hist, k=10, rng=rng)

        out[f"{label}_batch1"] = _timeit(one, reps)
        out[f"{label}_batch64"] = _timeit(many, max(5, reps // 4))
    out["policy_bytes"] = len(policy_to_bytes(plain))
    padded = np.full((64, 50), -1, dtype=np.int64)
    padded[:, -20:] = np.asarray(hist)
    nxt = np.concatenate([padded[:, 1:], rng.integers(0, n_items, size=(64, 1))], axis=1)
    batch = TransitionBatch.from_arrays(
        histories=padded, user_ids=np.zeros(64, dtype=np.int64), actions=nxt[:, -1],
        rewards=rng.random(64), next_histories=nxt, dones=np.zeros(64),
        returns=rng.random(64),
    )
    out["updates_per_s"] = {}
    for method in ("a2c", "dqn", "pg"):
        learner = make_learner(method, cfg, seed=0)
        stats = _timeit(lambda: learner.update(batch), update_reps, warmup=2)  # noqa: B023
        out["updates_per_s"][method] = 1000.0 / stats["mean_ms"]
    return out


def main() -> None:
    """Run the benchmark and write the JSON file."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", default="benchmarks/results/policy_inference.json")
    parser.add_argument("--reps", type=int, default=60, help="latency repetitions")
    parser.add_argument("--update-reps", type=int, default=20, help="learner updates timed")
    parser.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    parser.add_argument("--sizes", default=",".join(SIZES), help="subset of " + ",".join(SIZES))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    load_before = os.getloadavg()
    results: dict[str, Any] = {}
    names = [s for s in args.sizes.split(",") if s]
    for name in tqdm(names, desc="catalogue sizes"):
        big = SIZES[name] >= 50_000
        results[name] = bench_size(
            name, SIZES[name], reps=args.reps // (3 if big else 1),
            update_reps=max(3, args.update_reps // (4 if big else 1)),
        )
    doc = {
        "benchmark": "policy_inference",
        "command": "benchmarks/policy_inference.py " + " ".join(
            f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items() if k != "out"
        ),
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "loadavg_before": load_before,
            "loadavg_after": os.getloadavg(),
        },
        "notes": "act_batch: categorical exploration, k=10, 20-item histories, max_len 50, "
        "hidden 64, 2 blocks; updates: minibatch 64",
        "results": results,
    }
    path = Path(args.out)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n")
    for name, res in results.items():
        print(
            f"{name:>9} I={res['num_items']:>6}  1 state {res['plain_batch1']['p50_ms']:.2f} ms  "
            f"64 states {res['plain_batch64']['p50_ms']:.2f} ms  ap64 "
            f"{res['ap_batch64']['p50_ms']:.2f} ms  updates/s "
            + " ".join(f"{m}={v:.1f}" for m, v in res["updates_per_s"].items())
        )


if __name__ == "__main__":
    main()
