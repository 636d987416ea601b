"""Highest open-loop rate the service holds with p99 < 50 ms, per catalogue size.

For each catalogue (Coat 300, Industry 4,385, LFM 4,606 items and a synthetic 100,000-item
one) this starts an embedded redis-server and ``ialp serve`` on this machine (plus
``ialp trainer`` with ``--with-trainer``: on 2 cores its updates compete with the API for
CPU, as they would not in a deployment that gives the trainer its own machine), warms the
API up, then runs ``ialp loadtest`` phases at rising arrival rates (each phase measures
the no-op endpoint and the recommend+feedback mix for the same duration; traffic from
the harness's engine, ``simulator_client.loadgen``, ``--processes`` of them), stopping after
two failing rates in a row. A rate holds when p99 of the recommend calls stays under the
budget with no errors and no dropped arrivals. Results: benchmarks/results/loadtest_sweep.json.

    .venv/bin/python benchmarks/loadtest_sweep.py [--duration 5] [--only coat]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import sys
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ialp.procs import spawn_ialp, stop_all, wait_ready  # noqa: E402
from policy.types import PAD  # noqa: E402
from simulator_client.loadtest import LoadConfig, run_loadtest  # noqa: E402
from trainer.transport.redis_server import EmbeddedRedis, free_port  # noqa: E402

CATALOGUES = {"coat": 300, "industry": 4385, "lfm": 4606, "synthetic-100k": 100_000}
RATES = [25, 50, 100, 200, 400, 800]
BENCH_KEY = "loadtest-sweep-key"
"""API key of the swept service (feedback needs one)."""


def _histories(name: str, n_items: int, seed: int) -> list[list[int]]:
    rng = np.random.default_rng(seed)
    if name.startswith("synthetic"):
        return [rng.integers(0, n_items, size=int(k)).tolist()
                for k in rng.integers(1, 21, size=1000)]
    from simulator_client.envs.by_name import make_env

    env = make_env(name, "test", progress=False)
    obs = env.reset(env.sample_users(1000, rng))
    out = [row[row != PAD].tolist() for row in obs.history]
    return [h if h else [int(rng.integers(0, n_items))] for h in out]


@contextmanager
def serving(tag: str, n_items: int, tmp: Path, *, with_trainer: bool = False,
            api_key: str = BENCH_KEY, serve_args: Sequence[str] = ()) -> Iterator[str]:
    """An embedded redis-server and ``ialp serve --enable-noop`` (no rate limit, key
    ``api_key``, plus ``serve_args``) for ``n_items`` items, plus ``ialp trainer`` with
    ``with_trainer``; yields the API's URL once ready and stops everything on exit."""
    redis = EmbeddedRedis(tmp / f"redis-{tag}", port=free_port(), persistence=True).start()
    port = free_port()
    ns = f"bench-{uuid.uuid4().hex[:6]}"
    common = ["--redis-url", redis.url, "--namespace", ns, "--num-items", str(n_items)]
    # Benchmarks measure the service's capacity: no rate limit in the way.
    procs = [spawn_ialp(["serve", *common, "--port", str(port), "--enable-noop",
                         "--rate-limit-per-s", "0", "--rate-limit-key-per-s", "0",
                         *serve_args],
                        tmp / f"{tag}-api.log", cwd=ROOT, env={"IALP_API_KEY": api_key})]
    if with_trainer:
        procs.append(spawn_ialp(["trainer", *common, "--state-dir", str(tmp / f"state-{ns}")],
                                tmp / f"{tag}-trainer.log", cwd=ROOT))
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready([url], procs, what=f"service for {tag} (logs in {tmp})")
        yield url
    finally:
        stop_all(procs)
        redis.stop()


def _sweep(name: str, n_items: int, duration: float, tmp: Path, p99_budget_ms: float,
           with_trainer: bool, processes: int) -> dict[str, Any]:
    steps: list[dict[str, Any]] = []
    with serving(name, n_items, tmp, with_trainer=with_trainer) as url:
        histories = _histories(name, n_items, seed=0)
        # Warm-up (first forward passes, connection pools), not measured.
        asyncio.run(run_loadtest(url, LoadConfig(duration_s=2.0, concurrency=4,
                                                 feedback_ratio=0.5, learn_wait_s=0.0),
                                 histories=histories, api_key=BENCH_KEY))
        for rate in RATES:
            config = LoadConfig(duration_s=duration, rate=rate, concurrency=None,
                                feedback_ratio=0.5, learn_wait_s=0.0, processes=processes)
            report = asyncio.run(run_loadtest(url, config, histories=histories,
                                              api_key=BENCH_KEY))
            phases = report["phases"]
            mix = phases["recommend+feedback"]
            step = {"rate": rate, "mix": mix, "noop": next(v for k, v in phases.items()
                                                          if k != "recommend+feedback"),
                    "ratios_to_noop": report["ratios_to_noop"]}
            ok = (mix["p99_ms"] < p99_budget_ms and not mix["errors_by_status"]
                  and mix["dropped"] == 0)
            step["holds"] = ok
            steps.append(step)
            print(f"{name:>15} rate {rate:>5}/s: p50 {mix['p50_ms']:.1f} ms, p99 "
                  f"{mix['p99_ms']:.1f} ms, {mix['throughput_rps']:.0f} ok/s, "
                  f"errors {mix['errors_by_status']} → {'holds' if ok else 'fails'}",
                  flush=True)
            # A single stall decides p99 in a short phase: stop after two failures in a row.
            if len(steps) >= 2 and not steps[-1]["holds"] and not steps[-2]["holds"]:
                break
    held = [s["rate"] for s in steps if s["holds"]]
    return {"catalogue": name, "num_items": n_items,
            "max_rate_p99_under_budget": max(held) if held else 0, "steps": steps}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per phase")
    parser.add_argument("--only", nargs="*", default=list(CATALOGUES))
    parser.add_argument("--p99-ms", type=float, default=50.0)
    parser.add_argument("--with-trainer", action="store_true",
                        help="also run the trainer on this machine during the sweep")
    parser.add_argument("--processes", type=int, default=1,
                        help="load-generating processes of the harness")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/loadtest_sweep.json")
    args = parser.parse_args()
    tmp = ROOT / "runs" / "bench-loadtest"
    tmp.mkdir(parents=True, exist_ok=True)
    results = [_sweep(n, CATALOGUES[n], args.duration, tmp, args.p99_ms, args.with_trainer,
                      args.processes) for n in args.only]
    payload = {
        "benchmark": "loadtest_sweep",
        "command": "python benchmarks/loadtest_sweep.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": __import__("os").cpu_count(), "python": platform.python_version()},
        "p99_budget_ms": args.p99_ms,
        "with_trainer": args.with_trainer,
        "load_average_before": __import__("os").getloadavg(),
        "phase_seconds": args.duration,
        "harness": {"engine": "simulator_client.loadgen", "processes": args.processes,
                    "feedback": "chained on the same connection, for half the answers"},
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2))
    for r in results:
        print(f"{r['catalogue']:>15}: {r['max_rate_p99_under_budget']} req/s with p99 < "
              f"{args.p99_ms:.0f} ms")


if __name__ == "__main__":
    main()
