"""Graceful overload: goodput, refusals and latency at twice the measured capacity.

Starts an embedded Redis and ``ialp serve`` (no rate limit, default overload bounds),
measures the capacity of ``/v1/recommend`` (closed loop, 16 connections, the project's
load engine), then offers an open-loop arrival rate of ``--factor`` × that capacity for
``--seconds`` (latency counted from the scheduled start, so queueing cannot hide). It
reports goodput against the capacity, how every refused request was answered (status,
``Retry-After``), the latency of the accepted ones, and whether the service is healthy
afterwards. First, on a separate server with ``IALP_MAX_IN_FLIGHT=1``, it measures what
a refusal costs: the API process's CPU time per answer when nearly all are refused.

    .venv/bin/python benchmarks/overload.py --out benchmarks/results/overload.json

The load generator shares the machine's 2 cores with the service and Redis.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.loadtest_sweep import serving  # noqa: E402
from simulator_client.loadgen import LoadShape, Target, run_phase  # noqa: E402
from simulator_client.loadgen.workloads import (  # noqa: E402
    recommend_bodies,
    recommend_workload,
)


def _bodies(num_items: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    return recommend_bodies([[int(x) for x in rng.choice(num_items, 20, replace=False)]
                             for _ in range(64)])


def phase(url: str, bodies: list[bytes], seconds: float, *, rate: float | None,
          connections: int) -> dict[str, Any]:
    """One load phase on /v1/recommend; the engine's summary of it."""
    target = Target.from_url(url)
    shape = LoadShape(duration_s=seconds, connections=connections, rate=rate,
                      max_connections=2048, drain_s=10.0)
    result = run_phase(target, recommend_workload(target, bodies), shape)
    return result.summary("recommend")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def refusal_cost(bodies: list[bytes], seconds: float, tmp: Path) -> dict[str, Any]:
    """API-process CPU per answer when (nearly) every request is refused: a server with
    ``IALP_MAX_IN_FLIGHT=1`` under 64 closed-loop connections."""
    os.environ["IALP_MAX_IN_FLIGHT"] = "1"
    try:
        with serving("refusals", 4606, tmp) as url:
            port = url.rsplit(":", 1)[1]
            pids = subprocess.run(["pgrep", "-f", "--", f"--port {port}"], capture_output=True,
                                  text=True, check=False).stdout.split()
            if not pids:
                return {"skipped": "the server's process was not found"}
            pid = int(pids[0])
            phase(url, bodies, 2.0, rate=None, connections=64)  # warm-up
            before = _cpu_seconds(pid)
            res = phase(url, bodies, seconds, rate=None, connections=64)
            used = _cpu_seconds(pid) - before
    finally:
        del os.environ["IALP_MAX_IN_FLIGHT"]
    answers = res["requests"]
    refused = sum(n for st, n in res["by_status"].items() if st == "503")
    return {"answers": answers, "refused": refused, "api_cpu_s": used,
            "api_cpu_us_per_answer": 1e6 * used / max(answers, 1), "phase": res}


def main() -> int:
    """Run the benchmark and write the JSON results."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--items", type=int, default=4606, help="catalogue size")
    p.add_argument("--capacity-seconds", type=float, default=10.0)
    p.add_argument("--seconds", type=float, default=30.0, help="length of the overload")
    p.add_argument("--factor", type=float, default=2.0, help="offered load / capacity")
    p.add_argument("--connections", type=int, default=64,
                   help="open-loop connections opened before the start")
    p.add_argument("--refusal-seconds", type=float, default=8.0,
                   help="length of the refusal-cost phase (0: skip it)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/overload.json")
    args = p.parse_args()
    bodies = _bodies(args.items)
    cost: dict[str, Any] = {"skipped": "--refusal-seconds 0"}
    if args.refusal_seconds > 0:
        with tempfile.TemporaryDirectory(prefix="ialp-refusals-") as tmp:
            cost = refusal_cost(bodies, args.refusal_seconds, Path(tmp))
        if "api_cpu_us_per_answer" in cost:
            print(f"refusal cost: {cost['api_cpu_us_per_answer']:.1f} µs of API CPU per "
                  f"answer ({cost['refused']:,} of {cost['answers']:,} refused)", flush=True)
    with tempfile.TemporaryDirectory(prefix="ialp-overload-") as tmp, \
            serving("overload", args.items, Path(tmp)) as url:
        phase(url, bodies, 3.0, rate=None, connections=16)  # warm-up
        cap = phase(url, bodies, args.capacity_seconds, rate=None, connections=16)
        capacity = cap["throughput_rps"]
        print(f"capacity (closed loop, 16 connections): {capacity:,.0f} req/s, "
              f"p99 {cap['p99_ms']:.1f} ms", flush=True)
        offered = args.factor * capacity
        over = phase(url, bodies, args.seconds, rate=offered, connections=args.connections)
        refused = {s: n for s, n in over["by_status"].items() if not s.startswith("2")}
        with_retry = over["retry_after_by_status"].get("503", 0)
        health = httpx.get(f"{url}/healthz", timeout=5).status_code
        after = [httpx.post(f"{url}/v1/recommend", content=bodies[i], timeout=5,
                            headers={"content-type": "application/json"}).status_code
                 for i in range(20)]
    report = {
        "benchmark": "overload", "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version()},
        "items": args.items, "capacity_rps": capacity, "capacity_phase": cap,
        "offered_rps": offered, "overload_phase": over,
        "goodput_rps": over["throughput_rps"],
        "goodput_over_capacity": over["throughput_rps"] / capacity,
        "refused_by_status": refused, "refused_503_with_retry_after": with_retry,
        "every_refusal_503_with_retry_after": set(refused) <= {"503"}
        and with_retry == refused.get("503", 0) and not over["connection_errors"],
        "accepted_p99_ms": over["ok_p99_ms"], "healthz_after": health,
        "refusal_cost": cost,
        "recommend_after": after,
        "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"offered {offered:,.0f}/s for {args.seconds:g} s: goodput "
          f"{report['goodput_rps']:,.0f}/s = {report['goodput_over_capacity']:.2f} × capacity;"
          f" refused {refused} ({with_retry} with Retry-After), dropped by the generator "
          f"{over['dropped']}; accepted p50 / p99 {over['ok_p50_ms']:.1f} / "
          f"{over['ok_p99_ms']:.1f} ms; afterwards /healthz {health}, 20 recommends "
          f"{sorted(set(after))}")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
