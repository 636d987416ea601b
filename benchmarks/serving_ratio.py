"""Serving speed against the framework: ``/v1/recommend`` as a ratio of ``/v1/noop``.

For each catalogue size the script starts a private ``redis-server`` (append-only
persistence, as deployed) and one ``ialp serve --enable-noop`` process (untrained policy
of that size, default network), then drives both endpoints of *the same process* with
``wrk`` (closed loop, ``-t1 -c16``, a 20-item history, k = 1), alternating no-op and
recommend for a few rounds so that drift of the machine hits both alike. The ratio is
the median recommend throughput over the median no-op throughput.

    .venv/bin/python benchmarks/serving_ratio.py --out benchmarks/results/serving_ratio.json

``wrk`` comes from the Debian package of that name; run as root the script installs it,
otherwise it says why it stops. ``wrk`` shares the machine's cores with the server, as
every load generator on a one-box benchmark does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from trainer.transport.redis_server import EmbeddedRedis, free_port, ping  # noqa: E402

_LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local bodies = {%(bodies)s}
local n = 0
request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, bodies[(n %% #bodies) + 1])
end
done = function(summary, latency, requests)
  io.write(string.format(
    'WRKJSON {"requests": %%d, "seconds": %%.6f, "non2xx": %%d, "socket_errors": %%d, '
    .. '"p50_ms": %%.3f, "p90_ms": %%.3f, "p99_ms": %%.3f, "p999_ms": %%.3f, '
    .. '"max_ms": %%.3f}\\n',
    summary.requests, summary.duration / 1e6, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write
      + summary.errors.timeout,
    latency:percentile(50) / 1000, latency:percentile(90) / 1000,
    latency:percentile(99) / 1000, latency:percentile(99.9) / 1000,
    latency.max / 1000))
end
"""


def ensure_wrk() -> str | None:
    """Path of ``wrk``, installing the Debian package when running as root; ``None``
    (with the reason printed) when it cannot be had."""
    found = shutil.which("wrk")
    if found:
        return found
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        print("wrk is not installed and cannot be installed here (needs root and apt-get): "
              "install the Debian/Ubuntu package 'wrk' and run again", file=sys.stderr)
        return None
    print("installing wrk (apt-get install -y wrk) ...", file=sys.stderr)
    proc = subprocess.run(["apt-get", "install", "-y", "wrk"], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        print(f"apt-get install wrk failed: {proc.stderr.strip()[-400:]}", file=sys.stderr)
        return None
    return shutil.which("wrk")


def lua_script(num_items: int, history_len: int, folder: Path, seed: int = 0) -> Path:
    """A wrk script cycling through 64 request bodies (random histories)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    bodies = []
    for u in range(64):
        hist = rng.choice(num_items, size=min(history_len, num_items), replace=False)
        bodies.append(json.dumps({"user_id": u, "history": [int(x) for x in hist], "k": 1}))
    text = _LUA % {"bodies": ", ".join("'" + b + "'" for b in bodies)}
    path = folder / f"bodies-{num_items}.lua"
    path.write_text(text)
    return path


def run_wrk(wrk: str, script: Path, url: str, *, connections: int, duration: float,
            threads: int = 1) -> dict[str, Any]:
    """One wrk run; its summary as a dict."""
    out = subprocess.run(
        [wrk, f"-t{threads}", f"-c{connections}", f"-d{duration:g}s", "-s", str(script),
         url], capture_output=True, text=True, check=True, timeout=duration + 60)
    for line in out.stdout.splitlines():
        if line.startswith("WRKJSON "):
            res: dict[str, Any] = json.loads(line[len("WRKJSON "):])
            res["rps"] = res["requests"] / res["seconds"]
            return res
    raise RuntimeError(f"no summary in wrk's output:\n{out.stdout}\n{out.stderr}")


def start_service(port: int, redis_url: str, num_items: int, workers: int,
                  log: Path) -> subprocess.Popen[bytes]:
    """``ialp serve`` on ``port`` with the no-op endpoint, waiting until it answers."""
    import httpx

    cmd = [sys.executable, "-m", "ialp", "serve", "--port", str(port), "--redis-url",
           redis_url, "--num-items", str(num_items), "--enable-noop", "--insecure",
           "--rate-limit-per-s", "0", "--log-level", "warning"]
    if workers > 1:
        cmd += ["--workers", str(workers)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    deadline = time.time() + 180
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"ialp serve exited ({proc.returncode}); see {log}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    proc.kill()
    raise RuntimeError(f"ialp serve did not answer within 180 s; see {log}")


def measure(wrk: str, num_items: int, args: argparse.Namespace, folder: Path,
            redis_url: str) -> dict[str, Any]:
    """Alternating no-op / recommend rounds against one service process."""
    port = free_port()
    proc = start_service(port, redis_url, num_items, args.workers,
                         folder / f"serve-{num_items}.log")
    try:
        script = lua_script(num_items, args.history, folder)
        base = f"http://127.0.0.1:{port}"
        for ep in ("noop", "recommend"):  # warm-up: JIT-free, but caches and allocators
            run_wrk(wrk, script, f"{base}/v1/{ep}", connections=args.concurrency,
                    duration=args.warmup)
        rounds: dict[str, list[dict[str, Any]]] = {"noop": [], "recommend": []}
        for r in range(args.rounds):
            for ep in ("noop", "recommend"):
                res = run_wrk(wrk, script, f"{base}/v1/{ep}", connections=args.concurrency,
                              duration=args.duration)
                rounds[ep].append(res)
                print(f"  {num_items:>7} items  round {r + 1}  {ep:<9} "
                      f"{res['rps']:8.0f} req/s  p50 {res['p50_ms']:6.2f}  "
                      f"p99 {res['p99_ms']:7.2f} ms  non-2xx {res['non2xx']}", flush=True)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
    noop = median(r["rps"] for r in rounds["noop"])
    rec = median(r["rps"] for r in rounds["recommend"])
    return {
        "num_items": num_items, "noop_rps": noop, "recommend_rps": rec,
        "ratio": rec / noop,
        "recommend_p50_ms": median(r["p50_ms"] for r in rounds["recommend"]),
        "recommend_p99_ms": median(r["p99_ms"] for r in rounds["recommend"]),
        "recommend_p99_max_ms": max(r["p99_ms"] for r in rounds["recommend"]),
        "noop_p99_ms": median(r["p99_ms"] for r in rounds["noop"]),
        "non2xx": sum(r["non2xx"] for rs in rounds.values() for r in rs),
        "rounds": rounds,
    }


def main() -> int:
    """Run the benchmark and write the JSON results."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--items", default="300,4606,100000",
                   help="catalogue sizes, comma-separated")
    p.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of warm-up per endpoint")
    p.add_argument("--rounds", type=int, default=3, help="no-op/recommend pairs per catalogue")
    p.add_argument("--concurrency", type=int, default=16, help="wrk connections")
    p.add_argument("--history", type=int, default=20, help="items in each request's history")
    p.add_argument("--workers", type=int, default=1, help="ialp serve --workers")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks/results/serving_ratio.json")
    args = p.parse_args()
    wrk = ensure_wrk()
    if wrk is None:
        print("skipped: no wrk")
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="ialp-serving-ratio-") as tmp:
        folder = Path(tmp)
        redis = EmbeddedRedis(folder / "redis", port=free_port())
        redis.start()
        try:
            assert ping("127.0.0.1", redis.port)
            for n in (int(x) for x in args.items.split(",")):
                results.append(measure(wrk, n, args, folder, redis.url))
        finally:
            redis.stop()
    report = {
        "benchmark": "serving_ratio", "command": " ".join([Path(sys.argv[0]).name,
                                                           *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "python": platform.python_version(),
                    "loadavg_before": os.getloadavg()},
        "wrk": {"threads": 1, "connections": args.concurrency, "duration_s": args.duration},
        "workers": args.workers, "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print("\n| items | no-op req/s | recommend req/s | ratio | recommend p50 / p99 ms |")
    print("|---:|---:|---:|---:|---|")
    for r in results:
        print(f"| {r['num_items']:,} | {r['noop_rps']:,.0f} | {r['recommend_rps']:,.0f} | "
              f"{r['ratio']:.2f} | {r['recommend_p50_ms']:.1f} / {r['recommend_p99_ms']:.1f} |")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
