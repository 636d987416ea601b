"""Exactly-once under lost replies, cut connections and late replies, per command.

For every command of the trainer's cycle (simulator_client/chaos/lost_replies.py, TARGETS) and
every fault (drop the reply after Redis executed it, cut the connection before it is sent,
hold the reply past the trainer's socket timeout), one run of the real trainer process
behind a fault proxy: events accepted, learned once, learned twice, lost (from the
trainer's learning audit), whether the backlog drained. Writes
benchmarks/results/reliability_lost_replies.json and prints the table of
docs/reliability.md.

    python benchmarks/reliability_lost_replies.py [--events 240] [--nth 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simulator_client.chaos.lost_replies import TARGETS, faults_for, run_scenario  # noqa: E402
from simulator_client.chaos.redis_proxy import ACTIONS  # noqa: E402
from trainer.transport.redis_server import EmbeddedRedis, free_port  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=240)
    ap.add_argument("--nth", type=int, default=3, help="occurrence of the command to hit")
    ap.add_argument("--only", nargs="*", default=None,
                    help="run only these targets (names as in TARGETS)")
    ap.add_argument("--out", type=Path,
                    default=ROOT / "benchmarks" / "results" / "reliability_lost_replies.json")
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp_s:
        tmp = Path(tmp_s)
        server = EmbeddedRedis(tmp / "redis", port=free_port(), persistence=True).start()
        try:
            for target in (args.only or TARGETS):
                for action in ACTIONS:
                    res = run_scenario(tmp, server.port, faults_for(target, action, args.nth),
                                       n_events=args.events)
                    res.pop("commands_seen")
                    res.pop("log")
                    row = {"command": target, "fault": action, **res}
                    rows.append(row)
                    print(json.dumps({k: row[k] for k in (
                        "command", "fault", "fired", "accepted", "learned_once",
                        "learned_twice", "lost", "drained", "seconds")}), flush=True)
        finally:
            server.stop()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"events": args.events, "nth": args.nth, "rows": rows},
                                   indent=2) + "\n")
    print("\n| command (its reply) | fault | fired | accepted | learned once | twice | lost "
          "| drained |")
    print("|---|---|---|---:|---:|---:|---:|---|")
    for r in rows:
        print(f"| {r['command']} | {r['fault']} | {len(r['fired'])}/{len(r['faults'])} | "
              f"{r['accepted']} | {r['learned_once']} | {r['learned_twice']} | {r['lost']} "
              f"| {'yes' if r['drained'] else 'NO'} |")
    bad = [r for r in rows if r["learned_twice"] or r["lost"] or not r["drained"]]
    print(f"\n{len(rows) - len(bad)}/{len(rows)} runs exactly-once and drained")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
