"""``ialp env``: dataset statistics and baseline evaluation of user environments."""

from __future__ import annotations

import argparse
import time

from ialp.output import format_table, print_json

METRIC_COLUMNS = ["policy", "return", "length", "r_avg", "diversity", "novelty", "coverage"]


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``env stats``, ``env eval`` and ``env build``."""
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
        help="comma-separated baselines: random, popular, oracle, train-oracle (greedy on "
        "the training environment's reward model: the ceiling of a policy learned from the "
        "simulator), and for sequential environments (lfm, industry, built names) nextitem: "
        "the users' true next items (default: random,popular,oracle)",
    )
    ev.add_argument("--episodes", type=int, default=1000, help="test episodes (default 1000)")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--split", choices=["test", "train"], default="test")
    ev.add_argument("--json", action="store_true", help="print JSON")
    ev.set_defaults(func=_eval)

    build = env_sub.add_parser(
        "build",
        help="build a sequential environment from files in the generic format (or lfm / "
        "industry from the shared data)",
        description="Validate a dataset in the generic sequential format "
        "(docs/environments-sequential.md), store it under the cache folder as NAME, and train "
        "its training and test user models. Afterwards every `ialp env` command accepts NAME. "
        "`--name lfm` and `--name industry` (no files) build the shared-data environments.",
    )
    build.add_argument("--name", required=True, help="environment name (a-z, 0-9, '.', '_', '-')")
    build.add_argument("--sequences", help="file of ordered user sequences (user_id, item_ids)")
    build.add_argument("--items", help="file of items with text attributes (item_id, ...)")
    build.add_argument("--seed", type=int, default=0, help="seed of the user split and models")
    build.add_argument("--json", action="store_true", help="print the manifest as JSON")
    build.set_defaults(func=_build)

    example = env_sub.add_parser(
        "example", help="write a small generated shop (items.tsv, sequences.tsv, "
        "scenario.json) with string ids, in the format `ialp env build` takes")
    example.add_argument("out", help="folder to write the two files into")
    example.add_argument("--items", type=int, default=240, help="catalogue size")
    example.add_argument("--users", type=int, default=400, help="shoppers")
    example.add_argument("--seed", type=int, default=0)
    example.set_defaults(func=_example)


def _stats(args: argparse.Namespace) -> int:
    from simulator_client.envs.by_name import env_stats

    stats = env_stats(args.name)
    if args.json:
        print_json(stats)
    else:
        for key, value in stats.items():
            print(f"{key:>20}: {value}")
    return 0


def _one_thread() -> None:
    """User models here are small: one torch thread is faster than a contended pool."""
    import torch

    torch.set_num_threads(1)


def _example(args: argparse.Namespace) -> int:
    from simulator_client.datasets.example import ExampleShop, write_example

    try:
        items, seqs = write_example(args.out, ExampleShop(items=args.items, users=args.users,
                                                          seed=args.seed))
    except ValueError as exc:
        raise SystemExit(f"ialp env example: {exc}") from None
    print(f"wrote {items} ({args.items} items), {seqs} ({args.users} users) and "
          f"{items.parent / 'scenario.json'}")
    return 0


def _build(args: argparse.Namespace) -> int:
    from simulator_client.envs.sequential import SequentialEnvConfig
    from simulator_client.envs.storage import build_environment
    from simulator_client.user_models.sequential import SequentialModelConfig

    if (args.sequences is None) != (args.items is None):
        raise SystemExit("ialp env build: give both --sequences and --items (or neither)")
    try:
        result = build_environment(
            args.name,
            sequences=args.sequences,
            items=args.items,
            env_config=SequentialEnvConfig(split_seed=args.seed),
            model_config=SequentialModelConfig(seed=args.seed),
            progress=not args.json,
        )
    except ValueError as exc:
        raise SystemExit(f"ialp env build: {exc}") from None
    if args.json:
        print_json({"folder": str(result.folder), **result.manifest})
    else:
        counts = result.manifest["counts"]
        print(f"built {result.name!r} in {result.folder}")
        for key, value in counts.items():
            print(f"{key:>20}: {value}")
        for split, metrics in result.manifest["models"].items():
            hr = metrics.get("holdout_hr@10", float("nan"))
            print(f"{split + ' model':>20}: holdout HR@10 {hr:.3f}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    from simulator_client.baselines import baseline_for
    from simulator_client.envs.by_name import make_env
    from simulator_client.evaluation import evaluate

    if args.episodes <= 0:
        raise SystemExit("--episodes must be positive")
    _one_thread()
    env = make_env(args.name, args.split, progress=not args.json)
    names = [p.strip() for p in args.policy.split(",") if p.strip()]
    train_env = (make_env(args.name, "train", progress=not args.json)
                 if "train-oracle" in names else None)
    results = []
    for name in names:
        try:
            policy = baseline_for(name, env, train_env)
        except ValueError as exc:
            raise SystemExit(f"ialp env eval: {exc}") from None
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
