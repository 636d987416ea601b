"""Soak runs of the fault scenarios and a large fuzzing budget, for docs/reliability.md.

Runs, against real processes (``python -m ialp serve|trainer``) and real redis-servers:
the trainer SIGKILLed mid-stream and restarted (same consumer name, and under another
name so the dead one's entries are claimed), Redis restarted gracefully and SIGKILLed
(AOF everysec) while feedback flows, an API replica SIGKILLed under load behind a
round-robin client, then fuzzes every OpenAPI operation. Results:
benchmarks/results/reliability.json.

    .venv/bin/python benchmarks/reliability_faults.py [--scale 1.0] [--fuzz-examples 1000]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simulator_client.chaos.fuzz import fuzz  # noqa: E402
from simulator_client.chaos.scenarios import (  # noqa: E402
    redis_restart,
    replica_kill,
    trainer_kill,
)
from trainer.transport.redis_server import EmbeddedRedis, free_port  # noqa: E402


def _fuzz(redis_url: str, examples: int) -> dict[str, Any]:
    import threading

    import uvicorn

    from app.main import create_app
    from app.settings import ServiceSettings

    settings = ServiceSettings(redis_url=redis_url, namespace="fuzz", num_items=60,
                               max_len=10, max_history=30, max_k=5, api_key="fuzz-key",
                               rate_limit_per_s=0.0, rate_limit_key_per_s=0.0)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1",
                                           port=port, log_level="critical"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    try:
        spec = httpx.get(f"{url}/openapi.json").json()
        events = [httpx.post(f"{url}/v1/recommend", json={
            "user_id": u, "history": [u + 1], "k": 2}).json()["event_id"] for u in range(20)]
        start = time.perf_counter()
        report = fuzz(url, spec, examples_per_operation=examples, pools={"event_id": events},
                      api_key="fuzz-key")
        out = report.summary()
        out["seconds"] = round(time.perf_counter() - start, 1)
        out["examples_per_operation"] = examples
        return out
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def main() -> None:
    """Run every scenario and write the JSON report."""
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--scale", type=float, default=1.0, help="multiplies event counts")
    ap.add_argument("--fuzz-examples", type=int, default=1000,
                    help="hypothesis examples per OpenAPI operation")
    ap.add_argument("--out", type=Path,
                    default=ROOT / "benchmarks" / "results" / "reliability.json")
    args = ap.parse_args()
    n = lambda x: max(10, int(x * args.scale))  # noqa: E731
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        shared = EmbeddedRedis(tmp / "shared-redis", port=free_port(), persistence=False)
        shared.start()
        runs = [
            ("trainer_kill", lambda: trainer_kill(
                tmp, shared.url, events=n(1500), kill_at=n(500), down_events=n(300))),
            ("trainer_kill_other_consumer", lambda: trainer_kill(
                tmp, shared.url, events=n(1000), kill_at=n(400), down_events=n(200),
                restart_consumer="rel-trainer-2", claim_idle_ms=1000)),
            ("redis_restart", lambda: redis_restart(tmp, events=n(1000), stop_at=n(300),
                                                    down_s=3.0)),
            ("redis_sigkill", lambda: redis_restart(tmp, events=n(1000), stop_at=n(300),
                                                    down_s=3.0, hard=True)),
            ("replica_kill", lambda: replica_kill(tmp, shared.url, clients=8,
                                                  requests=n(250), kill_after=n(600))),
            ("fuzz", lambda: _fuzz(shared.url, args.fuzz_examples)),
        ]
        try:
            for name, run in tqdm(runs, desc="reliability scenarios"):
                start = time.perf_counter()
                results[name] = run()
                results[name]["wall_s"] = round(time.perf_counter() - start, 1)
                tqdm.write(f"{name}: {json.dumps(results[name])}")
        finally:
            shared.stop()
    report = {"command": " ".join(["benchmarks/reliability_faults.py", *sys.argv[1:]]),
              "machine": {"python": platform.python_version(), "cpus": _cpus()},
              "results": results}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
