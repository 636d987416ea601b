"""Feedback ingest through sharded streams: one Redis and a 3-node Redis Cluster.

For each shard count, ``--events`` transitions go through ``bus.publish`` (the API's
enqueue: dedup marker + stream entry + counters, one Lua call), ``--in-flight`` calls at a
time from one asyncio process; then one consumer drains them as the trainer does
(``read`` + ``commit`` + ``consume_buffer``). Per phase: events/s, and the CPU seconds
spent per event by the Python process and by the redis-server processes (from
``/proc``), which is what the load model of ``docs/performance.md`` scales from.

    .venv/bin/python benchmarks/shard_ingest.py   # → benchmarks/results/shard_ingest.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

from policy.types import Transition
from trainer.transport.client import redis_client
from trainer.transport.redis_cluster import EmbeddedRedisCluster
from trainer.transport.redis_server import EmbeddedRedis, free_port
from trainer.transport.sharded_bus import make_bus
from trainer.transport.shards import Shards

TICK = os.sysconf("SC_CLK_TCK")


def _cpu_s(pids: list[int]) -> float:
    """User + system CPU seconds of ``pids`` so far."""
    total = 0
    for pid in pids:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / TICK


def _event(shards: Shards, i: int) -> Transition:
    user = i % 5000
    return Transition(event_id=shards.new_event_id(user), user_id=user,
                      history=tuple(range(i % 7, i % 7 + 20)), action=i % 300,
                      reward=float(i % 5), done=False, propensity=0.25, policy_version=1,
                      source="theta")


async def _phase(pids: list[int], work: Any) -> dict[str, float]:
    cpu0, redis0, t0 = time.process_time(), _cpu_s(pids), time.perf_counter()
    n = await work()
    wall = time.perf_counter() - t0
    return {"events": n, "seconds": round(wall, 3), "events_per_s": round(n / wall, 1),
            "client_cpu_us_per_event": round(1e6 * (time.process_time() - cpu0) / n, 1),
            "redis_cpu_us_per_event": round(1e6 * (_cpu_s(pids) - redis0) / n, 1)}


async def run_one(url: str, pids: list[int], shards_n: int, cluster: bool, events: int,
                  in_flight: int) -> dict[str, Any]:
    ns = f"bench-{os.urandom(3).hex()}"
    shards = Shards(ns, shards_n, cluster=cluster)
    client = redis_client(url)
    bus = make_bus(client, shards, consumer="bench")
    await bus.ensure_group()
    batch = [_event(shards, i) for i in range(events)]

    async def publish() -> int:
        queue = iter(batch)

        async def worker() -> None:
            for t in queue:
                await bus.publish(t)
        await asyncio.gather(*[worker() for _ in range(in_flight)])
        return events

    async def consume() -> int:
        done = 0
        while done < events:
            got = await bus.read(256, 0)
            new = await bus.commit(got)
            await bus.consume_buffer([t.event_id for t in new], learned_total=done + len(new))
            done += len(new)
        return done

    try:
        pub = await _phase(pids, publish)
        con = await _phase(pids, consume)
    finally:
        await client.aclose()
    return {"shards": shards_n, "publish": pub, "consume": con}


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"events": args.events, "in_flight": args.in_flight,
                           "cpus": os.cpu_count(), "python": platform.python_version(),
                           "load_average_at_start": os.getloadavg(), "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        server = EmbeddedRedis(Path(tmp) / "single", port=free_port()).start()
        try:
            assert server.process is not None
            for n in args.shards:
                res = await run_one(server.url, [server.process.pid], n, False, args.events,
                                    args.in_flight)
                out["runs"].append({"redis": "one redis-server", **res})
                print(json.dumps(out["runs"][-1]))
        finally:
            server.stop()
        cluster = EmbeddedRedisCluster(Path(tmp) / "cluster", nodes=3).start()
        try:
            pids = [s.process.pid for s in cluster.servers if s.process is not None]
            for n in args.shards:
                res = await run_one(cluster.url, pids, n, True, args.events, args.in_flight)
                out["runs"].append({"redis": "3-node cluster", **res})
                print(json.dumps(out["runs"][-1]))
        finally:
            cluster.stop()
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=10_000)
    p.add_argument("--in-flight", type=int, default=64)
    p.add_argument("--shards", type=int, nargs="+", default=[1, 4, 8])
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/shard_ingest.json"))
    args = p.parse_args()
    result = asyncio.run(main_async(args))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
