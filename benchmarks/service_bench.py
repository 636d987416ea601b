"""Service benchmark: /v1/recommend with and without micro-batching, beside /v1/noop.

Starts a private redis-server and, for each mode, ``ialp serve`` as a separate process;
an asyncio HTTP client drives each endpoint at several concurrency levels for a fixed
time and records throughput and latency percentiles (client side, including HTTP). The
no-op endpoint parses the same request body and answers at once, so the gap between
the two is the cost of the policy (forward pass, sampling, decision write). Then it
measures feedback ingestion: /v1/feedback accepted per second, and the trainer side's
stream read + atomic commit rate.

    .venv/bin/python benchmarks/service_bench.py --out benchmarks/results/service_bench.json

The client shares the machine's cores with the server; the numbers are for the whole
box, not for the server alone.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainer.transport.redis_server import EmbeddedRedis, free_port  # noqa: E402

BENCH_KEY = "service-bench-key"
"""API key of the benchmarked service (feedback needs one)."""


class KeepAliveConnection:
    """A minimal HTTP/1.1 keep-alive client connection (one request at a time).

    httpx's async pool costs more CPU per request than the server's no-op endpoint on
    this machine, which would make the client the bottleneck; this one costs little.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def post(self, path: str, payload: Any) -> tuple[int, bytes]:
        """POST JSON; returns (status, body)."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        body = json.dumps(payload).encode()
        self.writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json"
            f"\r\nX-API-Key: {BENCH_KEY}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body)
        status = int((await self.reader.readline()).split()[1])
        length = 0
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b""):
                break
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return status, await self.reader.readexactly(length)

    async def close(self) -> None:
        """Close the socket."""
        if self.writer is not None:
            self.writer.close()
            await self.writer.wait_closed()
            self.writer = None


def _hostport(base: str) -> tuple[str, int]:
    host, port = base.split("//", 1)[1].rsplit(":", 1)
    return host, int(port)


def _percentiles(lat: list[float]) -> dict[str, float]:
    a = np.asarray(lat) * 1000.0
    return {"p50_ms": float(np.percentile(a, 50)), "p90_ms": float(np.percentile(a, 90)),
            "p99_ms": float(np.percentile(a, 99)), "mean_ms": float(a.mean())}


async def _drive(base: str, path: str, bodies: list[dict[str, Any]], concurrency: int,
                 duration: float) -> dict[str, Any]:
    """``concurrency`` closed-loop clients posting for ``duration`` seconds."""
    lat: list[float] = []
    errors = 0
    conns = [KeepAliveConnection(*_hostport(base)) for _ in range(concurrency)]
    stop_at = time.perf_counter() + duration

    async def worker(w: int) -> None:
        nonlocal errors
        i = w
        while time.perf_counter() < stop_at:
            t0 = time.perf_counter()
            status, _ = await conns[w].post(path, bodies[i % len(bodies)])
            if status == 200:
                lat.append(time.perf_counter() - t0)
            else:
                errors += 1
            i += concurrency

    start = time.perf_counter()
    await asyncio.gather(*(worker(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - start
    for c in conns:
        await c.close()
    return {"requests": len(lat), "errors": errors, "seconds": elapsed,
            "throughput_rps": len(lat) / elapsed, "latencies": lat}


def _batch_stats(base: str) -> tuple[float, float]:
    text = httpx.get(f"{base}/metrics").text
    count = float(re.search(r"ialp_recommend_batch_size_count (\S+)", text).group(1))
    total = float(re.search(r"ialp_recommend_batch_size_sum (\S+)", text).group(1))
    return count, total


def _start_api(redis_url: str, ns: str, args: argparse.Namespace, batching: bool,
               log: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    cmd = [sys.executable, "-m", "ialp", "serve", "--port", str(port), "--redis-url",
           redis_url, "--namespace", ns, "--num-items", str(args.num_items), "--enable-noop",
           "--max-history", "200", "--log-level", "warning",
           "--micro-batching" if batching else "--no-micro-batching",
           "--batch-max-size", str(args.batch_max_size),
           "--batch-max-wait-ms", str(args.batch_max_wait_ms),
           "--rate-limit-per-s", "0", "--rate-limit-key-per-s", "0"]  # measure, not limit
    with log.open("wb") as fh:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                                env={**os.environ, "IALP_API_KEY": BENCH_KEY})
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ialp serve exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{base}/readyz").status_code == 200:
                return proc, base
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    proc.kill()
    raise RuntimeError("ialp serve did not become ready")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


async def _feedback_rate(base: str, n: int, concurrency: int,
                         rng: np.random.Generator, num_items: int) -> dict[str, Any]:
    """Make ``n`` decisions, then post their feedback as fast as ``concurrency`` allows."""
    conns = [KeepAliveConnection(*_hostport(base)) for _ in range(concurrency)]
    histories = [rng.integers(0, num_items, size=20).tolist() for _ in range(n)]
    events: list[dict[str, Any]] = []

    async def decide(w: int) -> None:
        for i in range(w, n, concurrency):
            _, body = await conns[w].post("/v1/recommend", {
                "user_id": i, "history": histories[i], "k": 1})
            events.append(json.loads(body))

    await asyncio.gather(*(decide(w) for w in range(concurrency)))
    lat: list[float] = []
    accepted = 0

    async def send(w: int) -> None:
        nonlocal accepted
        for e in events[w::concurrency]:
            t0 = time.perf_counter()
            status, _ = await conns[w].post("/v1/feedback", {
                "event_id": e["event_id"], "item_id": e["items"][0], "reward": 1.0})
            lat.append(time.perf_counter() - t0)
            accepted += status == 202

    start = time.perf_counter()
    await asyncio.gather(*(send(w) for w in range(concurrency)))
    elapsed = time.perf_counter() - start
    for c in conns:
        await c.close()
    return {"events": n, "accepted": accepted, "concurrency": concurrency,
            "seconds": elapsed, "events_per_s": accepted / elapsed, **_percentiles(lat)}


async def _trainer_commit_rate(redis_url: str, ns: str) -> dict[str, Any]:
    """Read + atomic commit of everything on the stream (no learner updates)."""
    import redis.asyncio as aioredis

    from trainer.transport.bus import RedisStreamBus
    from trainer.transport.keys import RedisKeys

    client = aioredis.Redis.from_url(redis_url)
    bus = RedisStreamBus(client, RedisKeys(ns), consumer="bench")
    await bus.ensure_group()
    n = 0
    start = time.perf_counter()
    while True:
        got = await bus.read(512, 50)
        if not got:
            break
        n += len(await bus.commit(got))
    elapsed = time.perf_counter() - start
    await client.aclose()
    return {"events": n, "seconds": elapsed, "events_per_s": n / elapsed if elapsed else 0.0}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/service_bench.json")
    p.add_argument("--duration", type=float, default=3.0, help="seconds per run")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--num-items", type=int, default=300)
    p.add_argument("--history", type=int, default=20, help="history length per request")
    p.add_argument("--batch-max-size", type=int, default=64)
    p.add_argument("--batch-max-wait-ms", type=float, default=2.0)
    p.add_argument("--feedback-events", type=int, default=2000)
    p.add_argument("--repeats", type=int, default=3,
                   help="alternating runs per cell and mode (throughput: median)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    rng = np.random.default_rng(args.seed)
    bodies = [{"user_id": int(u), "history": rng.integers(0, args.num_items,
                                                          size=args.history).tolist(), "k": 1}
              for u in range(512)]
    load_start = os.getloadavg()
    tmp = Path(tempfile.mkdtemp(prefix="ialp-bench-"))
    redis = EmbeddedRedis(tmp / "redis", port=free_port()).start()
    results: list[dict[str, Any]] = []
    feedback: dict[str, Any] = {}
    modes = {True: "batching", False: "no-batching"}
    cells = [(c, e) for c in args.concurrency for e in ("/v1/noop", "/v1/recommend")]
    bar = tqdm(total=len(cells) * len(modes) * args.repeats, desc="cells")
    servers: dict[bool, tuple[subprocess.Popen[bytes], str, str]] = {}
    try:
        # Both servers run side by side and cells alternate between them, so slow drifts
        # in the machine's background load hit both modes alike.
        for batching in modes:
            ns = f"bench-{uuid.uuid4().hex[:8]}"
            proc, base = _start_api(redis.url, ns, args, batching, tmp / f"api-{batching}.log")
            servers[batching] = (proc, base, ns)
        for _, base, _ in servers.values():
            asyncio.run(_drive(base, "/v1/recommend", bodies, 8, 1.0))  # warm-up
            asyncio.run(_drive(base, "/v1/recommend", bodies, 1, 0.5))
        for conc, endpoint in cells:
            runs: dict[bool, list[dict[str, Any]]] = {b: [] for b in modes}
            batches: dict[bool, list[float]] = {b: [0.0, 0.0] for b in modes}
            for _ in range(args.repeats):
                for batching, (_, base, _) in servers.items():
                    before = _batch_stats(base)
                    runs[batching].append(asyncio.run(
                        _drive(base, endpoint, bodies, conc, args.duration)))
                    after = _batch_stats(base)
                    batches[batching][0] += after[0] - before[0]
                    batches[batching][1] += after[1] - before[1]
                    bar.update()
            for batching, rs in runs.items():
                lat = [x for r in rs for x in r.pop("latencies")]
                passes, total = batches[batching]
                results.append({
                    "mode": modes[batching], "endpoint": endpoint, "concurrency": conc,
                    "requests": sum(r["requests"] for r in rs),
                    "errors": sum(r["errors"] for r in rs),
                    "throughput_rps": float(np.median([r["throughput_rps"] for r in rs])),
                    "throughput_rps_runs": [r["throughput_rps"] for r in rs],
                    **_percentiles(lat),
                    "mean_batch": total / passes if passes else None})
        _, base, ns = servers[True]
        feedback = asyncio.run(_feedback_rate(base, args.feedback_events, 32, rng,
                                              args.num_items))
        feedback["trainer_commit"] = asyncio.run(_trainer_commit_rate(redis.url, ns))
    finally:
        bar.close()
        for proc, _, _ in servers.values():
            _stop(proc)
        redis.stop()
    import torch

    report = {
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "load_average_at_end": os.getloadavg(),
        "load_average_at_start": load_start,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "platform": platform.platform()},
        "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "recommend": results,
        "feedback": feedback,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"{'mode':12} {'endpoint':14} {'conc':>4} {'rps':>8} {'p50':>7} {'p90':>7} "
          f"{'p99':>7} {'batch':>6}")
    for r in results:
        mb = "" if r["mean_batch"] is None else f"{r['mean_batch']:.1f}"
        print(f"{r['mode']:12} {r['endpoint']:14} {r['concurrency']:>4} "
              f"{r['throughput_rps']:>8.0f} {r['p50_ms']:>7.1f} {r['p90_ms']:>7.1f} "
              f"{r['p99_ms']:>7.1f} {mb:>6}")
    print(f"feedback: {feedback['events_per_s']:.0f} events/s accepted "
          f"(p50 {feedback['p50_ms']:.1f} ms, p99 {feedback['p99_ms']:.1f} ms); trainer "
          f"read+commit {feedback['trainer_commit']['events_per_s']:.0f} events/s")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
