"""Drive ``wrk`` (a C load generator, when installed) with a generated Lua script.

It serves as the reference for the generator's own ceiling: the same closed-loop load on
the same endpoint, measured by a tool whose cost per request is small. ``wrk`` reports
throughput, latency percentiles, non-2xx answers and socket errors, not counts per status.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3, "h": 3600e3}


def wrk_path() -> str | None:
    """``wrk`` on PATH, or ``None``."""
    return shutil.which("wrk")


@dataclass(frozen=True)
class WrkRun:
    """What one ``wrk`` run measured."""

    requests: int
    """Answers received (any status)."""
    seconds: float
    """Length of the run."""
    throughput_rps: float
    """``Requests/sec`` as printed (all answers)."""
    non_2xx: int
    """Answers that were not 2xx or 3xx."""
    socket_errors: dict[str, int]
    """connect / read / write / timeout errors."""
    percentiles_ms: dict[str, float]
    """p50, p75, p90 and p99 latency."""

    def summary(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"requests": self.requests, "seconds": self.seconds,
                "throughput_rps": self.throughput_rps, "non_2xx": self.non_2xx,
                "socket_errors": self.socket_errors, **self.percentiles_ms}


def lua_script(bodies: Sequence[bytes], *, method: str = "POST",
               headers: dict[str, str] | None = None) -> str:
    """A script that sends ``bodies`` in turn (one body: wrk's static request, its
    cheapest path)."""
    lines = [f'wrk.method = "{method}"', 'wrk.headers["Content-Type"] = "application/json"']
    lines += [f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}"
              for k, v in (headers or {}).items()]
    # JSON string literals are valid Lua string literals for ASCII bodies.
    literals = [json.dumps(b.decode("ascii")) for b in bodies]
    if len(literals) == 1:
        lines.append(f"wrk.body = {literals[0]}")
    else:
        lines += [f"local bodies = {{{', '.join(literals)}}}", "local i = 0",
                  "request = function()", "  i = i % #bodies + 1",
                  "  return wrk.format(nil, nil, nil, bodies[i])", "end"]
    return "\n".join(lines) + "\n"


def run_wrk(url: str, bodies: Sequence[bytes], *, connections: int = 16, threads: int = 1,
            duration_s: float = 8.0, api_key: str | None = None,
            timeout_s: float = 10.0) -> WrkRun:
    """Closed-loop ``wrk`` run posting ``bodies`` to ``url`` (the full endpoint URL)."""
    exe = wrk_path()
    if exe is None:
        raise FileNotFoundError("wrk is not installed (Debian/Ubuntu: apt-get install wrk)")
    headers = {"X-API-Key": api_key} if api_key else {}
    with tempfile.TemporaryDirectory(prefix="ialp-wrk-") as tmp:
        script = Path(tmp) / "load.lua"
        script.write_text(lua_script(bodies, headers=headers))
        out = subprocess.run(
            [exe, f"-t{threads}", f"-c{connections}", f"-d{max(1, round(duration_s))}s",
             f"--timeout={max(1, round(timeout_s))}s", "--latency", "-s", str(script), url],
            capture_output=True, text=True, check=True, timeout=duration_s + 60).stdout
    return parse_wrk_output(out)


def parse_wrk_output(out: str) -> WrkRun:
    """Parse ``wrk --latency`` output."""
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", out)
    rps = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if done is None or rps is None:
        raise ValueError(f"unexpected wrk output:\n{out}")
    pct = {f"p{m.group(1)}_ms": float(m.group(2)) * _UNITS_MS[m.group(3)]
           for m in re.finditer(r"^\s+(\d+)%\s+([\d.]+)(us|ms|s|m|h)\s*$", out, re.MULTILINE)}
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)",
                     out)
    errors = dict(zip(("connect", "read", "write", "timeout"),
                      (int(g) for g in sock.groups()), strict=True)) if sock else {}
    return WrkRun(requests=int(done.group(1)),
                  seconds=float(done.group(2)) * _UNITS_MS[done.group(3)] / 1000.0,
                  throughput_rps=float(rps.group(1)),
                  non_2xx=int(non2xx.group(1)) if non2xx else 0,
                  socket_errors=errors, percentiles_ms=pct)
