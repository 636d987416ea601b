"""Fault-injection scenarios against the real processes: a trainer killed mid-stream,
Redis restarted under traffic, an API replica killed behind a round-robin client.

Each scenario starts its own replicas and trainer (:mod:`simulator_client.chaos.processes`)
on a fresh Redis namespace, drives traffic over HTTP, injects one fault and returns the
counts reported in ``docs/reliability.md``: traffic sent, events accepted, events
learned, duplicates, errors seen by clients and time to recover. The tests run them
small; the soak benchmark (``benchmarks/reliability_faults.py``) runs them long.
"""

from __future__ import annotations

import math
import threading
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import redis

from simulator_client.chaos.processes import (
    AUTH,
    N_ITEMS,
    Procs,
    Traffic,
    feedback,
    learned_counts,
    one_event,
    procs,
    recommend,
    wait_learned,
)
from trainer.transport.keys import RedisKeys
from trainer.transport.redis_server import EmbeddedRedis, free_port


def trainer_kill(tmp: Path, redis_url: str, *, events: int = 240, kill_at: int = 80,
                 down_events: int = 60, restart_consumer: str = "rel-trainer",
                 claim_idle_ms: int = 1000) -> dict[str, Any]:
    """SIGKILL the trainer mid-stream, keep sending, restart it; count learning."""
    traffic = Traffic()
    r = redis.Redis.from_url(redis_url)
    recovered: list[float] = []
    with procs(tmp, redis_url) as ps, httpx.Client(timeout=30) as http:
        ps.trainer(IALP_CLAIM_IDLE_MS=claim_idle_ms, IALP_CLAIM_EVERY_S=0.5)
        url = ps.api("api", free_port())
        ps.wait(lambda: r.exists(ps.keys.policy_current) == 1, "first version")
        killed_with_pending = -1
        for i in range(events):
            if i == kill_at:
                # Mid-stream: wait until the trainer is busy with what was sent.
                ps.wait(lambda: learned_counts(r, ps.keys, [])["events_learned"] > 0,
                        "some learning before the kill")
                ps.kill("trainer")
                c = learned_counts(r, ps.keys, [])
                killed_with_pending = c["pending"] + c["buffer"]
            if i == kill_at + down_events:
                restart = time.monotonic()
                ps.trainer("trainer", consumer=restart_consumer,
                           IALP_CLAIM_IDLE_MS=claim_idle_ms, IALP_CLAIM_EVERY_S=0.5)
                # Recovered once the backlog accepted while it was down is learned.
                backlog = len(traffic.accepted)
                watcher = threading.Thread(target=_watch_learned, args=(
                    redis_url, ps.keys, backlog, restart, recovered), daemon=True)
                watcher.start()
            one_event(http, url, traffic, user=i % 9)
        recover = wait_learned(ps, r, len(traffic.accepted))
        watcher.join(timeout=120)
        recover_s = recovered[0] if recovered else math.nan
        counts = learned_counts(r, ps.keys, traffic.accepted)
        meta_events = _current_meta(http, url, ps, r)
    return {"fault": "trainer SIGKILL mid-stream, restarted", **traffic.summary(),
            **counts, "in_flight_at_kill": killed_with_pending,
            "published_events_learned": meta_events,
            "backlog_at_restart": backlog,
            "time_to_recover_s": round(recover_s, 2),
            "catch_up_after_traffic_s": round(recover, 2)}


def _watch_learned(redis_url: str, keys: RedisKeys, n: int, since: float,
                   out: list[float], timeout: float = 120.0) -> None:
    r = redis.Redis.from_url(redis_url)
    while time.monotonic() - since < timeout:
        if int(r.hget(keys.trainer_stats, "events_learned") or 0) >= n:
            out.append(time.monotonic() - since)
            return
        time.sleep(0.05)


def _current_meta(http: httpx.Client, url: str, ps: Procs, r: redis.Redis) -> int:
    cur = int(r.get(ps.keys.policy_current) or 0)
    import json

    raw = r.get(ps.keys.policy_meta(cur))
    return int(json.loads(raw)["events_learned"]) if raw else -1


def redis_restart(tmp: Path, *, events: int = 200, down_s: float = 2.0,
                  stop_at: int = 60, hard: bool = False) -> dict[str, Any]:
    """Restart a private redis-server (AOF on) while feedback flows; probe /recommend."""
    server = EmbeddedRedis(tmp / f"redis-{uuid.uuid4().hex[:6]}", port=free_port(),
                           persistence=True).start()
    traffic = Traffic()
    probe = Traffic()
    stop_probe = threading.Event()
    try:
        r = redis.Redis.from_url(server.url, socket_timeout=2)
        with procs(tmp, server.url) as ps, httpx.Client(timeout=30) as http:
            ps.trainer()
            url = ps.api("api", free_port(), IALP_REDIS_COOLDOWN_S=0.2)
            ps.wait(lambda: r.exists(ps.keys.policy_current) == 1, "first version")

            def prober() -> None:  # /v1/recommend must answer throughout
                with httpx.Client(timeout=30) as h:
                    while not stop_probe.is_set():
                        try:
                            resp = h.post(f"{url}/v1/recommend",
                                          json={"user_id": 1, "history": [2], "k": 1})
                            probe.note("recommend", resp.status_code)
                        except httpx.HTTPError as exc:
                            probe.errors.append((url, repr(exc)))
                        time.sleep(0.01)

            th = threading.Thread(target=prober, daemon=True)
            th.start()
            restart_t = 0.0
            first_202_after = None
            down_503 = 0
            for i in range(events):
                if i == stop_at:
                    pending = recommend(http, url, traffic, 3)
                    assert pending["decision_recorded"]
                    if hard:
                        server.kill()
                    else:
                        server.stop()  # SIGTERM: the AOF is flushed
                    # Feedback for a decision made before the outage: 503 + Retry-After
                    # until Redis is back, then 202.
                    before = traffic.statuses["feedback 503"]
                    th_fb = threading.Thread(target=feedback, args=(
                        http, url, traffic, 3, pending), kwargs={"feedback_deadline": 120.0})
                    th_fb.start()
                    time.sleep(down_s)
                    server.start()
                    restart_t = time.monotonic()
                    th_fb.join()
                    down_503 = traffic.statuses["feedback 503"] - before
                n_before = len(traffic.accepted)
                one_event(http, url, traffic, user=i % 9)
                if restart_t and first_202_after is None and len(traffic.accepted) > n_before:
                    first_202_after = time.monotonic() - restart_t
            stop_probe.set()
            th.join()
            try:
                recover = wait_learned(ps, r, len(traffic.accepted),
                                       timeout=30.0 if hard else 120.0)
            except AssertionError:
                if not hard:
                    raise
                recover = math.nan  # a crash may lose up to 1 s of writes (everysec)
            counts = learned_counts(r, ps.keys, traffic.accepted)
    finally:
        stop_probe.set()
        server.stop()
    return {"fault": f"redis-server {'SIGKILL' if hard else 'restart'} ({down_s:.0f} s down, "
            "AOF everysec)", **traffic.summary(), **counts,
            "feedback_503_while_down": down_503,
            "503_without_retry_after": traffic.retry_after_missing,
            "recommend_probe": {"sent": probe.sent, "statuses": dict(probe.statuses),
                                "errors": len(probe.errors)},
            "time_to_recover_s": None if first_202_after is None else
            round(first_202_after, 2),
            "events_lost": len(traffic.accepted) - counts["learned_markers"],
            "catch_up_after_traffic_s": round(recover, 2)}


class RoundRobin:
    """A client-side balancer: requests alternate over replicas; a replica that refuses
    connections is dropped and the request (never sent) goes to the next one. A request
    that fails after it was sent is an error the client sees (it may have had effects)."""

    def __init__(self, urls: list[str]) -> None:
        self.urls = list(urls)
        self.alive = list(urls)
        self.i = 0
        self.lock = threading.Lock()

    def pick(self) -> str:
        with self.lock:
            if not self.alive:
                raise RuntimeError("no replica alive")
            self.i += 1
            return self.alive[self.i % len(self.alive)]

    def drop(self, url: str) -> None:
        with self.lock:
            if url in self.alive:
                self.alive.remove(url)

    def post(self, http: httpx.Client, path: str, body: dict[str, Any],
             traffic: Traffic) -> httpx.Response | None:
        while True:
            url = self.pick()
            try:
                resp = http.post(f"{url}{path}", json=body, headers=AUTH)
            except httpx.ConnectError:
                self.drop(url)  # nothing was sent: safe to send elsewhere
                continue
            except httpx.HTTPError as exc:
                self.drop(url)
                traffic.note(path, "error")
                with traffic.lock:
                    traffic.errors.append((url, type(exc).__name__))
                return None
            traffic.note(path, resp.status_code)
            return resp


def replica_kill(tmp: Path, redis_url: str, *, clients: int = 4, requests: int = 150,
                 kill_after: int = 40) -> dict[str, Any]:
    """Two API replicas behind a round-robin client; SIGKILL one under load."""
    traffic = Traffic()
    with procs(tmp, redis_url) as ps:
        a = ps.api("api-a", free_port())
        b = ps.api("api-b", free_port())
        rr = RoundRobin([a, b])
        killed = threading.Event()
        started = threading.Barrier(clients + 1)
        count = [0]
        lock = threading.Lock()
        killed_at = [0.0]
        first_ok_after: list[float | None] = [None]

        def worker(w: int) -> None:
            with httpx.Client(timeout=30) as http:
                started.wait()
                for j in range(requests):
                    with lock:
                        count[0] += 1
                    rec = rr.post(http, "/v1/recommend",
                                  {"user_id": w, "history": [j % N_ITEMS], "k": 2}, traffic)
                    if rec is None or rec.status_code != 200:
                        continue
                    body = rec.json()
                    fb = rr.post(http, "/v1/feedback", {
                        "event_id": body["event_id"], "item_id": body["items"][0],
                        "reward": 1.0}, traffic)
                    if fb is not None and fb.status_code == 202:
                        with traffic.lock:
                            traffic.accepted.append(body["event_id"])
                            if killed.is_set() and first_ok_after[0] is None:
                                first_ok_after[0] = time.monotonic() - killed_at[0]

        threads = [threading.Thread(target=worker, args=(w,)) for w in range(clients)]
        for t in threads:
            t.start()
        started.wait()
        ps.wait(lambda: count[0] >= kill_after, "load running")
        ps.kill("api-b")
        killed_at[0] = time.monotonic()
        killed.set()
        for t in threads:
            t.join()
        r = redis.Redis.from_url(redis_url)
        enqueued = int(r.get(ps.keys.enqueued_total) or 0)
    bad_status = {k: v for k, v in traffic.statuses.items()
                  if not k.endswith((" 200", " 202", " error"))}
    return {"fault": "API replica SIGKILL under load (2 replicas, round-robin client, "
            f"{clients} concurrent clients)", **traffic.summary(),
            "errors_by_replica": dict(Counter(u for u, _ in traffic.errors)),
            "error_kinds": dict(Counter(e for _, e in traffic.errors)),
            "killed_replica": b, "surviving_replica": a, "non_2xx": bad_status,
            "enqueued_in_redis": enqueued,
            "time_to_recover_s": None if first_ok_after[0] is None else
            round(first_ok_after[0], 3), "max_in_flight": clients}
