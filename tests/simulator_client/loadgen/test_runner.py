"""Several load processes, merged."""

from __future__ import annotations

from collections.abc import Callable

from simulator_client.loadgen import LoadShape, Target, run_phase
from simulator_client.loadgen.wire import json_body
from simulator_client.loadgen.workloads import post_workload


def test_processes_are_merged_and_match_the_server_count(
        echo_url: str, served: Callable[[], int]) -> None:
    target = Target.from_url(echo_url)
    work = post_workload(target, "echo", "/ok", [json_body({"i": i}) for i in range(5)])
    before = served()
    res = run_phase(target, work, LoadShape(duration_s=0.5, connections=2, processes=2))
    ep = res.endpoint("echo")
    assert res.processes == 2 and res.connections_opened == 4
    assert served() - before == ep.answers == ep.statuses[200] == ep.latency.total > 0


def test_open_loop_rate_is_shared_between_processes(echo_url: str) -> None:
    target = Target.from_url(echo_url)
    work = post_workload(target, "echo", "/ok", [b"{}"])
    res = run_phase(target, work, LoadShape(duration_s=1.0, connections=2, rate=40,
                                            processes=2))
    # 40 arrivals per second over two processes for one second: 40 in all.
    assert res.endpoint("echo").answers + res.dropped == 40
