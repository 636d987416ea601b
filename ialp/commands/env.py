"""``ialp env``: dataset statistics and baseline evaluation of user environments."""

from __future__ import annotations

import argparse
import time

from ialp.output import format_table, print_json

METRIC_COLUMNS = ["policy", "return", "length", "r_avg", "diversity", "novelty", "coverage"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``env stats`` and ``env eval``."""
    env = sub.add_parser("env", help="inspect and evaluate user environments")
    env_sub = env.add_subparsers(dest="env_cmd", required=True)

    stats = env_sub.add_parser("stats", help="dataset statistics of an environment")
    stats.add_argument("name", help="coat, lfm, industry or a name built with `ialp env build`")
    stats.add_argument("--json", action="store_true", help="print JSON")
    stats.set_defaults(func=_stats)

    ev = env_sub.add_parser("eval", help="evaluate a baseline policy on the test environment")
    ev.add_argument("name")
    ev.add_argument(
        "--policy",
        default="random,popular,oracle",
        help="comma-separated baselines: random, popular, oracle (default: all three)",
    )
    ev.add_argument("--episodes", type=int, default=1000, help="test episodes (default 1000)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--split", choices=["test", "train"], default="test")
    ev.add_argument("--json", action="store_true", help="print JSON")
    ev.set_defaults(func=_eval)


def _stats(args: argparse.Namespace) -> int:
    from simulator_client.registry import env_stats

    stats = env_stats(args.name)
    if args.json:
        print_json(stats)
    else:
        for key, value in stats.items():
            print(f"{key:>20}: {value}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from simulator_client.baselines import make_baseline
    from simulator_client.evaluation import evaluate
    from simulator_client.registry import make_env

    if args.episodes <= 0:
        raise SystemExit("--episodes must be positive")
    env = make_env(args.name, args.split, progress=not args.json)
    results = []
    for name in [p.strip() for p in args.policy.split(",") if p.strip()]:
        policy = make_baseline(name, env)
        started = time.perf_counter()
        metrics = evaluate(env, policy, episodes=args.episodes, seed=args.seed)
        row = {"policy": name, **metrics}
        if not args.json:
            row["seconds"] = time.perf_counter() - started
        results.append(row)
    if args.json:
        print_json(
            {
                "env": args.name,
                "split": args.split,
                "episodes": args.episodes,
                "seed": args.seed,
                "results": results,
            }
        )
    else:
        print(f"{args.name} ({args.split}), {args.episodes} episodes, seed {args.seed}")
        print(format_table(results, METRIC_COLUMNS))
    return 0
