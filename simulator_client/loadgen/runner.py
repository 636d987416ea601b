"""A load phase over one or several processes, merged into one :class:`PhaseResult`.

One process is often enough: its event loop sends and reads requests with little CPU per
request. Several processes multiply what the generator can offer when a single core is
not enough (a bigger machine, a remote service). Workers are started with ``spawn`` (no
copied event loop or threads), open their connections, wait for each other on a barrier
and start together; their histograms and counters add up exactly.
"""

from __future__ import annotations

import multiprocessing as mp
import pickle
from multiprocessing.synchronize import Barrier

from simulator_client.loadgen.config import LoadShape, Target, Workload
from simulator_client.loadgen.engine import run_share
from simulator_client.loadgen.results import PhaseResult

_START_TIMEOUT_S = 120.0
"""How long workers may take to start and connect before the phase is abandoned."""


def run_phase(target: Target, workload: Workload, shape: LoadShape) -> PhaseResult:
    """Run the phase and return its merged result (blocking).

    With one process it runs in the calling thread on a fresh event loop; call it through
    ``asyncio.to_thread`` from async code."""
    if shape.processes == 1:
        return run_share(target, workload, shape)
    ctx = mp.get_context("spawn")
    barrier = ctx.Barrier(shape.processes)
    queue = ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(target, workload, shape, i, barrier, queue),
                         daemon=True, name=f"loadgen-{i}") for i in range(shape.processes)]
    for p in procs:
        p.start()
    merged: PhaseResult | None = None
    try:
        for _ in procs:
            got = pickle.loads(queue.get(timeout=_START_TIMEOUT_S + shape.duration_s
                                         + shape.drain_s + 30))
            if isinstance(got, BaseException):
                raise RuntimeError("a load worker failed") from got
            if merged is None:
                merged = got
            else:
                merged.merge(got)
    finally:
        for p in procs:
            p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join()
    assert merged is not None
    return merged


def _worker(target: Target, workload: Workload, shape: LoadShape, index: int,
            barrier: Barrier, queue: mp.Queue) -> None:
    try:
        result: PhaseResult | BaseException = run_share(
            target, workload, shape, index=index,
            on_ready=lambda: barrier.wait(_START_TIMEOUT_S))
    except BaseException as exc:  # reported to the parent, which raises
        result = exc
    queue.put(pickle.dumps(result))
