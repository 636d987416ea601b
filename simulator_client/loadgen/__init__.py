"""Load generator of ``ialp loadtest``: pre-encoded HTTP/1.1 requests over raw asyncio
protocols, closed or open loop, one or several processes, per-endpoint statuses and
log-bucket latency histograms. :mod:`simulator_client.loadgen.wrk` drives ``wrk`` instead
when it is installed, as a reference for the generator's own ceiling."""

from simulator_client.loadgen.config import LoadShape, Target, Workload
from simulator_client.loadgen.results import EndpointResult, PhaseResult
from simulator_client.loadgen.runner import run_phase

__all__ = ["EndpointResult", "LoadShape", "PhaseResult", "Target", "Workload", "run_phase"]
