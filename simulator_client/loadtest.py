"""Load-test harness (``ialp loadtest``): what one deployment can take.

Two phases in one run, each for the same duration and load: the service's no-op
endpoint (``POST /v1/noop``, same body and validation, no policy; falls back to
``GET /healthz`` when the service does not expose it), then the real mix: recommend with
histories drawn from a dataset's users, a share of the answers followed by feedback for
their first item, sent on the same connection as its next request (as a client that
reports what the user did before asking again). Latency percentiles of the mix are those
of ``/v1/recommend``; feedback is reported separately. Results are read as ratios to the
no-op phase, which makes them comparable on a noisy machine. After the load the harness
measures trainer lag: how long until the accepted feedback is learned, and until a new
policy version is served.

Traffic comes from :mod:`simulator_client.loadgen` (pre-encoded keep-alive requests on
raw asyncio protocols, one or several processes), whose own ceiling on the no-op endpoint
``benchmarks/harness_ceiling.py`` compares with ``wrk``'s. Open loop (``rate``):
requests start on a fixed schedule whatever the service does, and latency is measured
from the scheduled start, so a stalled server cannot hide its queue (no coordinated
omission). Closed loop (``concurrency``): that many connections each send the next
request when the previous answer arrives.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simulator_client.http_client import ServiceClient
from simulator_client.item_ids import negotiate
from simulator_client.loadgen import LoadShape, PhaseResult, Target, run_phase
from simulator_client.loadgen.workloads import (
    healthz_workload,
    noop_workload,
    recommend_bodies,
    recommend_workload,
)

MIX = "recommend+feedback"
"""Name of the mix phase in the report."""


@dataclass(frozen=True)
class LoadConfig:
    """Load shape of a run."""

    duration_s: float = 10.0
    """Length of each phase."""
    rate: float | None = None
    """Open loop: requests per second (exclusive with ``concurrency``)."""
    concurrency: int | None = 16
    """Closed loop: connections in flight over all processes."""
    feedback_ratio: float = 0.5
    """Share of recommendations followed by a feedback call."""
    k: int = 1
    """Slate size requested."""
    seed: int = 0
    """Seed of the order in which histories are sent."""
    learn_wait_s: float = 30.0
    """After the load, how long to wait for the trainer to learn the sent feedback."""
    max_in_flight: int = 2000
    """Open loop: at most this many connections over all processes (one request in flight
    each); arrivals beyond them are counted as dropped."""
    processes: int = 1
    """Load-generating processes (their results are merged)."""
    connections: int = 16
    """Open loop: connections each process opens before the start (more are opened, up
    to ``max_in_flight``, when every one is busy)."""
    reward: float = 1.0
    """Reward sent in feedback."""
    drain_s: float = 10.0
    """After each phase, how long to wait for answers still in flight."""

    def shape(self) -> LoadShape:
        """The engine's per-process shape of this load."""
        procs = max(1, self.processes)
        if self.rate:
            cap = max(self.connections, math.ceil(self.max_in_flight / procs))
            return LoadShape(duration_s=self.duration_s, connections=self.connections,
                             rate=self.rate, max_connections=cap, processes=procs,
                             drain_s=self.drain_s)
        per_proc = max(1, math.ceil((self.concurrency or 1) / procs))
        return LoadShape(duration_s=self.duration_s, connections=per_proc,
                         max_connections=per_proc, processes=procs, drain_s=self.drain_s)


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
    target = Target.from_url(base_url, api_key)
    shape = config.shape()
    async with ServiceClient(base_url, api_key=api_key, max_connections=4) as client:
        before = await client.policy()
        if item_ids is None:
            size = int((await client.catalogue(limit=1))["size"])
            item_ids = [str(i) for i in range(size)]
        ids = await negotiate(client, item_ids)
        order = np.random.default_rng(config.seed).permutation(len(histories))
        bodies = recommend_bodies([ids.send(histories[i]) for i in order], k=config.k)
        probe = await client.raw("POST", "/v1/noop", json.loads(bodies[0]))
        floor = noop_workload(target, bodies) if probe.status_code == 200 else (
            healthz_workload(target))
        mix = recommend_workload(target, bodies, feedback_ratio=config.feedback_ratio,
                                 reward=config.reward)
        # The engine runs its own event loop (in this thread's worker or in processes).
        noop_res = await asyncio.to_thread(run_phase, target, floor, shape)
        mix_res = await asyncio.to_thread(run_phase, target, mix, shape)
        accepted = mix_res.endpoint("feedback").statuses.get(202, 0)

        # Trainer lag: how long until the feedback sent is learned and a new version served.
        t_end = time.perf_counter()
        learned_s = version_s = None
        target_learned = int(before.get("events_learned", 0)) + accepted
        info = before
        while time.perf_counter() - t_end < config.learn_wait_s:
            info = await client.policy()
            if version_s is None and int(info["version"]) > int(before["version"]):
                version_s = time.perf_counter() - t_end
            if learned_s is None and int(info.get("events_learned", 0)) >= target_learned:
                learned_s = time.perf_counter() - t_end
            if learned_s is not None and version_s is not None:
                break
            await asyncio.sleep(0.1)

    noop_sum = noop_res.summary(floor.endpoint)
    mix_sum = mix_res.summary("recommend")
    fb = mix_res.endpoint("feedback")
    fb_sum = fb.summary(mix_res.wall_s)
    return {
        "config": asdict(config),
        "base_url": base_url,
        "engine": _engine_info(shape),
        "phases": {floor.endpoint: noop_sum, MIX: mix_sum},
        "ratios_to_noop": {
            "throughput": mix_sum["throughput_rps"] / max(noop_sum["throughput_rps"], 1e-9),
            "p50": mix_sum["p50_ms"] / max(noop_sum["p50_ms"], 1e-9),
            "p99": mix_sum["p99_ms"] / max(noop_sum["p99_ms"], 1e-9),
        },
        "feedback": {
            "sent": fb_sum["requests"], "accepted": accepted,
            "by_status": fb_sum["by_status"],
            "connection_errors": fb_sum["connection_errors"],
            "p50_ms": fb_sum["p50_ms"] if fb.answers else None,
            "p99_ms": fb_sum["p99_ms"] if fb.answers else None,
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
            name: _series(res, endpoint)
            for name, res, endpoint in ((floor.endpoint, noop_res, floor.endpoint),
                                        (MIX, mix_res, "recommend"))
        },
    }


def _series(res: PhaseResult, endpoint: str) -> dict[str, list[float]]:
    ep = res.endpoint(endpoint)
    return {"t": ep.series_t.tolist(), "ms": ep.series_ms.tolist()}


def _engine_info(shape: LoadShape) -> dict[str, Any]:
    try:
        import uvloop  # noqa: F401

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    return {"name": "simulator_client.loadgen", "event_loop": loop,
            "processes": shape.processes, "connections_per_process": shape.connections,
            "max_connections_per_process": shape.max_connections,
            "open_loop": shape.rate is not None}


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
        ax.scatter(t, ms, s=3, alpha=0.3, label=f"{name} (answers, sampled)")
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
