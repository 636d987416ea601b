"""`ialp loadtest` and the load engine's chained feedback against a real service (API +
trainer processes)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ialp.cli import main
from simulator_client.loadgen import LoadShape, Target, run_phase
from simulator_client.loadgen.workloads import recommend_bodies, recommend_workload
from simulator_client.loadtest import LoadConfig, run_loadtest, write_report
from tests.service_stack import Stack, service_stack, wait_for
from trainer.transport.redis_server import EmbeddedRedis, free_port


@pytest.fixture(scope="module")
def stack(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory
          ) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("loadtest")
    with service_stack(
        redis_server.url, tmp, num_items=300, port=free_port(),
        trainer_args=["--update-every", "32", "--alpha-steps", "10"],
        serve_args=["--enable-noop"],
    ) as s:
        yield s


def _feedback_accepted(api: str) -> float:
    text = httpx.get(f"{api}/metrics", timeout=5).text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("ialp_feedback_total") and 'outcome="accepted"' in line)


def test_chained_feedback_is_accepted_for_its_share_of_answers(stack: Stack) -> None:
    target = Target.from_url(stack.api, stack.api_key)
    work = recommend_workload(target, recommend_bodies([[1, 2], [3], [4, 5, 6]]),
                              feedback_ratio=0.5)
    before = _feedback_accepted(stack.api)
    res = run_phase(target, work, LoadShape(duration_s=1.0, connections=3))
    rec, fb = res.endpoint("recommend"), res.endpoint("feedback")
    assert rec.statuses == {200: rec.answers} and rec.answers > 2
    # Every second answer is followed by feedback, and the service accepted each one.
    assert fb.statuses == {202: rec.answers // 2}
    assert _feedback_accepted(stack.api) - before == rec.answers // 2


def test_chained_feedback_without_the_key_is_refused(stack: Stack) -> None:
    target = Target.from_url(stack.api)  # no API key
    work = recommend_workload(target, recommend_bodies([[1, 2]]), feedback_ratio=1.0)
    res = run_phase(target, work, LoadShape(duration_s=0.3, connections=1))
    fb = res.endpoint("feedback")
    assert fb.answers == res.endpoint("recommend").ok > 0
    assert set(fb.statuses) <= {401, 403} and fb.ok == 0


def _learned(api: str) -> int:
    return int(httpx.get(f"{api}/v1/policy", timeout=5).json()["events_learned"])


def test_loadtest_closed_loop_measures_noop_and_mix(stack: Stack, tmp_path: Path) -> None:
    # Feedback of earlier tests must be learned first: this one counts what it adds.
    wait_for(lambda: _learned(stack.api) >= _feedback_accepted(stack.api),
             "earlier feedback learned", stack)
    histories = [[1, 2, 3], [10], [5, 6, 7, 8, 9]]
    config = LoadConfig(duration_s=1.5, concurrency=4, feedback_ratio=1.0, learn_wait_s=30)
    report = asyncio.run(run_loadtest(stack.api, config, histories=histories,
                                      api_key=stack.api_key))
    noop, mix = report["phases"]["noop"], report["phases"]["recommend+feedback"]
    assert noop["requests"] > 0 and mix["requests"] > 0
    assert noop["errors_by_status"] == {} and mix["errors_by_status"] == {}
    assert mix["p50_ms"] <= mix["p99_ms"] <= mix["max_ms"]
    assert report["feedback"]["accepted"] == report["feedback"]["sent"] == mix["ok"] > 0
    trainer = report["trainer"]
    assert trainer["events_learned_after"] - trainer["events_learned_before"] == mix["ok"]
    assert trainer["seconds_until_learned"] is not None
    write_report(report, tmp_path)
    assert json.loads((tmp_path / "loadtest.json").read_text())["phases"]["noop"]["requests"]
    assert (tmp_path / "loadtest.png").stat().st_size > 1000


def test_loadtest_cli_open_loop(stack: Stack, tmp_path: Path,
                                capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["loadtest", "--base-url", stack.api, "--rate", "40", "--duration", "1",
                 "--synthetic-items", "300", "--feedback-ratio", "0", "--learn-wait", "0",
                 "--processes", "2", "--out", str(tmp_path), "--json"])
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    mix = report["phases"]["recommend+feedback"]
    # Open loop at 40/s for 1 s schedules 40 arrivals, whatever the latency.
    assert mix["requests"] + mix["dropped"] == 40
    assert report["config"]["rate"] == 40
    assert mix["processes"] == report["engine"]["processes"] == 2
    assert report["feedback"]["sent"] == 0
