"""``ialp llm compare``: judges side by side on one environment's test users.

For every judge: how often it picks the user's real next item among k = 10 candidates
(hit@1, Wilson 95 % interval, decisions per second), and the Return of the judge *as a
policy* in the test environment (each step it picks among k items drawn uniformly from
those not in the user's history; None → a random candidate), mean ± 95 % interval over the
episodes. Every judge gets the same cases, the same episodes and the same seed.

Judges: ``random``, ``popular`` (training-log counts), ``cooc`` (what followed the user's
recent items in the training logs, smoothed by popularity), ``embedding`` (MiniLM), a packaged
language model by name (``smollm2``, ``gemma3-270m``) or a model folder, each optionally
``+ADAPTER`` (a LoRA adapter folder from ``ialp llm tune``). Replies are not cached: the
decisions per second are the backend's own.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

from ialp.output import format_table, print_json
from policy.judge.spec import JUDGE_ENVS, JudgeSpec


def register(llm_sub: argparse._SubParsersAction) -> None:
    """Add ``llm compare`` to the ``ialp llm`` subcommands."""
    cmp = llm_sub.add_parser(
        "compare", help="judges side by side: hit@1 among k and Return as a policy",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    cmp.add_argument("--env", default="lfm", choices=JUDGE_ENVS)
    cmp.add_argument("--judges", default="random,popular,embedding,smollm2",
                     help="comma-separated judges (see above; default: %(default)s)")
    cmp.add_argument("--cases", type=int, default=200, help="hit@1 cases (default 200)")
    cmp.add_argument("--episodes", type=int, default=50,
                     help="test episodes of the judge as a policy (0: skip; default 50)")
    cmp.add_argument("--k", type=int, default=10, help="candidates per decision (default 10)")
    cmp.add_argument("--seed", type=int, default=0)
    cmp.add_argument("--llm-batch-size", type=int, default=8)
    cmp.add_argument("--out", help="write the JSON result here")
    cmp.add_argument("--markdown", help="write the table (Markdown) here")
    cmp.add_argument("--json", action="store_true", help="print JSON, not a table")
    cmp.set_defaults(func=_compare)


def _build(name: str, env: str, texts: Any, logs: Any, args: argparse.Namespace) -> Any:
    from policy.item_features import item_counts
    from policy.judge.prompt import PromptBuilder, load_scenario
    from policy.judge.reference import PopularJudge, RandomJudge

    base, _, adapter = name.partition("+")
    if base == "cooc":
        if adapter:
            raise SystemExit(f"judge {name!r}: cooc takes no adapter")
        return JudgeSpec(judge="cooc").build(env, texts, logs)
    if base in ("random", "popular"):
        if adapter:
            raise SystemExit(f"judge {name!r}: {base} takes no adapter")
        builder = PromptBuilder(texts, load_scenario(env))
        if base == "random":
            return RandomJudge(builder, seed=args.seed)
        return PopularJudge(builder, item_counts(logs, len(texts)))
    # No reply cache: every judge is timed on fresh answers.
    if base == "embedding":
        spec = JudgeSpec(judge="embedding", no_cache=True)
    else:
        spec = JudgeSpec(judge="hf", model_path=base, adapter=adapter or None,
                         llm_batch_size=args.llm_batch_size, no_cache=True)
    return spec.build(env, texts)


def _compare(args: argparse.Namespace) -> int:
    from ialp.commands.judge_cases import JudgePolicy, build_cases
    from policy.judge.evaluate import evaluate_judge
    from simulator_client.envs.by_name import make_env
    from simulator_client.evaluation import evaluate
    from simulator_client.item_features import training_logs

    names = [n.strip() for n in args.judges.split(",") if n.strip()]
    if not names or args.cases <= 0 or args.episodes < 0:
        raise SystemExit("need at least one judge, --cases > 0 and --episodes >= 0")
    texts, cases = build_cases(args.env, "test", args.cases, k=args.k, seed=args.seed)
    test_env = make_env(args.env, "test", progress=False)
    train_env = make_env(args.env, "train", progress=False)
    logs = training_logs(train_env)
    rows, results = [], []
    for name in names:
        judge = _build(name, args.env, texts, logs, args)
        started = time.perf_counter()
        try:
            hit = evaluate_judge(judge, cases, batch_size=16, progress=not args.json)
            ret: dict[str, float] = {}
            if args.episodes:
                ret = evaluate(test_env, JudgePolicy(judge, test_env.num_items, args.k),
                               episodes=args.episodes, seed=args.seed)
        finally:
            judge.close()
        lo, hi = hit["hit_rate_ci95"]
        half = (1.96 * ret["return_std"] / math.sqrt(ret["episodes"])) if ret else float("nan")
        result = {"judge": name, "hit@1": hit, "as_policy": ret,
                  "decisions_per_s": hit["cases"] / max(hit["seconds"], 1e-9),
                  "seconds": time.perf_counter() - started}
        results.append(result)
        rows.append({
            "judge": name, "hit@1": f"{hit['hit_rate']:.3f}", "95% CI": f"[{lo:.3f}, {hi:.3f}]",
            "None": f"{hit['none_rate']:.2f}",
            "decisions/s": f"{result['decisions_per_s']:.1f}",
            "Return": f"{ret['return']:.2f} ± {half:.2f}" if ret else "–",
            "r_avg": f"{ret['r_avg']:.3f}" if ret else "–",
        })
    record = {"env": args.env, "cases": args.cases, "episodes": args.episodes, "k": args.k,
              "seed": args.seed, "results": results,
              "command": "ialp llm compare " + " ".join(
                  f"--{k.replace('_', '-')} {v}" for k, v in (
                      ("env", args.env), ("judges", args.judges), ("cases", args.cases),
                      ("episodes", args.episodes), ("seed", args.seed)))}
    columns = list(rows[0])
    table = format_table(rows, columns)
    markdown = "\n".join(["| " + " | ".join(columns) + " |",
                          "|" + "---|" * len(columns),
                          *("| " + " | ".join(str(r[c]) for c in columns) + " |" for r in rows)])
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(record, indent=2, sort_keys=True) + "\n",
                                  encoding="utf-8")
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(markdown + "\n", encoding="utf-8")
    if args.json:
        print_json(record)
    else:
        print(f"{args.env} test users: {args.cases} cases, {args.episodes} episodes, "
              f"k = {args.k}, seed {args.seed}")
        print(table)
    return 0
