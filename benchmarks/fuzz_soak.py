"""Fuzz soak: ``--examples`` hypothesis cases per OpenAPI operation against the real
``ialp serve`` process, bodies as JSON and as raw bytes (UTF-8 or not) under any content
type, then check the process is still healthy.

    nice -n 5 .venv/bin/python benchmarks/fuzz_soak.py --examples 10000

Pass: no answer >= 500 (and every 4xx a JSON body with a ``detail``), and afterwards the
process is alive, ``/healthz`` and ``/readyz`` answer 200 and a recommend + feedback
round trip is accepted. The rate limit is off (every case must reach the routes, not a
429). Writes benchmarks/results/fuzz_soak.json.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ialp.procs import spawn_ialp, stop_all, wait_ready  # noqa: E402
from simulator_client.chaos.fuzz import fuzz  # noqa: E402
from trainer.transport.redis_server import EmbeddedRedis, free_port  # noqa: E402


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return -1


def _health(url: str, key: str) -> dict[str, Any]:
    with httpx.Client(base_url=url, timeout=10) as http:
        rec = http.post("/v1/recommend", json={"user_id": 1, "history": [1, 2], "k": 2})
        fb = http.post("/v1/feedback", headers={"X-API-Key": key}, json={
            "event_id": rec.json()["event_id"], "item_id": rec.json()["items"][0],
            "reward": 1.0})
        return {"healthz": http.get("/healthz").status_code,
                "readyz": http.get("/readyz").status_code,
                "recommend": rec.status_code, "feedback": fb.status_code}


def main() -> None:
    """Run the soak and write the report."""
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--examples", type=int, default=10_000,
                    help="hypothesis cases per OpenAPI operation")
    ap.add_argument("--out", type=Path,
                    default=ROOT / "benchmarks" / "results" / "fuzz_soak.json")
    args = ap.parse_args()
    key = uuid.uuid4().hex
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        server = EmbeddedRedis(tmp / "redis", port=free_port(), persistence=False).start()
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        log = tmp / "api.log"
        proc = spawn_ialp(["serve", "--port", str(port), "--redis-url", server.url,
                           "--namespace", "soak", "--num-items", "60", "--max-history",
                           "30", "--max-k", "5", "--rate-limit-per-s", "0",
                           "--rate-limit-key-per-s", "0", "--log-level", "warning"],
                          log, cwd=ROOT, env={"IALP_API_KEY": key})
        try:
            try:
                wait_ready([url], [proc], timeout_s=120, what="serve")
            except RuntimeError as exc:
                raise RuntimeError(f"{exc}:\n{log.read_text()[-2000:]}") from None
            spec = httpx.get(f"{url}/openapi.json").json()
            events, items = [], []
            for u in range(20):
                rec = httpx.post(f"{url}/v1/recommend", json={
                    "user_id": u, "history": [u + 1], "k": 2}).json()
                events.append(rec["event_id"])
                items.extend(rec["items"])
            rss_before = _rss_kib(proc.pid)
            start = time.perf_counter()
            report = fuzz(url, spec, examples_per_operation=args.examples,
                          pools={"event_id": events, "item_id": items}, api_key=key)
            seconds = time.perf_counter() - start
            summary = report.summary()
            health = _health(url, key)
            summary.update(seconds=round(seconds, 1), examples_per_operation=args.examples,
                           health_after=health, process_alive_after=proc.poll() is None,
                           rss_kib_before=rss_before, rss_kib_after=_rss_kib(proc.pid))
            text = log.read_text(errors="replace")
            summary["tracebacks_in_log"] = text.count("Traceback")
        finally:
            stop_all([proc])
            server.stop()
    out = {"command": " ".join(["benchmarks/fuzz_soak.py", *sys.argv[1:]]),
           "machine": {"python": platform.python_version(), "cpus": _cpus()},
           "result": summary}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print("| endpoint | cases | raw-byte cases (not UTF-8) | answers >= 500 |")
    print("|---|---|---|---|")
    for op, n in sorted(summary["cases_by_endpoint"].items()):
        five = sum(v for k, v in summary["statuses"].items()
                   if k.startswith(op + " ") and k.rsplit(" ", 1)[-1].startswith("5"))
        print(f"| `{op}` | {n:,} | {summary['raw_cases'].get(op, 0):,} "
              f"({summary['raw_not_utf8'].get(op, 0):,}) | {five} |")
    print(f"failures {summary['failures']}, 5xx {summary['answers_5xx']}, "
          f"{summary['seconds']} s; after: {health}, alive {summary['process_alive_after']}, "
          f"RSS {summary['rss_kib_before']} → {summary['rss_kib_after']} KiB")
    print(f"wrote {args.out}")


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    main()
