"""Offline accuracy of the offline methods: held-out next-item HR@10 / NDCG@10 beside the
Return, 3 environments × 3 seeds, with the suite's network and pre-training budget.

Runs ``ialp experiment --steps 0`` for random, popular, SASRec, iALP, LAAC and GenEE
(its initial pool) on each environment and seed — the same models as the suite's step-0
evaluation (θ and LAAC come from the same caches) — then writes the mean ± std over seeds
as JSON and prints a Markdown table (docs/laac.md).

    .venv/bin/python benchmarks/offline_accuracy.py --out runs/accuracy \
        --json docs/results/offline-accuracy.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np

METHODS = ("random", "popular", "sasrec", "ialp", "laac", "gee")
LABELS = {"random": "random", "popular": "popular (training logs)",
          "sasrec": "SASRec next-item (supervised)", "ialp": "iALP", "laac": "LAAC",
          "gee": "GenEE (initial pool)"}
QUICK_PRETRAIN = {"epochs": 1, "horizon": 10, "users": 128, "updates_per_step": 4,
                  "warmup": 128, "candidates": "topk", "listwise": 1.0}
"""The suite's ``--quick`` pre-training (``simulator_client.experiments.methods.ialp``)."""


def run(out: Path, envs: list[str], seeds: list[int], episodes: int) -> None:
    """One ``ialp experiment --steps 0`` per environment and seed (skipped when done)."""
    hyper = json.dumps({"ialp": {"pretrain": QUICK_PRETRAIN}})
    for env in envs:
        for seed in seeds:
            dest = out / f"{env}-s{seed}"
            if (dest / "results.json").exists():
                continue
            cmd = [sys.executable, "-m", "ialp", "experiment", "--env", env,
                   "--methods", ",".join(METHODS), "--steps", "0",
                   "--eval-episodes", str(episodes), "--hidden", "32", "--blocks", "1",
                   "--max-len", "20", "--hyper", hyper, "--seed", str(seed),
                   "--out", str(dest)]
            print(" ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)


def aggregate(out: Path, envs: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    """Mean and std over the seeds found under ``out``, per environment and method."""
    table: dict[str, dict[str, dict[str, float]]] = {}
    for env in envs:
        runs = [json.loads(f.read_text()) for f in sorted(out.glob(f"{env}-s*/results.json"))]
        if not runs:
            continue
        table[env] = {}
        for m in METHODS:
            res = [r["methods"][m] for r in runs if m in r["methods"]]
            ranked = [x["ranking"] for x in res if "ranking" in x]
            row: dict[str, float] = {"seeds": float(len(res))}
            for key, values in (("hr@10", [x["hr@10"] for x in ranked]),
                                ("ndcg@10", [x["ndcg@10"] for x in ranked]),
                                ("return", [x["final"]["return"] for x in res])):
                if values:
                    row[key], row[f"{key}_std"] = float(np.mean(values)), float(np.std(values))
            if ranked:
                row["cases"] = float(ranked[0]["cases"])
                row["skipped_repeat"] = float(ranked[0]["skipped_repeat"])
            table[env][m] = row
    return table


def markdown(table: dict[str, dict[str, dict[str, float]]]) -> str:
    """The tables of docs/laac.md."""
    lines: list[str] = []
    for env, rows in table.items():
        lines += ["", f"**{env}**", "",
                  "| method | HR@10 | NDCG@10 | Return (step 0) | cases | repeats skipped |",
                  "|---|---:|---:|---:|---:|---:|"]
        for m, r in rows.items():
            def cell(key: str, r: dict[str, float] = r) -> str:
                return f"{r[key]:.3f} ± {r[key + '_std']:.3f}" if key in r else "–"
            ret = f"{r['return']:.2f} ± {r['return_std']:.2f}" if "return" in r else "–"
            lines.append(f"| {LABELS[m]} | {cell('hr@10')} | {cell('ndcg@10')} | {ret} | "
                         f"{int(r.get('cases', 0))} | {int(r.get('skipped_repeat', 0))} |")
    return "\n".join(lines)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="runs/accuracy", help="run folders")
    p.add_argument("--envs", default="coat,lfm,industry")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--episodes", type=int, default=100, help="test episodes (suite: 100)")
    p.add_argument("--json", help="write the aggregate here")
    p.add_argument("--no-run", action="store_true", help="only aggregate existing runs")
    args = p.parse_args()
    out = Path(args.out)
    envs = [e for e in args.envs.split(",") if e]
    if not args.no_run:
        run(out, envs, [int(s) for s in args.seeds.split(",")], args.episodes)
    table = aggregate(out, envs)
    if args.json:
        Path(args.json).write_text(json.dumps(table, indent=2, sort_keys=True) + "\n")
    print(markdown(table))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
