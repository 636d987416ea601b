"""The served k = 1 graph in float32 and bfloat16: time per batch and distance between the
two distributions.

For each catalogue size, an untrained policy of the service's default network (SASRec
H = 64, 2 blocks, window 50) is frozen for serving in both precisions; the script times
the frozen sampler on batches of 8 and 16 random 20-item histories (one torch thread, as
in the decider process) and compares the two frozen scorers' distributions on 16
histories: total variation and the largest relative change of one probability, for the
untrained actor and for its weights × 16 (logits spread over ~11 units, sharper than a
trained policy's).

    .venv/bin/python benchmarks/score_precision.py --out benchmarks/results/score_precision.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from policy.checkpoint import local_policy  # noqa: E402
from policy.exploration import ExplorationConfig  # noqa: E402
from policy.mixed import MixedPolicy, serving_precision  # noqa: E402


def _sampler_ms(policy: MixedPolicy, batch: int, reps: int) -> float:
    """Median milliseconds of one frozen k = 1 sampler call on ``batch`` histories."""
    rng = np.random.default_rng(0)
    hist = [[int(x) for x in rng.choice(policy.num_items, 20, replace=False)]
            for _ in range(batch)]
    plan = policy.plan(hist, k=[1] * batch, exploration=ExplorationConfig())
    fast = policy.fast_inputs(plan, rng)
    assert fast is not None
    times = []
    for i in range(reps + 10):
        start = time.perf_counter()
        policy.sample_frozen(plan, fast)
        if i >= 10:  # warm-up
            times.append(time.perf_counter() - start)
    return float(np.median(times) * 1e3)


def measure(num_items: int, reps: int) -> dict[str, Any]:
    """Timings and distances for one catalogue size."""
    out: dict[str, Any] = {"num_items": num_items,
                           "auto": serving_precision("auto", num_items)}
    for precision in ("float32", "bfloat16"):
        policy = local_policy(None, num_items=num_items, max_len=50, seed=0)
        policy.freeze_for_serving(precision)
        out[precision] = {f"sampler_ms_batch_{b}": _sampler_ms(policy, b, reps)
                          for b in (8, 16)}
    rng = np.random.default_rng(1)
    padded = np.concatenate([np.full((16, 30), -1), rng.integers(0, num_items, (16, 20))],
                            axis=1)
    for scale in (1.0, 16.0):
        policy = local_policy(None, num_items=num_items, max_len=50, seed=0)
        with torch.no_grad():
            for param in policy.theta.actor.parameters():
                param.mul_(scale)
        policy.freeze_for_serving("float32")
        exact, _ = policy.component_probs(padded)
        rounded_policy = MixedPolicy(policy.theta)
        rounded_policy.freeze_for_serving("bfloat16")
        rounded, _ = rounded_policy.component_probs(padded)
        out[f"actor_x{scale:g}"] = {
            "logit_spread_mean": float(np.log(exact.max(1) / exact.min(1)).mean()),
            "total_variation_max": float(0.5 * np.abs(rounded - exact).sum(1).max()),
            "relative_change_max": float(np.abs(rounded / exact - 1.0).max()),
        }
    return out


def main() -> int:
    """Run the benchmark and write the JSON results."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--items", default="4606,100000", help="catalogue sizes, comma-separated")
    p.add_argument("--reps", type=int, default=100, help="timed calls per batch size")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/score_precision.json")
    args = p.parse_args()
    torch.set_num_threads(1)
    results = [measure(int(n), args.reps) for n in args.items.split(",")]
    report = {
        "benchmark": "score_precision",
        "command": " ".join([f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "torch": torch.__version__,
                    "loadavg": os.getloadavg()},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("| items | auto | sampler ms, batch 8 / 16: float32 | bfloat16 | TV max (×1 / ×16) "
          "| largest relative change (×1 / ×16) |")
    print("|---:|---|---|---|---|---|")
    for r in results:
        f, b = r["float32"], r["bfloat16"]
        print(f"| {r['num_items']:,} | {r['auto']} | {f['sampler_ms_batch_8']:.2f} / "
              f"{f['sampler_ms_batch_16']:.2f} | {b['sampler_ms_batch_8']:.2f} / "
              f"{b['sampler_ms_batch_16']:.2f} | {r['actor_x1']['total_variation_max']:.5f} / "
              f"{r['actor_x16']['total_variation_max']:.5f} | "
              f"{r['actor_x1']['relative_change_max']:.2%} / "
              f"{r['actor_x16']['relative_change_max']:.2%} |")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
