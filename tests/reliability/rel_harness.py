"""Fault-injection scenarios against the real processes (``python -m ialp serve|trainer``).

Each scenario starts its own API replicas and trainer on a fresh Redis namespace, drives
traffic over HTTP, injects one fault and returns the counts reported in
``docs/reliability.md``: traffic sent, events accepted, events learned, duplicates,
errors seen by clients and time to recover. The tests run them small; the soak
benchmark (``benchmarks/reliability_faults.py``) runs them long.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import redis

from trainer.transport.keys import RedisKeys
from trainer.transport.redis_server import EmbeddedRedis, free_port

ROOT = Path(__file__).resolve().parents[2]
N_ITEMS = 30
API_KEY = "rel-feedback-key"
"""Key of every API replica a scenario starts (feedback needs it)."""
AUTH = {"X-API-Key": API_KEY}


class Procs:
    """Child processes of one scenario, with their logs (stopped on exit)."""

    def __init__(self, tmp: Path, redis_url: str, namespace: str | None = None) -> None:
        self.tmp = tmp
        self.redis_url = redis_url
        self.ns = namespace or f"rel-{uuid.uuid4().hex[:8]}"
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, Path] = {}
        self.keys = RedisKeys(self.ns)

    def _env(self, extra: dict[str, Any]) -> dict[str, str]:
        env = dict(os.environ)
        env.update({"IALP_REDIS_URL": self.redis_url, "IALP_NAMESPACE": self.ns,
                    "IALP_NUM_ITEMS": str(N_ITEMS), "IALP_MAX_LEN": "10", "IALP_SEED": "0",
                    "IALP_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1",
                    # fault scenarios drive bursts from one address: no rate limit
                    "IALP_API_KEY": API_KEY, "IALP_RATE_LIMIT_PER_S": "0",
                    "IALP_RATE_LIMIT_KEY_PER_S": "0"})
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def spawn(self, name: str, args: list[str], env: dict[str, Any]) -> None:
        """``python -m ialp ARGS`` as ``name`` (its log is appended across restarts)."""
        log = self.tmp / f"{self.ns}-{name}.log"
        self.logs[name] = log
        with log.open("ab") as fh:
            self.procs[name] = subprocess.Popen(
                [sys.executable, "-m", "ialp", *args], cwd=ROOT, stdout=fh,
                stderr=subprocess.STDOUT, env=self._env(env))

    def api(self, name: str, port: int, **env: Any) -> str:
        """Start an API replica; returns its base URL once ready."""
        self.spawn(name, ["serve", "--port", str(port), "--log-level", "warning"], env)
        url = f"http://127.0.0.1:{port}"
        with httpx.Client(timeout=5) as http:
            self.wait(lambda: http.get(f"{url}/readyz").status_code == 200, f"{name} ready")
        return url

    def trainer(self, name: str = "trainer", *, consumer: str = "rel-trainer",
                metrics_port: int = 0, **env: Any) -> None:
        """Start the trainer (stable consumer name and state dir across restarts)."""
        base: dict[str, Any] = {
            "IALP_STATE_DIR": self.tmp / f"{self.ns}-state", "IALP_CONSUMER": consumer,
            "IALP_UPDATE_EVERY": 16, "IALP_FLUSH_IDLE_S": 0.5, "IALP_BLOCK_MS": 100,
            "IALP_METRICS_PORT": metrics_port, "IALP_LEARNER_OPTIONS": '{"lr": 0.01}'}
        base.update(env)
        self.spawn(name, ["trainer"], base)

    def kill(self, name: str) -> None:
        """SIGKILL (a crash: no clean-up runs)."""
        p = self.procs[name]
        p.send_signal(signal.SIGKILL)
        p.wait()

    def tails(self) -> str:
        return "\n".join(f"--- {n}\n{p.read_text()[-3000:]}" for n, p in self.logs.items()
                         if p.is_file())

    def wait(self, pred: Callable[[], bool], what: str, timeout: float = 120.0,
             allow_dead: tuple[str, ...] = ()) -> float:
        """Poll ``pred``; returns the seconds it took. Fails with the logs on timeout or
        when a process that should be alive died."""
        start = time.monotonic()
        while True:
            try:
                if pred():
                    return time.monotonic() - start
            except (httpx.HTTPError, redis.RedisError):
                pass
            dead = [n for n, p in self.procs.items()
                    if p.poll() is not None and p.returncode != -signal.SIGKILL
                    and n not in allow_dead]
            if dead or time.monotonic() - start > timeout:
                raise AssertionError(f"waiting for {what} failed (dead: {dead})\n"
                                     f"{self.tails()}")
            time.sleep(0.05)

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


@contextmanager
def procs(tmp: Path, redis_url: str) -> Iterator[Procs]:
    """A :class:`Procs` whose children are stopped on exit."""
    ps = Procs(tmp, redis_url)
    try:
        yield ps
    finally:
        ps.stop()


@dataclass
class Traffic:
    """What clients sent and saw."""

    sent: int = 0
    """HTTP requests sent (recommend + feedback)."""
    accepted: list[str] = field(default_factory=list)
    """Event ids whose feedback was answered 202."""
    duplicates: int = 0
    """Feedback answered 200 duplicate."""
    statuses: Counter[str] = field(default_factory=Counter)
    """``route status`` -> count (``error`` for transport errors)."""
    errors: list[tuple[str, str]] = field(default_factory=list)
    """(replica URL, error) of every request that failed at the client."""
    unrecorded: int = 0
    """Slates served while Redis was unreachable (decision_recorded false: no feedback)."""
    retry_after_missing: int = 0
    """503 answers without a Retry-After header (must stay 0)."""
    lock: threading.Lock = field(default_factory=threading.Lock)

    def note(self, route: str, status: int | str) -> None:
        with self.lock:
            self.sent += 1
            self.statuses[f"{route} {status}"] += 1

    def summary(self) -> dict[str, Any]:
        return {"requests_sent": self.sent, "events_accepted": len(self.accepted),
                "duplicates_answered": self.duplicates,
                "slates_unrecorded": self.unrecorded,
                "client_errors": len(self.errors), "statuses": dict(self.statuses)}


def _reward(user: int, item: int) -> float:
    return float((user * 7 + item) % 5)  # a deterministic rating 0..4


def recommend(http: httpx.Client, url: str, traffic: Traffic, user: int) -> dict[str, Any]:
    """One /v1/recommend call (must answer 200)."""
    rec = http.post(f"{url}/v1/recommend", json={"user_id": user, "history": [user % N_ITEMS],
                                                 "k": 2})
    traffic.note("recommend", rec.status_code)
    assert rec.status_code == 200, rec.text
    body: dict[str, Any] = rec.json()
    return body


def one_event(http: httpx.Client, url: str, traffic: Traffic, user: int,
              feedback_deadline: float = 60.0) -> None:
    """Recommend, then send feedback; a 503 is retried after its Retry-After."""
    body = recommend(http, url, traffic, user)
    if body["decision_recorded"]:
        feedback(http, url, traffic, user, body, feedback_deadline)
    else:  # Redis was down: nothing to give feedback on
        with traffic.lock:
            traffic.unrecorded += 1


def feedback(http: httpx.Client, url: str, traffic: Traffic, user: int,
             body: dict[str, Any], feedback_deadline: float = 60.0) -> None:
    """Feedback for a recorded decision until it is answered with something else than 503
    (retried after Retry-After, as a well-behaved client does)."""
    item = body["items"][0]
    deadline = time.monotonic() + feedback_deadline
    while True:
        fb = http.post(f"{url}/v1/feedback", json={
            "event_id": body["event_id"], "item_id": item, "reward": _reward(user, item)},
            headers=AUTH)
        traffic.note("feedback", fb.status_code)
        if fb.status_code == 503:
            if "retry-after" not in fb.headers:
                traffic.retry_after_missing += 1
            assert time.monotonic() < deadline, "feedback kept failing"
            time.sleep(min(float(fb.headers.get("retry-after", "1")), 0.5))
            continue
        break
    if fb.status_code == 202:
        with traffic.lock:
            traffic.accepted.append(body["event_id"])
    elif fb.status_code == 200:
        traffic.duplicates += 1
    else:
        raise AssertionError(f"feedback answered {fb.status_code}: {fb.text}")


def learned_counts(r: redis.Redis, keys: RedisKeys, accepted: list[str]) -> dict[str, int]:
    """Trainer-side evidence from Redis: learned counter, markers, buffer, pending."""
    stats = {k.decode(): int(v) for k, v in r.hgetall(keys.trainer_stats).items()}
    pipe = r.pipeline(transaction=False)
    for e in accepted:
        pipe.exists(keys.learned(e))
    markers = sum(int(x) for x in pipe.execute())
    pending = 0
    if r.exists(keys.stream):
        pending = int(r.xpending(keys.stream, "trainer")["pending"])
    return {"events_learned": stats.get("events_learned", 0),
            "learned_markers": markers,
            "redeliveries_deduplicated": stats.get("duplicates", 0),
            "buffer": int(r.zcard(keys.trainer_buffer)), "pending": pending,
            "stream_length": int(r.xlen(keys.stream)) if r.exists(keys.stream) else 0,
            "dead_lettered": stats.get("dead_lettered", 0)}


def wait_learned(ps: Procs, r: redis.Redis, n: int, timeout: float = 120.0) -> float:
    """Until the trainer has learned (and published) exactly ``n`` events."""
    def done() -> bool:
        c = learned_counts(r, ps.keys, [])
        return c["events_learned"] >= n and c["buffer"] == 0 and c["pending"] == 0
    return ps.wait(done, f"{n} events learned", timeout)


# -- scenarios ---------------------------------------------------------------------------
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
