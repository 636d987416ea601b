"""Load-test harness (``ialp loadtest``): what one deployment can take.

Two phases in one run, each for the same duration and load: the service's no-op
endpoint (``POST /v1/noop``, same body and validation, no policy; falls back to
``GET /healthz`` when the service does not expose it), then the real mix: recommend with
histories drawn from a dataset's users, followed by feedback for a share of the returned
events. Latency percentiles of the mix are those of ``/v1/recommend``; feedback calls are
sent concurrently as their own requests and reported separately. Results are read as
ratios to the no-op phase, which makes them comparable on a
noisy machine.

Open loop (``rate``): requests start on a fixed schedule whatever the service does, and
latency is measured from the scheduled start, so a stalled server cannot hide its queue
(no coordinated omission). Closed loop (``concurrency``): that many clients each send the
next request when the previous one returns.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from simulator_client.http_client import ServiceClient
from simulator_client.item_ids import negotiate


@dataclass(frozen=True)
class LoadConfig:
    """Load shape of a run."""

    duration_s: float = 10.0
    """Length of each phase."""
    rate: float | None = None
    """Open loop: requests per second (exclusive with ``concurrency``)."""
    concurrency: int | None = 16
    """Closed loop: clients in flight."""
    feedback_ratio: float = 0.5
    """Share of recommendations followed by a feedback call."""
    k: int = 1
    """Slate size requested."""
    seed: int = 0
    """Seed of history and reward sampling."""
    learn_wait_s: float = 30.0
    """After the load, how long to wait for the trainer to learn the sent feedback."""
    max_in_flight: int = 2000
    """Open loop safety valve: arrivals beyond this many in flight are counted as dropped."""


@dataclass
class PhaseResult:
    """Latencies and statuses of one phase."""

    name: str
    latencies_ms: list[float] = field(default_factory=list)
    started_at: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    wall_s: float = 0.0
    dropped: int = 0

    def summary(self) -> dict[str, Any]:
        lat = np.asarray(self.latencies_ms) if self.latencies_ms else np.zeros(1)
        ok = sum(v for k, v in self.statuses.items() if k.startswith("2"))
        return {
            "requests": int(sum(self.statuses.values())),
            "ok": int(ok),
            "errors_by_status": {k: v for k, v in self.statuses.items() if not k.startswith("2")},
            "dropped": self.dropped,
            "throughput_rps": ok / self.wall_s if self.wall_s else 0.0,
            "p50_ms": float(np.percentile(lat, 50)),
            "p90_ms": float(np.percentile(lat, 90)),
            "p99_ms": float(np.percentile(lat, 99)),
            "max_ms": float(lat.max()),
        }


RequestFn = Callable[[int], Awaitable[str]]


async def _drive(name: str, fn: RequestFn, config: LoadConfig) -> PhaseResult:
    res = PhaseResult(name=name)
    t0 = time.perf_counter()
    deadline = t0 + config.duration_s

    async def one(i: int, scheduled: float) -> None:
        try:
            status = await fn(i)
        except httpx.HTTPError as exc:
            status = type(exc).__name__
        res.statuses[status] += 1
        res.started_at.append(scheduled - t0)
        res.latencies_ms.append((time.perf_counter() - scheduled) * 1000.0)

    if config.rate:
        interval = 1.0 / config.rate
        tasks: set[asyncio.Task[None]] = set()
        i = 0
        while True:
            scheduled = t0 + i * interval
            if scheduled >= deadline:
                break
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(tasks) >= config.max_in_flight:
                res.dropped += 1
            else:
                task = asyncio.create_task(one(i, scheduled))
                tasks.add(task)
                task.add_done_callback(tasks.discard)
            i += 1
        if tasks:
            await asyncio.gather(*tasks)
    else:
        counter = iter(range(10**12))

        async def worker() -> None:
            while time.perf_counter() < deadline:
                await one(next(counter), time.perf_counter())

        await asyncio.gather(*[worker() for _ in range(config.concurrency or 1)])
    res.wall_s = time.perf_counter() - t0
    return res


async def run_loadtest(
    base_url: str,
    config: LoadConfig,
    *,
    histories: list[list[int]],
    item_ids: Sequence[str] | None = None,
    api_key: str | None = None,
) -> dict[str, Any]:
    """Run the no-op phase and the recommend/feedback phase; return the report.

    ``histories`` hold item indices of an environment whose item i has the external id
    ``item_ids[i]`` (default: the decimal index); they are sent as the service's ids, and
    users as strings, as a real caller would."""
    if not histories or any(not h for h in histories):
        raise ValueError("loadtest needs non-empty histories to send")
    rng = np.random.default_rng(config.seed)
    conns = max(config.concurrency or 0, 64)
    async with ServiceClient(base_url, api_key=api_key, max_connections=conns) as client:
        before = await client.policy()
        if item_ids is None:
            size = int((await client.catalogue(limit=1))["size"])
            item_ids = [str(i) for i in range(size)]
        ids = await negotiate(client, item_ids)
        wire = [ids.send(h) for h in histories]
        probe = await client.raw("POST", "/v1/noop", {"user_id": "load-0", "history": wire[0]})
        use_noop = probe.status_code == 200

        async def noop(i: int) -> str:
            h = wire[i % len(wire)]
            if use_noop:
                resp = await client.raw("POST", "/v1/noop", {"user_id": f"load-{i}", "history": h})
            else:
                resp = await client.raw("GET", "/healthz")
            return str(resp.status_code)

        accepted = 0
        feedback_statuses: Counter[str] = Counter()
        feedback_ms: list[float] = []
        feedback_tasks: set[asyncio.Task[None]] = set()

        async def send_feedback(body: dict[str, Any]) -> None:
            nonlocal accepted
            started = time.perf_counter()
            try:
                fb = await client.raw(
                    "POST",
                    "/v1/feedback",
                    {"event_id": body["event_id"], "item_id": body["items"][0],
                     "reward": float(rng.integers(1, 6)), "done": False},
                )
                status = str(fb.status_code)
            except httpx.HTTPError as exc:
                status = type(exc).__name__
            feedback_ms.append((time.perf_counter() - started) * 1000.0)
            feedback_statuses[status] += 1
            if status == "202":
                accepted += 1

        async def mix(i: int) -> str:
            h = wire[i % len(wire)]
            resp = await client.raw(
                "POST", "/v1/recommend", {"user_id": f"load-{i}", "history": h, "k": config.k}
            )
            if resp.status_code == 200 and rng.random() < config.feedback_ratio:
                # Feedback is its own request: it adds load but not recommend latency.
                task = asyncio.create_task(send_feedback(resp.json()))
                feedback_tasks.add(task)
                task.add_done_callback(feedback_tasks.discard)
            return str(resp.status_code)

        noop_res = await _drive("noop" if use_noop else "healthz", noop, config)
        mix_res = await _drive("recommend+feedback", mix, config)
        if feedback_tasks:
            await asyncio.gather(*feedback_tasks)

        # Trainer lag: how long until the feedback sent is learned and a new version served.
        t_end = time.perf_counter()
        learned_s = version_s = None
        target = int(before.get("events_learned", 0)) + accepted
        info = before
        while time.perf_counter() - t_end < config.learn_wait_s:
            info = await client.policy()
            if version_s is None and int(info["version"]) > int(before["version"]):
                version_s = time.perf_counter() - t_end
            if learned_s is None and int(info.get("events_learned", 0)) >= target:
                learned_s = time.perf_counter() - t_end
            if learned_s is not None and version_s is not None:
                break
            await asyncio.sleep(0.1)

    noop_sum, mix_sum = noop_res.summary(), mix_res.summary()
    return {
        "config": asdict(config),
        "base_url": base_url,
        "phases": {noop_res.name: noop_sum, mix_res.name: mix_sum},
        "ratios_to_noop": {
            "throughput": mix_sum["throughput_rps"] / max(noop_sum["throughput_rps"], 1e-9),
            "p50": mix_sum["p50_ms"] / max(noop_sum["p50_ms"], 1e-9),
            "p99": mix_sum["p99_ms"] / max(noop_sum["p99_ms"], 1e-9),
        },
        "feedback": {
            "sent": int(sum(feedback_statuses.values())), "accepted": accepted,
            "by_status": dict(feedback_statuses),
            "p50_ms": float(np.percentile(feedback_ms, 50)) if feedback_ms else None,
            "p99_ms": float(np.percentile(feedback_ms, 99)) if feedback_ms else None,
        },
        "trainer": {
            "version_before": int(before["version"]),
            "version_after": int(info["version"]),
            "events_learned_before": int(before.get("events_learned", 0)),
            "events_learned_after": int(info.get("events_learned", 0)),
            "seconds_until_learned": learned_s,
            "seconds_until_new_version": version_s,
        },
        "_series": {
            name: {"t": r.started_at, "ms": r.latencies_ms} for name, r in
            ((noop_res.name, noop_res), (mix_res.name, mix_res))
        },
    }


def write_report(report: dict[str, Any], out_dir: Path) -> None:
    """``loadtest.json`` (without raw series) and ``loadtest.png`` (latency over time)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    series = report["_series"]
    clean = {k: v for k, v in report.items() if not k.startswith("_")}
    (out_dir / "loadtest.json").write_text(json.dumps(clean, indent=2))
    fig, ax = plt.subplots(figsize=(9, 3.8))
    for name, s in series.items():
        if not s["t"]:
            continue
        t = np.asarray(s["t"])
        ms = np.asarray(s["ms"])
        ax.scatter(t, ms, s=3, alpha=0.3, label=f"{name} (each request)")
        secs = np.floor(t).astype(int)
        p99 = [np.percentile(ms[secs == b], 99) for b in np.unique(secs)]
        ax.plot(np.unique(secs) + 0.5, p99, label=f"{name} p99 per second")
    ax.set_yscale("log")
    ax.set_xlabel("seconds into phase")
    ax.set_ylabel("latency (ms)")
    ax.axhline(50, color="gray", linestyle=":", label="50 ms")
    ax.legend(fontsize=8)
    ax.set_title("latency over time")
    fig.tight_layout()
    fig.savefig(out_dir / "loadtest.png", dpi=110)
    plt.close(fig)
