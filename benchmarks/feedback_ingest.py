"""Feedback at scale: batch ingestion on one API process, exactly-once counts, and the
delay from feedback to a new version served by every replica.

Part ``ingest``: an embedded redis-server (append-only persistence), one ``ialp serve`` and
one ``ialp trainer``. The decisions are recorded first, written with the service's own
decision store (``app.decisions.DecisionStore.save_many``, the Lua call ``/v1/recommend``
makes; recording ~90,000 through ``/v1/recommend`` would take minutes on this machine).
Their feedback is then sent through ``POST /v1/feedback/batch`` in batches of ``--batch``
events with a lean raw-HTTP client (the generator shares the cores): first *sustained*,
open loop at ``--ingest-rate`` events/s for ``--ingest-seconds`` (latency from each
batch's scheduled start), then a closed-loop *burst* of ``--burst-events`` over
``--connections`` connections (what one process answers at most). Reported: events/s
(overall and per second), batch latency, the trainer's lag (``GET /v1/policy``) while it
runs; then, once the trainer is done, the exactly-once counts (answers, enqueued counter,
stream length, learned counter and markers, trainer duplicates) and a second pass that
re-sends every batch (all must come back ``duplicate`` and nothing be learned twice).

Part ``delay``: the same Redis layout with two ``ialp serve`` replicas and one trainer;
feedback arrives open loop at ``--rate`` events/s (batches of ``--rate-batch`` every
``rate-batch / rate`` seconds, alternating between the replicas) for ``--delay-seconds``.
Every replica's ``GET /v1/policy`` is polled; the delay of a batch is the time from its
accepted answer until every replica serves a version whose ``events_learned`` covers it
(the trainer learns the stream in order). Reported: p50 / p95 / max of that delay.

    .venv/bin/python benchmarks/feedback_ingest.py [--part both|ingest|delay]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from app.decisions import Decision, DecisionStore  # noqa: E402
from ialp.procs import spawn_ialp, stop_all, wait_ready  # noqa: E402
from trainer.transport.client import redis_client  # noqa: E402
from trainer.transport.redis_server import EmbeddedRedis, free_port  # noqa: E402
from trainer.transport.shards import Shards  # noqa: E402

KEY = "feedback-ingest-key"
N_ITEMS = 300  # Coat's catalogue size


# -- the deployment -----------------------------------------------------------------------
@contextmanager
def stack(tmp: Path, *, replicas: int, shards: int, trainer_env: dict[str, str],
          serve_env: dict[str, str]) -> Iterator[tuple[list[str], str, str]]:
    """Redis, ``replicas`` × ``ialp serve`` and one ``ialp trainer``; yields the API URLs,
    the Redis URL and the namespace; stops everything on exit."""
    tag = uuid.uuid4().hex[:6]
    redis = EmbeddedRedis(tmp / f"redis-{tag}", port=free_port(), persistence=True).start()
    ns = f"fb-{tag}"
    common = ["--redis-url", redis.url, "--namespace", ns, "--num-items", str(N_ITEMS),
              "--stream-shards", str(shards)]
    procs = []
    urls = []
    try:
        for r in range(replicas):
            port = free_port()
            procs.append(spawn_ialp(
                ["serve", *common, "--port", str(port), "--rate-limit-per-s", "0",
                 "--rate-limit-key-per-s", "0"], tmp / f"{tag}-api{r}.log", cwd=ROOT,
                env={"IALP_API_KEY": KEY, **serve_env}))
            urls.append(f"http://127.0.0.1:{port}")
        procs.append(spawn_ialp(["trainer", *common, "--state-dir", str(tmp / f"state-{tag}")],
                                tmp / f"{tag}-trainer.log", cwd=ROOT, env=trainer_env))
        wait_ready(urls, procs, what=f"the service (logs in {tmp})")
        yield urls, redis.url, ns
    finally:
        stop_all(procs)
        redis.stop()


async def record_decisions(redis_url: str, ns: str, shards: int, n: int,
                           seed: int = 0) -> list[dict[str, Any]]:
    """Write ``n`` decisions as ``/v1/recommend`` does (random histories, slates of 2) and
    return their feedback events (reward 1 or 0 on the first item)."""
    from app.decision_shards import ShardedDecisionStore

    rng = np.random.default_rng(seed)
    layout = Shards(ns, shards)
    client = redis_client(redis_url)
    store: DecisionStore = (DecisionStore(client, layout.keys, ttl_s=3600) if not layout.tagged
                            else ShardedDecisionStore(client, layout, ttl_s=3600))
    events: list[dict[str, Any]] = []
    now = time.time()
    try:
        for start in range(0, n, 2000):
            batch = []
            for i in range(start, min(n, start + 2000)):
                user = int(rng.integers(0, 10_000))
                hist = tuple(int(x) for x in rng.integers(0, N_ITEMS, size=int(
                    rng.integers(1, 21))))
                slate = tuple(int(x) for x in rng.choice(N_ITEMS, size=2, replace=False))
                batch.append(Decision(layout.new_event_id(user), user, hist, slate,
                                      (0.02, 0.01), ("theta", "beta"), 1, now))
                events.append({"event_id": batch[-1].event_id, "item_id": str(slate[0]),
                               "reward": float(i % 2), "done": False})
            await store.save_many(batch)
    finally:
        await client.aclose()
    return events


# -- a lean HTTP/1.1 client ---------------------------------------------------------------
class Conn:
    """One keep-alive connection sending pre-encoded requests, one at a time."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.last_used = 0.0

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        """Send one request, return (status, body)."""
        if self.writer is not None and time.monotonic() - self.last_used > 2.0:
            self.close()  # the server closes keep-alive connections idle for 5 s
            self.writer = None
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await self.reader.readexactly(length)
        self.last_used = time.monotonic()
        return status, body

    def close(self) -> None:
        """Close the socket."""
        if self.writer is not None:
            self.writer.close()


def _conn(host: str) -> Conn:
    name, port = host.split(":")
    return Conn(name, int(port))


def encode_batch(host: str, events: Sequence[dict[str, Any]]) -> bytes:
    """A complete ``POST /v1/feedback/batch`` request."""
    body = orjson.dumps({"events": list(events)})
    return (f"POST /v1/feedback/batch HTTP/1.1\r\nHost: {host}\r\nX-API-Key: {KEY}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode() + body


async def send_all(url: str, requests: Sequence[bytes], connections: int
                   ) -> tuple[list[tuple[float, float, dict[str, int]]], dict[int, int]]:
    """Closed loop: ``connections`` workers send every request once. Returns per batch
    (start, end, counts) and the answers by status."""
    host = url.removeprefix("http://")
    todo = list(reversed(requests))
    done: list[tuple[float, float, dict[str, int]]] = []
    statuses: dict[int, int] = {}

    async def worker() -> None:
        conn = _conn(host)
        try:
            while todo:
                raw = todo.pop()
                t0 = time.perf_counter()
                status, body = await conn.request(raw)
                statuses[status] = statuses.get(status, 0) + 1
                counts = orjson.loads(body)["counts"] if status == 200 else {}
                done.append((t0, time.perf_counter(), counts))
        finally:
            conn.close()

    await asyncio.gather(*[worker() for _ in range(connections)])
    return done, statuses


async def send_open_loop(url: str, requests: Sequence[bytes], period_s: float,
                         max_connections: int
                         ) -> tuple[list[tuple[float, float, dict[str, int]]], dict[int, int]]:
    """Open loop: request i starts at ``i × period_s`` on an idle connection (a new one
    when all are busy, up to ``max_connections``; beyond, it waits, and the wait counts:
    each result's start is its scheduled time). Returns what :func:`send_all` returns."""
    host = url.removeprefix("http://")
    idle: list[Conn] = []
    slots = asyncio.Semaphore(max_connections)
    done: list[tuple[float, float, dict[str, int]]] = []
    statuses: dict[int, int] = {}

    async def one(raw: bytes, at: float) -> None:
        async with slots:
            conn = idle.pop() if idle else _conn(host)
            status, body = await conn.request(raw)
            idle.append(conn)
        statuses[status] = statuses.get(status, 0) + 1
        counts = orjson.loads(body)["counts"] if status == 200 else {}
        done.append((at, time.perf_counter(), counts))

    t0 = time.perf_counter()
    tasks = []
    for i, raw in enumerate(requests):
        at = t0 + i * period_s
        wait = at - time.perf_counter()
        if wait > 0:
            await asyncio.sleep(wait)
        tasks.append(asyncio.create_task(one(raw, at)))
    await asyncio.gather(*tasks)
    for conn in idle:
        conn.close()
    return done, statuses


def _sum_counts(done: Sequence[tuple[float, float, dict[str, int]]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for _, _, c in done:
        for k, v in c.items():
            out[k] = out.get(k, 0) + v
    return out


def _pct(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def _trainer_env(args: argparse.Namespace) -> dict[str, str]:
    return {"IALP_PUBLISH_INTERVAL_S": str(args.publish_interval_s),
            "IALP_UPDATE_EVERY": str(args.update_every),
            "IALP_FLUSH_IDLE_S": str(args.flush_idle_s)}


# -- part 1: ingestion and exactly-once -------------------------------------------------
async def _poll_lag(url: str, stop: asyncio.Event,
                    out: list[tuple[float, int | None, float | None]], t0: float) -> None:
    """Samples of (seconds, trainer_lag events, trainer_lag_s) from ``GET /v1/policy``."""
    async with httpx.AsyncClient(timeout=5) as client:
        while not stop.is_set():
            info = (await client.get(f"{url}/v1/policy")).json()
            out.append((round(time.perf_counter() - t0, 2), info.get("trainer_lag"),
                        info.get("trainer_lag_s")))
            await asyncio.sleep(0.5)


async def _redis_counts(redis_url: str, ns: str, shards: int) -> dict[str, int]:
    layout = Shards(ns, shards)
    client = redis_client(redis_url)
    try:
        stream = enq = learned_markers = 0
        pending = buffered = 0
        for k in layout.all_shard_keys():
            stream += int(await client.xlen(k.stream))
            enq += int(await client.get(k.enqueued_total) or 0)
            buffered += int(await client.zcard(k.trainer_buffer))
            with contextlib.suppress(Exception):  # no group yet
                pending += int((await client.xpending(k.stream, "trainer"))["pending"])
            async for _ in client.scan_iter(match=k.learned("*"), count=10_000):
                learned_markers += 1
        stats = {(a.decode() if isinstance(a, bytes) else a): int(b) for a, b in
                 (await client.hgetall(layout.keys.trainer_stats)).items()}
        dup = stats.get("duplicates", 0)
        if layout.tagged:  # the per-shard counters
            dup = 0
            for k in layout.all_shard_keys():
                dup += int(await client.hget(k.trainer_stats, "duplicates") or 0)
        return {"stream_length": stream, "enqueued_counter": enq,
                "learned_markers": learned_markers, "events_learned": stats.get(
                    "events_learned", 0), "trainer_duplicates": dup,
                "trainer_buffered": buffered, "pending": pending,
                "updates": stats.get("updates", 0)}
    finally:
        await client.aclose()


async def _wait_learned(redis_url: str, ns: str, shards: int, target: int,
                        timeout_s: float) -> tuple[float | None, dict[str, int]]:
    t0 = time.perf_counter()
    counts = await _redis_counts(redis_url, ns, shards)
    while time.perf_counter() - t0 < timeout_s:
        if counts["events_learned"] >= target and counts["trainer_buffered"] == 0:
            return time.perf_counter() - t0, counts
        await asyncio.sleep(1.0)
        counts = await _redis_counts(redis_url, ns, shards)
    return None, counts


def _per_second(done: Sequence[tuple[float, float, dict[str, int]]], t0: float
                ) -> list[int]:
    secs: dict[int, int] = {}
    for _, end, c in done:
        s = int(end - t0)
        secs[s] = secs.get(s, 0) + c.get("accepted", 0) + c.get("duplicate", 0)
    return [secs.get(s, 0) for s in range(max(secs) + 1)] if secs else []


def _phase(done: Sequence[tuple[float, float, dict[str, int]]],
           statuses: dict[int, int], t0: float, wall: float) -> dict[str, Any]:
    counts = _sum_counts(done)
    per_s = _per_second(done, t0)
    lat = [(e - s) * 1000 for s, e, _ in done]
    return {"requests": len(done), "statuses": statuses, "counts": counts, "wall_s": wall,
            "events_per_s": counts.get("accepted", 0) / wall,
            "answered_events_per_s": sum(counts.values()) / wall,
            "events_by_second": per_s,
            # The last second is cut short by the end of the phase.
            "min_full_second_events": min(per_s[:-1]) if len(per_s) > 1 else None,
            "batch_latency_ms": {"p50": _pct(lat, 50), "p99": _pct(lat, 99),
                                 "max": max(lat) if lat else None}}


async def ingest(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Part 1 (see the module's docstring)."""
    with stack(tmp, replicas=1, shards=args.shards, trainer_env=_trainer_env(args),
               serve_env={"IALP_MAX_IN_FLIGHT": "64"}) as (urls, redis_url, ns):
        url = urls[0]
        host = url.removeprefix("http://")
        n_sustained = int(args.ingest_rate * args.ingest_seconds)
        events = await record_decisions(redis_url, ns, args.shards,
                                        n_sustained + args.burst_events)
        n = len(events)
        requests = [encode_batch(host, events[i:i + args.batch])
                    for i in range(0, n, args.batch)]
        split = n_sustained // args.batch
        # Warm-up: a few events of their own (decisions recorded apart), not counted.
        warm = await record_decisions(redis_url, ns, args.shards, 200, seed=99)
        await send_all(url, [encode_batch(host, warm[i:i + 50]) for i in range(0, 200, 50)],
                       2)
        lag: list[tuple[float, int | None, float | None]] = []
        stop = asyncio.Event()
        t0 = time.perf_counter()
        poller = asyncio.create_task(_poll_lag(url, stop, lag, t0))
        # Sustained: open loop at the target rate (latency from each scheduled start).
        done, statuses = await send_open_loop(url, requests[:split],
                                              args.batch / args.ingest_rate, 16)
        sustained = _phase(done, statuses, t0, time.perf_counter() - t0)
        print(f"sustained: {sustained['counts']} in {sustained['wall_s']:.1f} s, "
              f"{sustained['events_per_s']:,.0f} events/s, by second "
              f"{sustained['events_by_second']}", flush=True)
        # Burst: closed loop, as fast as the service answers.
        t1 = time.perf_counter()
        cpu0 = os.times()
        done_b, statuses_b = await send_all(url, requests[split:], args.connections)
        cpu1 = os.times()
        burst = _phase(done_b, statuses_b, t1, time.perf_counter() - t1)
        burst["generator_cpu_s"] = (cpu1.user - cpu0.user) + (cpu1.system - cpu0.system)
        print(f"burst: {burst['counts']} in {burst['wall_s']:.1f} s, "
              f"{burst['events_per_s']:,.0f} events/s", flush=True)
        first = _sum_counts([*done, *done_b])
        sent_s = time.perf_counter() - t0
        learned_after, counts = await _wait_learned(redis_url, ns, args.shards, n + 200,
                                                    args.learn_wait_s)
        stop.set()
        await poller
        print(f"learned {learned_after} s after the last answer: {counts}", flush=True)
        # Second pass: every batch again (a client that retries everything).
        t2 = time.perf_counter()
        done2, statuses2 = await send_all(url, requests, args.connections)
        again = _phase(done2, statuses2, t2, time.perf_counter() - t2)
        second = again["counts"]
        await asyncio.sleep(args.idle_check_s)  # longer than the trainer's idle flush
        counts2 = await _redis_counts(redis_url, ns, args.shards)
        print(f"second pass {second}; after: {counts2}", flush=True)
        total = n + 200  # + warm-up
        return {
            "events": n, "batch": args.batch, "shards": args.shards,
            "trainer": {"publish_interval_s": args.publish_interval_s,
                        "update_every": args.update_every,
                        "flush_idle_s": args.flush_idle_s},
            "sustained": {"rate": args.ingest_rate, "seconds": args.ingest_seconds,
                          "events": n_sustained, **sustained},
            "burst": {"events": args.burst_events, "connections": args.connections,
                      **burst},
            "trainer_lag_samples": lag,
            "seconds_until_all_learned_after_sending": learned_after,
            "learn_rate_events_per_s": None if learned_after is None
            else total / (sent_s + learned_after),
            "after_learning": counts,
            "second_pass": again,
            "after_second_pass": counts2,
            "exactly_once": {
                "all_accepted_once": first.get("accepted") == n
                and first.get("duplicate", 0) == 0,
                "second_pass_all_duplicate": second.get("duplicate") == n,
                "enqueued == accepted": counts2["enqueued_counter"] == total
                and counts2["stream_length"] == total,
                "learned == accepted": counts2["events_learned"] == total
                and counts2["learned_markers"] == total,
                "nothing learned twice": counts2["trainer_duplicates"] == 0
                and counts2["events_learned"] == counts["events_learned"],
                "nothing pending or buffered": counts2["pending"] == 0
                and counts2["trainer_buffered"] == 0,
            },
        }


# -- part 2: feedback → served version ---------------------------------------------------
async def delay(args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    """Part 2 (see the module's docstring)."""
    n = int(args.rate * args.delay_seconds)
    with stack(tmp, replicas=2, shards=args.shards, trainer_env=_trainer_env(args),
               serve_env={}) as (urls, redis_url, ns):
        events = await record_decisions(redis_url, ns, args.shards, n + 200)
        warm, events = events[:200], events[200:]
        hosts = [u.removeprefix("http://") for u in urls]
        conns = [_conn(h) for h in hosts]
        for c, h in zip(conns, hosts, strict=True):
            status, _ = await c.request(encode_batch(h, warm[:100]))
            warm = warm[100:]
            assert status == 200
        await asyncio.sleep(args.idle_check_s)  # the warm-up is learned and served
        async with httpx.AsyncClient(timeout=5) as client:
            base = min([int((await client.get(f"{u}/v1/policy")).json()["events_learned"])
                        for u in urls])
        size = args.rate_batch
        batches = [events[i:i + size] for i in range(0, len(events), size)]
        period = size / args.rate
        accepted_at: list[tuple[float, int]] = []  # (answer time, cumulative accepted)
        served: list[list[tuple[float, int]]] = [[] for _ in urls]  # per replica
        total = [base]
        stop = asyncio.Event()

        meta_key = Shards(ns, args.shards).keys.policy_meta
        learned_in: dict[int, int] = {}  # version → events_learned (its metadata)
        rc = redis_client(redis_url)

        async def poll(r: int) -> None:
            # /healthz is the cheapest answer naming the served version; what the
            # version learned comes from its metadata in Redis (read once per version).
            async with httpx.AsyncClient(timeout=5) as client:
                while not stop.is_set():
                    v = int((await client.get(f"{urls[r]}/healthz")).json()["policy_version"])
                    if v not in learned_in:
                        learned_in[v] = int(orjson.loads(await rc.get(meta_key(v)))
                                            ["events_learned"])
                    served[r].append((time.perf_counter(), learned_in[v]))
                    await asyncio.sleep(args.poll_s)

        async def send(i: int, batch: list[dict[str, Any]]) -> None:
            r = i % len(urls)
            conn = _conn(hosts[r])
            try:
                status, body = await conn.request(encode_batch(hosts[r], batch))
            finally:
                conn.close()
            if status == 200:
                total[0] += orjson.loads(body)["counts"]["accepted"]
                accepted_at.append((time.perf_counter(), total[0]))

        pollers = [asyncio.create_task(poll(r)) for r in range(len(urls))]
        t0 = time.perf_counter()
        sends = []
        for i, batch in enumerate(batches):
            wait = t0 + i * period - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(wait)
            sends.append(asyncio.create_task(send(i, batch)))
        await asyncio.gather(*sends)
        wall = time.perf_counter() - t0
        deadline = time.perf_counter() + args.learn_wait_s
        while time.perf_counter() < deadline and any(
                not s or s[-1][1] < total[0] for s in served):
            await asyncio.sleep(0.2)
        stop.set()
        await asyncio.gather(*pollers)
        await rc.aclose()
        for c in conns:
            c.close()
        delays = []
        series = []  # (seconds into the phase, delay) per batch
        unserved = 0
        for t_acc, k in accepted_at:
            per_replica = [next((t for t, e in s if t >= t_acc and e >= k), None)
                           for s in served]
            if any(t is None for t in per_replica):
                unserved += 1
                continue
            delays.append(max(t for t in per_replica if t is not None) - t_acc)
            series.append((round(t_acc - t0, 3), round(delays[-1], 3)))
        versions = {u: (await _policy(u)) for u in urls}
        return {
            "rate": args.rate, "batch": size, "seconds": args.delay_seconds,
            "replicas": len(urls), "events_sent": n, "accepted": total[0] - base,
            "wall_s": wall, "events_per_s": (total[0] - base) / wall,
            "poll_s": args.poll_s, "batches_measured": len(delays),
            "batches_not_served_in_wait": unserved,
            "delay_s": {"p50": _pct(delays, 50), "p95": _pct(delays, 95),
                        "max": max(delays) if delays else None},
            "delay_s_by_second": _max_by_second(series),
            "target_s": 2.0, "final_policy": versions,
            "trainer": {"publish_interval_s": args.publish_interval_s,
                        "update_every": args.update_every,
                        "flush_idle_s": args.flush_idle_s},
        }


def _max_by_second(series: Sequence[tuple[float, float]]) -> list[float]:
    """The largest delay of the batches accepted in each second of the phase."""
    out: dict[int, float] = {}
    for t, d in series:
        out[int(t)] = max(out.get(int(t), 0.0), d)
    return [round(out.get(s, float("nan")), 3) for s in range(max(out) + 1)] if out else []


async def _policy(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=5) as client:
        info = (await client.get(f"{url}/v1/policy")).json()
    return {k: info[k] for k in ("version", "events_learned", "updates", "trainer_lag")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=["ingest", "delay", "both"], default="both")
    parser.add_argument("--ingest-rate", type=float, default=6000.0,
                        help="sustained phase: events/s, open loop")
    parser.add_argument("--ingest-seconds", type=float, default=11.0)
    parser.add_argument("--burst-events", type=int, default=20_000,
                        help="burst phase: events sent closed loop after the sustained one")
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--shards", type=int, default=1)
    parser.add_argument("--learn-wait-s", type=float, default=120.0)
    parser.add_argument("--idle-check-s", type=float, default=6.0,
                        help="wait after the second pass (longer than the idle flush)")
    parser.add_argument("--rate", type=float, default=1000.0)
    parser.add_argument("--rate-batch", type=int, default=50)
    parser.add_argument("--delay-seconds", type=float, default=20.0)
    parser.add_argument("--poll-s", type=float, default=0.05)
    parser.add_argument("--publish-interval-s", type=float, default=1.0,
                        help="the trainer's IALP_PUBLISH_INTERVAL_S")
    parser.add_argument("--update-every", type=int, default=64,
                        help="the trainer's IALP_UPDATE_EVERY")
    parser.add_argument("--flush-idle-s", type=float, default=5.0,
                        help="the trainer's IALP_FLUSH_IDLE_S")
    parser.add_argument("--tag", default="", help="suffix of the result's key in the JSON "
                        "(e.g. _defaults), so runs with other settings sit beside it")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks/results/feedback_ingest.json")
    args = parser.parse_args()
    tmp = ROOT / "runs" / "bench-feedback-ingest"
    tmp.mkdir(parents=True, exist_ok=True)
    payload: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    payload.update({
        "benchmark": "feedback_ingest",
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    })
    load = os.getloadavg()
    if args.part in ("ingest", "both"):
        payload["ingest" + args.tag] = {"command": "python benchmarks/feedback_ingest.py "
                             + " ".join(sys.argv[1:]), "load_average_before": load,
                             **asyncio.run(ingest(args, tmp))}
        print(json.dumps(payload["ingest" + args.tag]["exactly_once"]), flush=True)
    if args.part in ("delay", "both"):
        payload["delay" + args.tag] = {"command": "python benchmarks/feedback_ingest.py "
                            + " ".join(sys.argv[1:]), "load_average_before": os.getloadavg(),
                            **asyncio.run(delay(args, tmp))}
        print(json.dumps(payload["delay" + args.tag]["delay_s"]), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
