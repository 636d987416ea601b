"""``ialp llm``: the preference judge — inspect prompts, measure judges, LoRA-tune a model.

* ``llm prompt``: print the Table 1 prompt of one evaluation case.
* ``llm report``: how often a judge picks the user's real next item among k = 10
  candidates (chance: 10 %), and its None / unparseable rates.
* ``llm tune``: LoRA-tune a local causal LM on 1,000 sampled interactions (section 5.4).
* ``llm compare``: judges side by side, hit@1 and Return as a policy (``llm_compare``).
* ``llm tiny-model``: write a tiny random causal LM for smoke tests (nothing downloaded).

Evaluation cases ("real next item"):

* LFM / Industry: the environment's held-out test users; history = the sequence without
  its last item, target = the last item.
* Coat has no order. History = the environment's initial state (the user's rated training
  items); the "real next item" proxy is an item the user rated 4 or 5 in the randomly
  assigned ``test.ascii`` ratings. Tuning examples for Coat hold out one training item
  rated 4 or 5 instead, so tuning never sees the report's targets.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ialp.commands.judge_cases import JudgePolicy, build_cases, env_item_text
from ialp.output import format_table, print_json
from policy.judge.spec import JUDGE_ENVS, JudgeSpec, JudgeSpecError, judge_arguments

log = logging.getLogger(__name__)



# -- judge options shared with ``ialp pretrain``: the library's spec, exits on bad input ---
def add_judge_arguments(p: argparse.ArgumentParser) -> None:
    """Options that choose and configure a judge backend (``policy.judge.spec``)."""
    judge_arguments(p)


def judge_from_args(args: argparse.Namespace, env: str, item_text: Any,
                    logs: Any | None = None) -> Any:
    """Build the judge chosen by :func:`add_judge_arguments` for dataset ``env``.
    ``logs``: the training users' sequences for ``--judge cooc`` (default: read from the
    dataset's training environment)."""
    spec = JudgeSpec.from_namespace(args)
    if spec.judge == "cooc" and logs is None:
        from simulator_client.envs.by_name import make_env
        from simulator_client.item_features import training_logs

        logs = training_logs(make_env(env, "train", progress=False))
    try:
        judge = spec.build(env, item_text, logs)
    except JudgeSpecError as exc:
        raise SystemExit(str(exc)) from None
    # The dataset defaults it resolved, for reports.
    args.judge, args.threshold, args.cooc_window = spec.judge, spec.threshold, spec.cooc_window
    return judge


def judge_label(args: argparse.Namespace) -> str:
    """Short description of the judge for reports."""
    return JudgeSpec.from_namespace(args).label()


# -- commands --------------------------------------------------------------------------------
def register(sub: argparse._SubParsersAction) -> None:
    """Add ``llm prompt``, ``llm report``, ``llm tune`` and ``llm tiny-model``."""
    llm = sub.add_parser("llm", help="the language-model preference judge (section 4.1.1)")
    llm_sub = llm.add_subparsers(dest="llm_cmd", required=True)

    pr = llm_sub.add_parser("prompt", help="print the prompt of one evaluation case")
    pr.add_argument("--env", default="coat", choices=JUDGE_ENVS)
    pr.add_argument("--seed", type=int, default=0)
    pr.add_argument("--template", help="prompt template file (default: Table 1)")
    pr.add_argument("--scenario", help="scenario name or JSON file (default: the env's)")
    pr.add_argument("--max-history", type=int, default=20)
    pr.set_defaults(func=_prompt)

    rep = llm_sub.add_parser(
        "report", help="hit rate of a judge on the user's real next item vs chance",
        description="Hide each user's real next item among 9 random items and ask the judge. "
        "Chance is 10%%. Writes a JSON result (see docs/judge.md).",
    )
    rep.add_argument("--env", default="coat", choices=JUDGE_ENVS)
    rep.add_argument("--cases", type=int, default=500, help="evaluation cases (default 500)")
    rep.add_argument("--k", type=int, default=10, help="candidates per case (default 10)")
    rep.add_argument("--seed", type=int, default=0)
    rep.add_argument("--batch-size", type=int, default=64, help="cases per judge call")
    rep.add_argument("--out", help="write the JSON result here")
    rep.add_argument("--json", action="store_true", help="print JSON, not a table")
    add_judge_arguments(rep)
    rep.set_defaults(func=_report)

    tune = llm_sub.add_parser(
        "tune", help="LoRA-tune a local causal LM on the prompt (section 5.4)",
        description="Sample --examples training interactions, build the Table 1 prompt with "
        "the user's real next item among 10 candidates, and LoRA-tune the model to answer "
        "its label. Saves a PEFT adapter usable with `--judge hf --adapter`.",
    )
    tune.add_argument("--env", default="coat", choices=JUDGE_ENVS)
    tune.add_argument("--model-path", required=True, help="local causal LM folder")
    tune.add_argument("--out", required=True, help="adapter output folder")
    tune.add_argument("--examples", type=int, default=1000, help="interactions (default 1000)")
    tune.add_argument("--epochs", type=int, default=1)
    tune.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    tune.add_argument("--lr", type=float, default=2e-4)
    tune.add_argument("--batch-size", type=int, default=4)
    tune.add_argument("--rank", type=int, default=8, help="LoRA rank")
    tune.add_argument("--alpha", type=int, default=16, help="LoRA alpha")
    tune.add_argument("--target-modules", help="comma-separated module names (default: PEFT's)")
    tune.add_argument("--max-length", type=int, default=1024, help="token cap per example")
    tune.add_argument("--max-history", type=int, default=20)
    tune.add_argument("--template", help="prompt template file (default: Table 1)")
    tune.add_argument("--scenario", help="scenario name or JSON file (default: the env's)")
    tune.add_argument("--device", default="cpu")
    tune.add_argument("--seed", type=int, default=0)
    tune.add_argument("--json", action="store_true", help="print the result as JSON")
    tune.set_defaults(func=_tune)

    jp = llm_sub.add_parser(
        "judge-policy",
        help="the judge as a policy: it picks among k random candidates (a ceiling for iALP)",
        description="Each step offers the judge k items drawn uniformly from those not in the "
        "user's history; its choice is recommended (None: a random candidate). Evaluated on "
        "the test environment next to a uniformly random policy.",
    )
    jp.add_argument("--env", default="coat", choices=JUDGE_ENVS)
    jp.add_argument("--episodes", type=int, default=290)
    jp.add_argument("--k", type=int, default=10)
    jp.add_argument("--seed", type=int, default=0)
    jp.add_argument("--json", action="store_true")
    add_judge_arguments(jp)
    jp.set_defaults(func=_judge_policy)

    from ialp.commands import llm_compare

    llm_compare.register(llm_sub)

    tiny = llm_sub.add_parser(
        "tiny-model", help="write a tiny random causal LM (smoke tests; not a real judge)"
    )
    tiny.add_argument("--env", default="coat", choices=JUDGE_ENVS)
    tiny.add_argument("--out", required=True)
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=_tiny)


def _builder(args: argparse.Namespace, texts: Any) -> Any:
    from policy.judge import PromptBuilder, PromptConfig, load_scenario, load_template

    return PromptBuilder(
        item_text=texts, scenario=load_scenario(args.scenario or args.env),
        template=load_template(args.template), config=PromptConfig(max_history=args.max_history),
    )


def _prompt(args: argparse.Namespace) -> int:
    texts, cases = build_cases(args.env, "test", 1, seed=args.seed)
    case = cases[0]
    print(_builder(args, texts).build(case.history, case.candidates))
    print(f"\n[real next item: {'abcdefghij'[case.target_index]}. {texts[case.target]}]")
    return 0


def _report(args: argparse.Namespace) -> int:
    from policy.judge.evaluate import evaluate_judge

    if args.cases <= 0:
        raise SystemExit("--cases must be positive")
    texts, cases = build_cases(args.env, "test", args.cases, k=args.k, seed=args.seed)
    judge = judge_from_args(args, args.env, texts)
    try:
        result = evaluate_judge(judge, cases, batch_size=args.batch_size,
                                progress=not args.json)
    finally:
        judge.close()
    result.update({"env": args.env, "judge": args.judge, "judge_label": judge_label(args),
                   "seed": args.seed,
                   "target": "test.ascii item rated >= 4 (Coat has no order)"
                   if args.env == "coat" else "last item of a held-out test user's sequence"})
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    if args.json:
        print_json(result)
    else:
        lo, hi = result["hit_rate_ci95"]
        row = {"env": args.env, "judge": args.judge, "cases": result["cases"],
               "hit_rate": result["hit_rate"], "ci95": f"[{lo:.3f}, {hi:.3f}]",
               "chance": result["chance"], "none_rate": result["none_rate"],
               "unparseable": result["unparseable_rate"],
               "hit|answered": result["hit_rate_when_answered"]}
        print(format_table([row], list(row)))
        print("chosen labels:", result["chosen_label_counts"])
    return 0


def _tune(args: argparse.Namespace) -> int:
    from trainer.llm_tune import LoraTuneConfig, TuneExample, tune_lora

    if args.examples <= 0:
        raise SystemExit("--examples must be positive")
    texts, cases = build_cases(args.env, "train", args.examples, seed=args.seed)
    builder = _builder(args, texts)
    examples = [TuneExample(builder.build(c.history, c.candidates), "abcdefghij"[c.target_index])
                for c in cases]
    config = LoraTuneConfig(
        rank=args.rank, alpha=args.alpha, lr=args.lr, epochs=args.epochs,
        max_steps=args.max_steps, batch_size=args.batch_size, max_length=args.max_length,
        seed=args.seed, device=args.device,
        target_modules=tuple(m.strip() for m in args.target_modules.split(","))
        if args.target_modules else None,
    )
    result = tune_lora(args.model_path, examples, args.out, config, progress=not args.json,
                       metadata={"env": args.env, "template_default": args.template is None})
    losses = result.losses
    k = max(1, len(losses) // 10)
    summary = {"adapter": str(result.adapter_path), "examples": result.examples,
               "steps": len(losses), "truncated": result.truncated,
               "loss_first": float(np.mean(losses[:k])), "loss_last": float(np.mean(losses[-k:])),
               "seconds": result.seconds}
    if args.json:
        print_json(summary)
    else:
        for key, value in summary.items():
            print(f"{key:>12}: {value}")
    return 0


def _judge_policy(args: argparse.Namespace) -> int:
    from simulator_client.baselines import RandomPolicy
    from simulator_client.envs.by_name import make_env
    from simulator_client.evaluation import evaluate

    env = make_env(args.env, "test", progress=not args.json)
    judge = judge_from_args(args, args.env, env_item_text(args.env))
    rows = []
    try:
        for name, pol in (("random", RandomPolicy(env.num_items)),
                          (f"judge over {args.k} random", JudgePolicy(judge, env.num_items,
                                                                       args.k))):
            m = evaluate(env, pol, episodes=args.episodes, seed=args.seed)
            rows.append({"policy": name, "return": m["return"], "length": m["length"],
                         "r_avg": m["r_avg"]})
    finally:
        judge.close()
    if args.json:
        print_json({"env": args.env, "judge": judge_label(args), "episodes": args.episodes,
                    "seed": args.seed, "results": rows, "judge_stats": judge.stats.as_dict()})
    else:
        print(f"{args.env} test, {args.episodes} episodes, seed {args.seed}; {judge_label(args)}")
        print(format_table(rows, ["policy", "return", "length", "r_avg"]))
    return 0


def _tiny(args: argparse.Namespace) -> int:
    from policy.judge import PromptBuilder, load_scenario
    from trainer.llm_tune import build_tiny_causal_lm

    texts, cases = build_cases(args.env, "train", 64, seed=args.seed)
    builder = PromptBuilder(item_text=texts, scenario=load_scenario(args.env))
    corpus = [builder.build(c.history, c.candidates) for c in cases]
    corpus.append(" ".join("abcdefghijk") + " None")
    path = build_tiny_causal_lm(args.out, corpus, seed=args.seed)
    print(path)
    return 0
