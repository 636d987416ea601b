"""Shadow mode's cost: /v1/recommend latency with and without a candidate deciding beside
the served policy.

For each catalogue size, ``ialp serve`` runs as its own process on a private redis-server
with a served version and a candidate version published (untrained networks, different
seeds); ``IALP_SHADOW`` is off in one run and on in the other (alternated ``--repeats``
times so drift on a shared machine hits both). A closed-loop client (the keep-alive client
of ``service_bench.py``) drives /v1/recommend at ``--concurrency`` for ``--duration``
seconds after a warm-up. Reported: throughput, p50/p99 (client side, HTTP included) and,
with shadow on, how many requests the candidate decided and how many it skipped because
its thread was busy.

    .venv/bin/python benchmarks/shadow_latency.py --out benchmarks/results/shadow_latency.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from service_bench import BENCH_KEY, _drive, _percentiles, _stop  # noqa: E402

from trainer.transport.redis_server import EmbeddedRedis, free_port  # noqa: E402


def _publish(redis_url: str, ns: str, num_items: int) -> tuple[int, int]:
    """Publish a served version (seed 0) and a candidate (seed 1)."""
    import redis.asyncio as aioredis

    from policy.checkpoint import init_policy, policy_to_bytes
    from policy.config import PolicyConfig
    from trainer.transport.keys import RedisKeys
    from trainer.transport.publication import PublishedPolicies

    async def go() -> tuple[int, int]:
        client = aioredis.Redis.from_url(redis_url)
        policies = PublishedPolicies(client, RedisKeys(ns))
        out = []
        for seed, promote in ((0, True), (1, False)):
            policy = init_policy(PolicyConfig(num_items=num_items, max_len=50), seed=seed)
            policy.version = await policies.next_version()
            out.append(await policies.publish(policy, policy_to_bytes(policy),
                                              promote=promote))
        await client.aclose()
        return out[0], out[1]

    return asyncio.run(go())


def _serve(redis_url: str, ns: str, num_items: int, shadow: bool,
           log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "ialp", "serve", "--port", str(port), "--redis-url",
           redis_url, "--namespace", ns, "--num-items", str(num_items), "--max-history",
           "200", "--log-level", "warning", "--rate-limit-per-s", "0",
           "--rate-limit-key-per-s", "0"]
    env = {**os.environ, "IALP_API_KEY": BENCH_KEY, "IALP_SHADOW": str(shadow).lower()}
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ialp serve exited: {log.read_text()[-2000:]}")
        try:
            info = httpx.get(f"{base}/v1/policy").json()
            cand = info.get("candidate") or {}
            if not shadow or cand.get("shadow") is not None:
                return proc, base
        except (httpx.HTTPError, ValueError):
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("ialp serve did not become ready")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, nargs="+", default=[300, 4606])
    ap.add_argument("--concurrency", type=int, nargs="+", default=[4, 16])
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=2.0)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--history", type=int, default=20)
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/shadow_latency.json"))
    args = ap.parse_args()

    rng = np.random.default_rng(0)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp) / "redis", port=free_port()).start()
        try:
            for n, c in [(n, c) for n in args.items for c in args.concurrency]:
                bodies = [{"user_id": int(u), "k": 1, "history": [
                    int(x) for x in rng.integers(0, n, size=args.history)]}
                    for u in range(512)]
                for rep in range(args.repeats):
                    for shadow in (False, True) if rep % 2 == 0 else (True, False):
                        ns = f"shadow-{uuid.uuid4().hex[:8]}"
                        _publish(server.url, ns, n)
                        proc, base = _serve(server.url, ns, n, shadow,
                                            Path(tmp) / f"{ns}.log")
                        try:
                            asyncio.run(_drive(base, "/v1/recommend", bodies, c,
                                               args.warmup))
                            res = asyncio.run(_drive(base, "/v1/recommend", bodies, c,
                                                     args.duration))
                            cand = httpx.get(f"{base}/v1/policy").json().get("candidate")
                        finally:
                            _stop(proc)
                        row = {"items": n, "concurrency": c, "shadow": shadow, "repeat": rep,
                               "throughput_rps": res["throughput_rps"],
                               "errors": res["errors"], **_percentiles(res["latencies"]),
                               "shadow_stats": (cand or {}).get("shadow")}
                        rows.append(row)
                        print(f"items={n:>6} c={c:>3} shadow={shadow!s:<5} rep={rep} "
                              f"{row['throughput_rps']:7.0f} req/s  p50 {row['p50_ms']:6.2f} "
                              f"ms  p99 {row['p99_ms']:6.2f} ms  {row['shadow_stats'] or ''}",
                              flush=True)
        finally:
            server.stop()
    summary = []
    for n, c in [(n, c) for n in args.items for c in args.concurrency]:
        off = [r for r in rows if r["items"] == n and r["concurrency"] == c and not r["shadow"]]
        on = [r for r in rows if r["items"] == n and r["concurrency"] == c and r["shadow"]]
        p50_off = float(np.median([r["p50_ms"] for r in off]))
        p50_on = float(np.median([r["p50_ms"] for r in on]))
        summary.append({
            "items": n, "concurrency": c, "p50_off_ms": p50_off, "p50_on_ms": p50_on,
            "p50_ratio": p50_on / p50_off,
            "p99_off_ms": float(np.median([r["p99_ms"] for r in off])),
            "p99_on_ms": float(np.median([r["p99_ms"] for r in on])),
            "throughput_off": float(np.median([r["throughput_rps"] for r in off])),
            "throughput_on": float(np.median([r["throughput_rps"] for r in on])),
            "shadowed_share": float(np.mean([
                r["shadow_stats"]["decisions"] / max(1, r["shadow_stats"]["decisions"]
                                                     + r["shadow_stats"]["skipped"])
                for r in on])),
        })
        s = summary[-1]
        print(f"items={n} c={c}: p50 {s['p50_off_ms']:.2f} → {s['p50_on_ms']:.2f} ms "
              f"(×{s['p50_ratio']:.2f}), shadowed {s['shadowed_share']:.0%} of requests")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "command": " ".join(sys.argv), "machine": {"cpus": os.cpu_count(),
                                                  "python": platform.python_version()},
        "concurrency": args.concurrency, "repeats": args.repeats,
        "duration_s": args.duration, "rows": rows, "summary": summary}, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
