"""Fault-injection scenarios against the real processes (``python -m ialp serve|trainer``).

Each scenario starts its own API replicas and trainer on a fresh Redis namespace, drives
traffic over HTTP, injects one fault and returns the counts reported in
``docs/reliability.md``: traffic sent, events accepted, events learned, duplicates,
errors seen by clients and time to recover. The tests run them small; the soak
benchmark (``benchmarks/reliability_faults.py``) runs them long.
"""

from __future__ import annotations

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
    stats = {(k.decode() if isinstance(k, bytes) else k): int(v)
                 for k, v in r.hgetall(keys.trainer_stats).items()}
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
