"""``ialp pretrain``: iALP pre-training (Algorithm 1) of πθ from a preference judge.

Writes ``OUT/policy/`` (a versioned checkpoint, loadable with
``policy.checkpoint.load_checkpoint`` and usable as ``init`` of any learner) and
``OUT/pretrain.json`` (configuration, periodic losses and judge answer rates, totals and,
with ``--eval-episodes``, R@0 / Len@0 / Ravg@0 on the test environment against a randomly
initialised A2C network of the same shape).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from ialp.commands.llm import add_judge_arguments, judge_from_args, judge_label
from ialp.output import format_table, print_json


def register(sub: argparse._SubParsersAction) -> None:
    """Add ``pretrain``."""
    p = sub.add_parser(
        "pretrain",
        help="iALP pre-training of the policy from judge preferences (Algorithm 1)",
        description="Episodes start from the training users' initial histories; at each step "
        "the actor proposes k candidates, the judge picks one (r=1) or answers None (a random "
        "candidate, r=0), and A2C learns from minibatches of these transitions. No simulator "
        "reward is used.",
    )
    p.add_argument("--env", default="coat", help="coat, lfm or industry")
    p.add_argument("--out", required=True, help="output folder (policy/ and pretrain.json)")
    p.add_argument("--epochs", type=int, default=1, help="passes over the users (default 1)")
    p.add_argument("--horizon", type=int, default=10, help="steps per episode (default 10)")
    p.add_argument("--k", type=int, default=10, help="candidates per prompt (default 10)")
    p.add_argument("--num-parallel", type=int, default=64, help="episodes side by side")
    p.add_argument("--candidates", choices=["sample", "topk"], default="topk",
                   help="how the actor proposes candidates: its k likeliest (default) or "
                   "k drawn from it (Algorithm 1 as written)")
    p.add_argument("--listwise", type=float, default=1.0,
                   help="weight of the listwise step that pulls the actor's softmax over "
                   "the k candidates towards the judge's pick (default 1; 0 = Algorithm 1 "
                   "as written)")
    p.add_argument("--unparseable", choices=["skip", "none"], default="skip",
                   help="unparseable replies: store nothing (skip) or treat as None")
    p.add_argument("--batch-size", type=int, default=64, help="minibatch from D_LLM")
    p.add_argument("--updates-per-step", type=int, default=4, help="A2C updates per step")
    p.add_argument("--warmup", type=int, default=128, help="transitions before updating")
    p.add_argument("--lr", type=float, default=1e-3, help="A2C learning rate")
    p.add_argument("--gamma", type=float, default=0.9, help="discount γ of eq. 8 (default 0.9)")
    p.add_argument("--target-tau", type=float, default=0.01,
                   help="Polyak rate of the A2C target network (0: none; default 0.01)")
    p.add_argument("--normalize-advantage", action="store_true",
                   help="standardise advantages per minibatch")
    p.add_argument("--anchor", type=float, default=0.1,
                   help="weight of KL(π₀ ‖ πθ) to the starting policy, which carries the "
                        "training logs' popularity prior (default 0.1; 0 = Algorithm 1 as "
                        "written)")
    p.add_argument("--hidden", type=int, default=64, help="encoder width (as ialp experiment)")
    p.add_argument("--blocks", type=int, default=2, help="self-attention blocks")
    p.add_argument("--max-len", type=int, default=20,
                   help="history window of the encoder (default 20, as ialp experiment)")
    p.add_argument("--no-user-embedding", action="store_true",
                   help="no user embedding (default: one, as ialp experiment)")
    p.add_argument("--users", type=int, default=128,
                   help="pre-train from this many training users, drawn with --seed (0: all; "
                   "default 128: on LFM more users gave a lower R@0, docs/judge.md)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch CPU threads (default 1: fastest for these small networks on a "
                   "shared machine)")
    p.add_argument("--eval-episodes", type=int, default=0,
                   help="then evaluate R@0 on the test env against a random A2C (default: no)")
    p.add_argument("--eval-only", action="store_true",
                   help="no training: evaluate OUT/policy (--eval-episodes) and add the "
                   "result to OUT/pretrain.json")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    add_judge_arguments(p)
    p.set_defaults(func=_run)


class _PolicyActor:
    """BatchPolicy view of a MixedPolicy for ``simulator_client.evaluation``."""

    def __init__(self, policy: Any, explore: bool) -> None:
        self.policy = policy
        self.explore = explore

    def act(self, obs: Any, rng: Any) -> Any:
        items, _ = self.policy.act_arrays(obs.history, obs.user_ids, explore=self.explore,
                                          rng=rng)
        return items


def _evaluate(env_name: str, policy: Any, config: Any, episodes: int, seed: int,
              progress: bool) -> list[dict[str, Any]]:
    from policy.checkpoint import init_policy
    from simulator_client.envs.by_name import make_env
    from simulator_client.evaluation import evaluate

    test_env = make_env(env_name, "test", progress=progress)
    rows = []
    random_init = init_policy(config, seed=seed)
    if policy.theta.items is not None and random_init.theta.items is not None:
        # The same item features and prior as θ (the operator's; saved in the checkpoint).
        random_init.theta.set_item_features(policy.theta.items.features,
                                            policy.theta.items.prior)
    # Same acting rules (strategy, history masking) for both: only the weights differ.
    random_init.exploration = policy.exploration
    for name, pol in (("ialp", policy), ("a2c (random init)", random_init)):
        for explore in (True, False):
            m = evaluate(test_env, _PolicyActor(pol, explore), episodes=episodes, seed=seed)
            rows.append({"method": name, "acting": "sample" if explore else "greedy",
                         "R@0": m["return"], "Len@0": m["length"], "Ravg@0": m["r_avg"]})
    return rows


def _eval_only(args: argparse.Namespace, progress: bool) -> int:
    from dataclasses import replace

    from policy.checkpoint import load_checkpoint

    if args.eval_episodes <= 0:
        raise SystemExit("--eval-only needs --eval-episodes N")
    log_path = Path(args.out) / "pretrain.json"
    doc = json.loads(log_path.read_text(encoding="utf-8")) if log_path.is_file() else {}
    policy = load_checkpoint(Path(args.out) / "policy")
    if doc.get("summary", {}).get("config", {}).get("exclude_history", True):
        policy.exploration = replace(policy.exploration, mask_history=True)
    rows = _evaluate(args.env, policy, policy.config, args.eval_episodes, args.seed, progress)
    if log_path.is_file():
        doc.update({"eval": rows, "eval_episodes": args.eval_episodes,
                    "eval_mask_history": policy.exploration.mask_history})
        log_path.write_text(json.dumps(doc, indent=2, sort_keys=True, default=str) + "\n",
                            encoding="utf-8")
    if args.json:
        print_json({"eval": rows})
    else:
        print(f"R@0 on {args.env} test, {args.eval_episodes} episodes, seed {args.seed}")
        print(format_table(rows, ["method", "acting", "R@0", "Len@0", "Ravg@0"]))
    return 0


def _run(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from policy.catalogue import CATALOGUE_FILE, Catalogue
    from policy.checkpoint import init_policy
    from policy.judge.spec import default_pretrain_judge
    from simulator_client.envs.by_name import make_env
    from simulator_client.experiments import (
        ExperimentConfig,
        item_feature_config,
        policy_config_for,
    )
    from simulator_client.item_features import features_for, training_logs
    from trainer.learners import make_learner
    from trainer.pretrain import PretrainConfig, StartState, pretrain_ialp, save_pretrain

    torch.manual_seed(args.seed)
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    progress = not args.json
    if args.eval_only:
        return _eval_only(args, progress)
    env = make_env(args.env, "train", progress=progress)
    users = env.users
    if 0 < args.users < len(users):
        users = np.sort(np.random.default_rng(args.seed).choice(users, args.users, replace=False))
    obs = env.reset(users)
    starts = [StartState(int(obs.user_ids[i]), obs.row(i).history) for i in range(len(obs))]
    policy_config = policy_config_for(env, ExperimentConfig(
        hidden=args.hidden, blocks=args.blocks, max_len=args.max_len,
        user_embedding=not args.no_user_embedding,
    ))
    if env.item_text is None:
        raise SystemExit(f"environment {args.env!r} has no item texts for the judge")
    if args.judge is None:  # the dataset's measured best (docs/judge.md)
        args.judge = default_pretrain_judge(args.env)
    judge = judge_from_args(args, args.env, env.item_text,
                            training_logs(env) if args.judge == "cooc" else None)
    config = PretrainConfig(
        epochs=args.epochs, horizon=args.horizon, k=args.k, num_parallel=args.num_parallel,
        candidates=args.candidates, unparseable=args.unparseable, batch_size=args.batch_size,
        updates_per_step=args.updates_per_step, warmup=args.warmup, seed=args.seed,
        a2c={"lr": args.lr, "gamma": args.gamma, "target_tau": args.target_tau,
             "normalize_advantage": args.normalize_advantage},
        anchor=args.anchor, listwise=args.listwise,
    )
    learner = None
    feat_cfg = item_feature_config(ExperimentConfig())
    if policy_config.item_features > 0 and feat_cfg is not None:
        # The operator's item features (training logs only), as `ialp experiment` uses.
        learner = make_learner("a2c", policy_config, seed=args.seed,
                               **config.learner_hyper(policy_config),
                               init=init_policy(policy_config, seed=args.seed,
                                                item_features=features_for(env, feat_cfg)))
    started = time.perf_counter()
    try:
        result = pretrain_ialp(judge, starts, policy_config, config, progress=progress,
                               learner=learner)
    finally:
        judge.close()
    extra: dict[str, Any] = {"env": args.env, "judge_label": judge_label(args),
                             "policy_config": policy_config.to_dict(),
                             "command_seconds": time.perf_counter() - started}
    if args.eval_episodes > 0:
        extra["eval"] = _evaluate(args.env, result.policy, policy_config, args.eval_episodes,
                                  args.seed, progress)
        extra["eval_episodes"] = args.eval_episodes
    path = save_pretrain(result, args.out, extra)
    # The environment's item ids travel with the policy: `ialp serve --checkpoint` then
    # speaks the caller's ids (row i of catalogue.txt = item index i).
    Catalogue.of(env.item_ids).to_file(path / CATALOGUE_FILE)
    s = result.summary
    summary = {"checkpoint": str(path), "version": result.policy.version,
               "transitions": s["transitions"], "updates": s["updates"],
               "select_rate": s["select_rate"], "none_rate": s["none_rate"],
               "unparseable_rate": s["unparseable_rate"], "seconds": s["seconds"]}
    last = result.log[-1] if result.log else {}
    for key in ("loss", "actor_loss", "critic_loss", "q_mean"):
        if key in last:
            summary[f"final_{key}"] = last[key]
    if args.json:
        print_json({**summary, "eval": extra.get("eval")})
    else:
        for key, value in summary.items():
            print(f"{key:>22}: {value}")
        if "eval" in extra:
            print(f"\nR@0 on {args.env} test, {args.eval_episodes} episodes, seed {args.seed}")
            print(format_table(extra["eval"], ["method", "acting", "R@0", "Len@0", "Ravg@0"]))
    if not args.json:
        print(f"\nlog: {args.out}/pretrain.json")
    return 0
