"""Serving speed against the framework: ``/v1/recommend`` as a ratio of ``/v1/noop``.

For each catalogue size the script starts a private ``redis-server`` (append-only
persistence, as deployed) and one ``ialp serve --enable-noop`` (untrained policy of that
size, default network; ``--workers N`` optional), then drives both endpoints of *the same
server* with ``wrk`` (closed loop, ``-t1 -c16``, 20-item histories, k = 1), alternating
no-op and recommend for a few rounds so that drift of the machine hits both alike. The
ratio is the median recommend throughput over the median no-op throughput.

    .venv/bin/python benchmarks/serving_ratio.py --out benchmarks/results/serving_ratio.json

``wrk`` comes from the Debian package of that name; run as root the script installs it,
otherwise it says why it stops. ``wrk`` shares the machine's cores with the server, as
every load generator on a one-box benchmark does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
from pathlib import Path
from statistics import median
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.harness_ceiling import ensure_wrk  # noqa: E402
from benchmarks.loadtest_sweep import serving  # noqa: E402
from simulator_client.loadgen.wire import json_body  # noqa: E402
from simulator_client.loadgen.wrk import run_wrk  # noqa: E402


def bodies(num_items: int, history: int, seed: int = 0) -> list[bytes]:
    """64 request bodies with random histories (wrk rotates through them)."""
    rng = np.random.default_rng(seed)
    return [json_body({"user_id": u, "history": [int(x) for x in rng.choice(
        num_items, size=min(history, num_items), replace=False)], "k": 1})
            for u in range(64)]


def measure(num_items: int, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Alternating no-op / recommend rounds against one server."""
    serve_args = ["--workers", str(args.workers)] if args.workers > 1 else []
    if args.no_decider:
        serve_args.append("--no-decider")
    body = bodies(num_items, args.history)
    rounds: dict[str, list[dict[str, Any]]] = {"noop": [], "recommend": []}
    with serving(f"ratio-{num_items}", num_items, tmp, serve_args=serve_args) as url:
        for ep in ("noop", "recommend"):  # warm-up: caches, allocators, first batches
            run_wrk(f"{url}/v1/{ep}", body, connections=args.concurrency,
                    duration_s=args.warmup)
        for r in range(args.rounds):
            for ep in ("noop", "recommend"):
                res = run_wrk(f"{url}/v1/{ep}", body, connections=args.concurrency,
                              duration_s=args.duration).summary()
                rounds[ep].append(res)
                print(f"  {num_items:>7} items  round {r + 1}  {ep:<9} "
                      f"{res['throughput_rps']:8.0f} req/s  p50 {res['p50_ms']:6.2f}  "
                      f"p99 {res['p99_ms']:7.2f} ms  non-2xx {res['non_2xx']}", flush=True)
    noop = median(r["throughput_rps"] for r in rounds["noop"])
    rec = median(r["throughput_rps"] for r in rounds["recommend"])
    return {
        "num_items": num_items, "noop_rps": noop, "recommend_rps": rec,
        "ratio": rec / noop,
        "recommend_p50_ms": median(r["p50_ms"] for r in rounds["recommend"]),
        "recommend_p99_ms": median(r["p99_ms"] for r in rounds["recommend"]),
        "recommend_p99_max_ms": max(r["p99_ms"] for r in rounds["recommend"]),
        "noop_p99_ms": median(r["p99_ms"] for r in rounds["noop"]),
        "non_2xx": sum(r["non_2xx"] for rs in rounds.values() for r in rs),
        "rounds": rounds,
    }


def main() -> int:
    """Run the benchmark and write the JSON results."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--items", default="300,4606,100000",
                   help="catalogue sizes, comma-separated")
    p.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per endpoint")
    p.add_argument("--rounds", type=int, default=3, help="no-op/recommend pairs per catalogue")
    p.add_argument("--concurrency", type=int, default=16, help="wrk connections")
    p.add_argument("--history", type=int, default=20, help="items in each request's history")
    p.add_argument("--workers", type=int, default=1, help="ialp serve --workers")
    p.add_argument("--no-decider", action="store_true",
                   help="ialp serve --no-decider: every batch on the forward-pass thread")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/serving_ratio.json")
    args = p.parse_args()
    why = ensure_wrk()
    if why is not None:
        print(f"skipped: {why}")
        return 0
    loadavg = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="ialp-serving-ratio-") as tmp:
        results = [measure(int(n), args, Path(tmp)) for n in args.items.split(",")]
    report = {
        "benchmark": "serving_ratio",
        "command": " ".join([f"benchmarks/{Path(sys.argv[0]).name}", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(), "loadavg_before": loadavg},
        "wrk": {"threads": 1, "connections": args.concurrency, "duration_s": args.duration},
        "workers": args.workers, "decider": not args.no_decider, "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("\n| items | no-op req/s | recommend req/s | ratio | recommend p50 / p99 ms |")
    print("|---:|---:|---:|---:|---|")
    for r in results:
        print(f"| {r['num_items']:,} | {r['noop_rps']:,.0f} | {r['recommend_rps']:,.0f} | "
              f"{r['ratio']:.2f} | {r['recommend_p50_ms']:.1f} / {r['recommend_p99_ms']:.1f} |")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
