"""The load harness's own ceiling: its no-op throughput beside ``wrk``'s on this machine.

Starts an embedded redis-server and ``ialp serve --enable-noop`` (no rate limit; the
service of ``benchmarks/loadtest_sweep.py``), then measures ``POST /v1/noop`` with the
same body, alternately with ``wrk -t1 -c16`` and with the harness's engine
(:mod:`simulator_client.loadgen`, closed loop, 16 keep-alive connections), for a few
rounds. Both generators share the machine's cores with the server, so the one that costs
more CPU per request leaves less for the server. Each round runs the two back to back
(alternating which goes first); the reported ratio is the median over rounds of harness
over wrk throughput, beside each side's CPU time per request (load-independent).
Results: benchmarks/results/harness_ceiling.json.

    .venv/bin/python benchmarks/harness_ceiling.py [--rounds 3] [--seconds 8]

``wrk`` comes from the Debian package of that name: run as root, the script installs it
when missing (``apt-get install -y wrk``); otherwise it measures the harness alone and
prints why ``wrk`` was skipped.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.loadtest_sweep import serving  # noqa: E402
from simulator_client.loadgen import LoadShape, Target, run_phase  # noqa: E402
from simulator_client.loadgen.wire import json_body  # noqa: E402
from simulator_client.loadgen.workloads import noop_workload  # noqa: E402
from simulator_client.loadgen.wrk import run_wrk, wrk_path  # noqa: E402

BODY = json_body({"user_id": 7, "history": list(range(1, 21)), "k": 1})
"""The request both generators send."""
TARGET_RATIO = 0.8
"""The harness's no-op throughput should be at least this share of wrk's."""


def ensure_wrk() -> str | None:
    """``None`` when wrk is (now) on PATH, else why it is not."""
    if wrk_path():
        return None
    if not hasattr(os, "geteuid") or os.geteuid() != 0:
        return "wrk is not installed and this is not root (apt-get install -y wrk)"
    if shutil.which("apt-get") is None:
        return "wrk is not installed and apt-get is not available"
    print("installing wrk (apt-get install -y wrk)…", flush=True)
    got = subprocess.run(["apt-get", "install", "-y", "wrk"], capture_output=True, text=True,
                         env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if got.returncode != 0 or not wrk_path():
        return f"apt-get install -y wrk failed: {got.stderr.strip()[-300:]}"
    return None


def _cpu_s() -> float:
    """CPU seconds of this process and its reaped children (wrk, load workers)."""
    me, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF,
                                                resource.RUSAGE_CHILDREN))
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def harness_run(url: str, seconds: float, connections: int, processes: int
                ) -> dict[str, Any]:
    """One closed-loop harness run on the no-op endpoint."""
    target = Target.from_url(url)
    cpu = _cpu_s()
    result = run_phase(target, noop_workload(target, [BODY]),
                       LoadShape(duration_s=seconds, connections=connections,
                                 processes=processes))
    cpu = _cpu_s() - cpu
    s = result.summary("noop")
    out = {k: s[k] for k in ("requests", "ok", "errors_by_status", "throughput_rps",
                             "p50_ms", "p90_ms", "p99_ms", "max_ms", "seconds")}
    return {**out, "cpu_us_per_request": cpu / max(s["requests"], 1) * 1e6}


def wrk_run(url: str, seconds: float, connections: int) -> dict[str, Any]:
    """One ``wrk -t1`` run on the no-op endpoint."""
    cpu = _cpu_s()
    run = run_wrk(url, [BODY], connections=connections, threads=1, duration_s=seconds)
    cpu = _cpu_s() - cpu
    return {**run.summary(), "cpu_us_per_request": cpu / max(run.requests, 1) * 1e6}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=4, help="alternating rounds per generator")
    p.add_argument("--seconds", type=float, default=8.0, help="length of each run")
    p.add_argument("--connections", type=int, default=16)
    p.add_argument("--processes", type=int, default=1, help="harness processes")
    p.add_argument("--num-items", type=int, default=300)
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/harness_ceiling.json")
    args = p.parse_args()
    skipped = ensure_wrk()
    if skipped:
        print(f"wrk skipped: {skipped}", flush=True)
    tmp = ROOT / "runs" / "bench-harness-ceiling"
    tmp.mkdir(parents=True, exist_ok=True)
    load_before = os.getloadavg()
    wrk_runs: list[dict[str, Any]] = []
    harness_runs: list[dict[str, Any]] = []
    with serving("ceiling", args.num_items, tmp) as url:
        noop = f"{url}/v1/noop"
        harness_run(url, 1.0, args.connections, 1)  # warm-up, not measured
        for r in range(args.rounds):
            # Each round pairs the two back to back, first one then the other in turn,
            # so that drifts of the machine's load do not favour either side.
            order = ["wrk", "harness"] if r % 2 == 0 else ["harness", "wrk"]
            for who in order:
                if who == "wrk" and not skipped:
                    wrk_runs.append(wrk_run(noop, args.seconds, args.connections))
                    got = wrk_runs[-1]
                elif who == "harness":
                    harness_runs.append(harness_run(url, args.seconds, args.connections,
                                                    args.processes))
                    got = harness_runs[-1]
                else:
                    continue
                print(f"round {r}: {who:7} {got['throughput_rps']:8.0f} req/s, "
                      f"{got['cpu_us_per_request']:5.1f} µs CPU/request", flush=True)
                time.sleep(0.5)
    harness_rps = median(h["throughput_rps"] for h in harness_runs)
    wrk_rps = median(w["throughput_rps"] for w in wrk_runs) if wrk_runs else None
    ratio = (median(h["throughput_rps"] / w["throughput_rps"]
                    for h, w in zip(harness_runs, wrk_runs, strict=True))
             if wrk_runs else None)
    report = {
        "benchmark": "harness_ceiling",
        "command": "python benchmarks/harness_ceiling.py " + " ".join(sys.argv[1:]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "config": {"rounds": args.rounds, "seconds": args.seconds,
                   "connections": args.connections, "harness_processes": args.processes,
                   "wrk_threads": 1, "num_items": args.num_items,
                   "body": BODY.decode()},
        "wrk_skipped": skipped,
        "wrk_rps_median": wrk_rps,
        "harness_rps_median": harness_rps,
        "ratio_harness_to_wrk": ratio,
        "ratio_of_medians": harness_rps / wrk_rps if wrk_rps else None,
        "cpu_us_per_request_median": {
            "harness": median(h["cpu_us_per_request"] for h in harness_runs),
            "wrk": median(w["cpu_us_per_request"] for w in wrk_runs) if wrk_runs else None},
        "target_ratio": TARGET_RATIO,
        "meets_target": None if ratio is None else ratio >= TARGET_RATIO,
        "wrk_runs": wrk_runs,
        "harness_runs": harness_runs,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    if ratio is None:
        print(f"harness {harness_rps:.0f} req/s (wrk skipped)")
    else:
        print(f"harness {harness_rps:.0f} req/s, wrk {wrk_rps:.0f} req/s: ratio {ratio:.2f} "
              f"({'meets' if ratio >= TARGET_RATIO else 'misses'} the {TARGET_RATIO} target)")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
