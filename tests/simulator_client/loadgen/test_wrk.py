"""The wrk driver: its script and the parsing of its report (and a run when installed)."""

from __future__ import annotations

import pytest

from simulator_client.loadgen.wrk import lua_script, parse_wrk_output, run_wrk, wrk_path

OUTPUT = """Running 2s test @ http://127.0.0.1:8000/v1/noop
  1 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     3.71ms    1.02ms  20.10ms   90.00%
    Req/Sec     4.30k   200.00     4.60k    70.00%
  Latency Distribution
     50%  650.00us
     75%    3.90ms
     90%    4.50ms
     99%    1.20s
  8600 requests in 2.00s, 1.50MB read
  Socket errors: connect 0, read 1, write 0, timeout 2
  Non-2xx or 3xx responses: 7
Requests/sec:   4299.50
Transfer/sec:    750.00KB
"""


def test_parse_wrk_output() -> None:
    run = parse_wrk_output(OUTPUT)
    assert (run.requests, run.seconds, run.throughput_rps, run.non_2xx) == (8600, 2.0,
                                                                           4299.5, 7)
    assert run.percentiles_ms == {"p50_ms": 0.65, "p75_ms": 3.9, "p90_ms": 4.5,
                                  "p99_ms": 1200.0}
    assert run.socket_errors == {"connect": 0, "read": 1, "write": 0, "timeout": 2}
    with pytest.raises(ValueError):
        parse_wrk_output("wrk: connection refused")


def test_lua_script_static_body_or_rotation() -> None:
    one = lua_script([b'{"a":"b"}'], headers={"X-API-Key": "k"})
    assert 'wrk.body = "{\\"a\\":\\"b\\"}"' in one and "request = function" not in one
    assert 'wrk.headers["X-API-Key"] = "k"' in one
    many = lua_script([b"{}", b"[]"])
    assert "request = function" in many and 'local bodies = {"{}", "[]"}' in many


@pytest.mark.skipif(wrk_path() is None, reason="wrk is not installed")
def test_wrk_runs_against_a_server(echo_url: str) -> None:
    run = run_wrk(f"{echo_url}/status/404", [b"{}"], connections=2, duration_s=1)
    assert run.requests > 0 and run.non_2xx == run.requests
