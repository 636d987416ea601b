"""``ialp demo``: the project's main job on its embedded defaults.

Today: build the Coat environments (training the DeepFM user model on first use) and
evaluate the reference policies on the test environment. It grows into the full
serve → learn → improve demo as the service lands.
"""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``demo``."""
    p = sub.add_parser("demo", help="run the end-to-end demo on embedded defaults")
    p.add_argument("--env", default="coat")
    p.add_argument("--episodes", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_demo)


def _demo(args: argparse.Namespace) -> int:
    from ialp.commands.env import METRIC_COLUMNS
    from ialp.output import format_table
    from simulator_client.baselines import make_baseline
    from simulator_client.evaluation import evaluate
    from simulator_client.registry import make_env

    print(f"Building the {args.env} training environment (user model) ...")
    train = make_env(args.env, "train", progress=True)
    print(f"Building the {args.env} test environment ...")
    test = make_env(args.env, "test", progress=True)
    rows = []
    for name in ("random", "popular", "oracle"):
        metrics = evaluate(
            test, make_baseline(name, test), episodes=args.episodes, seed=args.seed
        )
        rows.append({"policy": name, **metrics})
    print(f"\n{test.name}: {args.episodes} episodes, seed {args.seed} "
          f"(training environment: {train.name}, {len(train.users)} users)")
    print(format_table(rows, METRIC_COLUMNS))
    return 0
