"""``ialp experiment``: train methods online against an environment, plot learning curves."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ialp.output import format_table, print_json

TABLE_COLUMNS = ["method", "return", "return_std", "length", "r_avg", "R@0", "updates", "seconds",
                 "ms/step"]
"""ms/step: wall milliseconds per training decision (network, plus the judge for llm-online)."""
RANKING_COLUMNS = ["hr@10", "ndcg@10"]
"""Offline next-item accuracy of the final model (held-out last item of each test user's
log); shown when some method was ranked, empty for one that was not."""


def table_columns(rows: list[dict[str, Any]]) -> list[str]:
    """``TABLE_COLUMNS``, with ``RANKING_COLUMNS`` after R_avg when a row has them."""
    if not any(c in row for row in rows for c in RANKING_COLUMNS):
        return list(TABLE_COLUMNS)
    at = TABLE_COLUMNS.index("r_avg") + 1
    return [*TABLE_COLUMNS[:at], *RANKING_COLUMNS, *TABLE_COLUMNS[at:]]


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``experiment``."""
    p = sub.add_parser(
        "experiment",
        help="train methods online in a simulated environment and compare learning curves",
        description="Train each method for --steps user interactions in the training "
        "environment, evaluating on the test environment every --eval-every interactions. "
        "Writes OUT/results.json, OUT/curves.png and OUT/policies/<method>/.",
    )
    p.add_argument("--env", default="coat", help="registered environment (coat, lfm, industry)")
    p.add_argument(
        "--methods", default="random,dqn,pg,a2c",
        help="comma-separated methods (default: random,dqn,pg,a2c)",
    )
    p.add_argument("--steps", type=int, default=20_000, help="training interactions per method")
    p.add_argument("--eval-every", type=int, default=2_000, help="interactions between evals")
    p.add_argument("--eval-episodes", type=int, default=290, help="test episodes per eval")
    p.add_argument("--num-envs", type=int, default=16, help="users stepped in parallel")
    p.add_argument("--batch-size", type=int, default=64, help="learner minibatch size")
    p.add_argument("--warmup", type=int, default=256, help="transitions before the first update")
    p.add_argument(
        "--updates-per-step", type=int, default=1,
        help="off-policy updates per batched environment step",
    )
    p.add_argument(
        "--eval-greedy", action="store_true",
        help="evaluate greedily instead of with each method's exploration (also in a "
        "suite: every learner's evaluations act greedily, as the VW peer's and frozen "
        "iALP's do)",
    )
    p.add_argument(
        "--mask-history", action=argparse.BooleanOptionalAction, default=True,
        help="learned methods never recommend items already in the user's history "
        "(default on; --no-mask-history lets them)",
    )
    p.add_argument(
        "--items", choices=["features", "id"], default="features",
        help="item representation of learned methods: factorised heads over features from "
        "the training logs (default) or one free output row per item id",
    )
    p.add_argument(
        "--item-features", default="logpop,cooc",
        help="with --items features: comma-separated kinds (logpop, cooc, text)",
    )
    p.add_argument(
        "--prior-scale", type=float, default=3.0,
        help="with --items features: weight of the training-log popularity prior in the "
        "actor's initial logits (0 = none)",
    )
    p.add_argument(
        "--item-ids", action=argparse.BooleanOptionalAction, default=True,
        help="with --items features: keep a free per-item vector and bias beside the "
        "feature terms (default on; --no-item-ids scores items through features only)",
    )
    p.add_argument(
        "--logs", choices=["all", "imbalanced"], default="all",
        help="training logs the offline parts of the run see (item features, popular, "
        "sasrec, laac, the VW peer's features): all of them (default), or a subset in "
        "which the most popular 10%% of the items hold 90%% of the interactions",
    )
    p.add_argument("--max-len", type=int, default=20, help="encoder history window")
    p.add_argument("--hidden", type=int, default=64, help="encoder width")
    p.add_argument("--blocks", type=int, default=2, help="self-attention blocks")
    p.add_argument(
        "--hyper", default="{}",
        help='JSON per-method learner settings, e.g. \'{"a2c": {"lr": 0.0005}}\'',
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--json", action="store_true", help="print the results JSON, not a table")
    g = p.add_argument_group("suite (section 6 of the paper; see docs/results.md)")
    g.add_argument("--suite", choices=["paper"],
                   help="run the paper's suite: every method on each --env (comma-separated) "
                   "and --seeds; writes tables, curves and exploration figures under --out")
    g.add_argument("--quick", action="store_true", help="suite: small budgets (minutes)")
    g.add_argument("--seeds", default="0,1,2", help="suite: comma-separated seeds")
    g.add_argument("--jobs", type=int, default=2,
                   help="suite: (environment, seed) runs at once in worker processes "
                   "(default 2)")
    g.add_argument("--suite-methods",
                   help="suite: comma-separated methods of the tables (default: all of "
                   "the paper's that are registered)")
    g.add_argument("--suite-steps", type=int,
                   help="suite: training interactions per run instead of the mode's "
                   "(evaluations every tenth of it; one epoch = one tenth)")
    g.add_argument("--suite-eval-episodes", type=int,
                   help="suite: test episodes per evaluation instead of the mode's")
    g.add_argument("--no-explore", action="store_true",
                   help="suite: skip the exploration-strategy comparison")
    g.add_argument("--docs", default="docs",
                   help="suite: regenerate DOCS/results.md from the results ('' = do not)")
    g.add_argument("--docs-name", default="results",
                   help="suite: the page's file stem under --docs (default results; another "
                   "name keeps its own page, figures and summary, e.g. results-imbalanced)")
    p.set_defaults(func=_run)


def _run_suite(args: argparse.Namespace) -> int:
    import sys

    import torch

    from simulator_client.experiments.suite import SuiteConfig, run_suite

    envs = tuple(e.strip() for e in args.env.split(",") if e.strip())
    try:
        seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip())
    except ValueError as exc:
        raise SystemExit(f"--seeds must be comma-separated integers: {exc}") from exc
    if not envs or not seeds:
        raise SystemExit("--env and --seeds must name at least one environment and seed")
    torch.set_num_threads(1)
    command = "ialp " + " ".join(sys.argv[1:]) if sys.argv[1:2] == ["experiment"] else ""
    extra: dict[str, Any] = {}
    if args.suite_methods:
        extra["methods"] = tuple(m.strip() for m in args.suite_methods.split(",") if m.strip())
    if args.no_explore:
        extra["explore_methods"] = ()
    if args.suite_steps:
        if args.suite_steps < 10:
            raise SystemExit("--suite-steps must be at least 10")
        extra["experiment"] = {"steps": args.suite_steps, "eval_every": args.suite_steps // 10}
    if args.logs != "all":
        extra.setdefault("experiment", {})["logs"] = args.logs
    if not args.item_ids:
        extra.setdefault("experiment", {})["item_ids"] = False
    if args.eval_greedy:  # every learner evaluated greedily, as the VW peer and frozen iALP
        extra.setdefault("experiment", {})["online"] = {"eval_explore": False}
    if args.suite_eval_episodes:
        extra.setdefault("experiment", {})["eval_episodes"] = args.suite_eval_episodes
    try:
        hyper = json.loads(args.hyper)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"--hyper is not valid JSON: {exc}") from exc
    if hyper:  # merged per method over the suite's own settings
        extra.setdefault("experiment", {})["hyper"] = hyper
    cfg = SuiteConfig(envs=envs, seeds=seeds, quick=args.quick, command=command, **extra)
    summary = run_suite(cfg, args.out, progress=not args.json, docs_dir=args.docs or None,
                        jobs=args.jobs, docs_name=args.docs_name)
    if args.json:
        print_json(summary)
        return 0
    for env, res in summary["results"].items():
        rows = [{"method": m, "R@0": r["at0"]["return"]["mean"],
                 "R@1": r["at1"]["return"]["mean"], "return": r["final"]["return"]["mean"],
                 "return_sd": r["final"]["return"]["std"], "length": r["final"]["length"]["mean"],
                 "r_avg": r["final"]["r_avg"]["mean"]} for m, r in res.items()]
        print(f"\n{env}: mean over seeds {', '.join(map(str, seeds))}")
        print(format_table(rows, ["method", "R@0", "R@1", "return", "return_sd", "length",
                                  "r_avg"]))
    wall = summary["wall_seconds"]["total"]
    print(f"\nwrote {args.out}/suite.json and figures in {wall / 60:.1f} min"
          + (f"; regenerated {args.docs}/{args.docs_name}.md" if args.docs else ""))
    return 0


def _run(args: argparse.Namespace) -> int:
    if args.suite:
        return _run_suite(args)
    import torch

    from simulator_client.envs.by_name import make_env
    from simulator_client.experiments import ExperimentConfig, run_experiment, table_rows
    from trainer.agents import OnlineConfig

    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    if not methods:
        raise SystemExit("--methods is empty")
    try:
        hyper = json.loads(args.hyper)
    except json.JSONDecodeError as exc:
        raise SystemExit(f"--hyper is not valid JSON: {exc}") from exc
    if not isinstance(hyper, dict) or not all(isinstance(v, dict) for v in hyper.values()):
        raise SystemExit('--hyper must map method names to objects, e.g. {"a2c": {"lr": 0.001}}')
    try:
        config = ExperimentConfig(
            steps=args.steps,
            eval_every=args.eval_every,
            eval_episodes=args.eval_episodes,
            num_envs=args.num_envs,
            seed=args.seed,
            online=OnlineConfig(
                batch_size=args.batch_size, warmup=args.warmup,
                updates_per_step=args.updates_per_step, eval_explore=not args.eval_greedy,
                mask_history=args.mask_history,
            ),
            hidden=args.hidden,
            max_len=args.max_len,
            blocks=args.blocks,
            hyper=hyper,
            items=args.items,
            item_features=tuple(k.strip() for k in args.item_features.split(",") if k.strip()),
            prior_scale=args.prior_scale,
            item_ids=args.item_ids,
            logs=args.logs,
        )
    except ValueError as exc:
        raise SystemExit(f"ialp experiment: {exc}") from exc
    torch.set_num_threads(1)
    show = not args.json
    train_env = make_env(args.env, "train", progress=show)
    test_env = make_env(args.env, "test", progress=show)
    results = run_experiment(
        args.env, train_env, test_env, methods, config, out_dir=args.out, progress=show
    )
    if args.json:
        print_json(results)
    else:
        print(
            f"{args.env}: {args.steps} training interactions per method, seed {args.seed}; "
            f"final test metrics over {args.eval_episodes} episodes"
        )
        rows = table_rows(results)
        print(format_table(rows, table_columns(rows)))
        print(f"wrote {args.out}/results.json and {args.out}/curves.png")
    return 0
