"""Off-policy evaluation against the truth on the simulators (issue 18, "Done when").

For each environment (training split: the environment a deployment would learn in) and
each seed:

1. **Logs.** A *logging policy* different from every candidate plays ``--episodes``
   episodes and logs every decision (state, user, action, propensity, reward, done):
   ``(1 − u)·π_log + u·uniform`` with π_log a popularity-prior network (item features,
   ``prior_scale`` 1, init seed 7) and u = ``--uniform`` (0.2); categorical sampling, so the
   propensity is the exact probability of the drawn item.
2. **Estimates.** Each candidate is evaluated from these logs only (``trainer.ope``; no
   simulator internals) for three estimands:

   * ``step``: expected reward per decision on the logged states (IPS, SNIPS, DR with a
     cross-fitted additive reward model; bootstrap over episodes);
   * ``first``: expected reward of the first decision of an episode (the same estimators
     on the first decisions only; the initial state distribution is the same under every
     policy, so this is an on-policy quantity);
   * ``return``: the episode Return (PDIS, WPDIS, DR with the same reward model as a
     control variate; bootstrap over episodes).
3. **Truth.** ``step``: the simulator's expected reward of the candidate's distribution on
   the same logged states (``reward_model.reward_all``). ``first`` and ``return``: the
   candidate runs on-policy in the same environment for ``--truth-episodes`` episodes (its
   own exploration strategy, as served); mean first reward and mean Return, with their
   standard errors.

Candidates: ``random-init`` (an untrained network without item features: near uniform),
``popularity-prior`` (an untrained network with item features, ``prior_scale`` 3: strongly
popularity-biased), ``pretrained`` (an iALP θ checkpoint given with ``--checkpoint
ENV=PATH``) and ``pretrained-eps`` (the same θ acting ε-greedily, ε = 0.2).

    nice -n 5 .venv/bin/python benchmarks/ope_validation.py \\
        --checkpoint coat=runs/demo/coat-ialp/policy \\
        --checkpoint lfm=$HOME/.cache/ialp/ialp-theta/lfm-418a7582c9b7804e/policy \\
        --out benchmarks/results/ope_validation.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policy.checkpoint import init_policy, load_checkpoint
from policy.config import PolicyConfig
from policy.mixed import MixedPolicy
from simulator_client.envs.base import RecBatchEnv
from simulator_client.envs.by_name import make_env
from simulator_client.item_features import features_for
from trainer.ope.candidate import candidate_distribution, greedy_variant, target_and_cross_direct
from trainer.ope.estimators import Estimate, step_estimates, trajectory_estimates

ActFn = Callable[[np.ndarray, np.ndarray, np.random.Generator], tuple[np.ndarray, np.ndarray]]


@dataclass
class Logs:
    """Per-decision arrays of a batch of episodes."""

    histories: np.ndarray
    users: np.ndarray
    actions: np.ndarray
    props: np.ndarray
    rewards: np.ndarray
    episode: np.ndarray
    step: np.ndarray


def collect(env: RecBatchEnv, act: ActFn, episodes: int, seed: int, batch: int = 256) -> Logs:
    """Play ``episodes`` episodes with ``act`` and log every decision."""
    user_seq, pol_seq = np.random.SeedSequence(seed).spawn(2)
    users = env.sample_users(episodes, np.random.default_rng(user_seq))
    rng = np.random.default_rng(pol_seq)
    cols: dict[str, list[np.ndarray]] = {k: [] for k in Logs.__dataclass_fields__}
    for start in range(0, episodes, batch):
        chunk = users[start:start + batch]
        obs = env.reset(chunk)
        while env.active.any():
            rows = np.flatnonzero(env.active)
            items = np.zeros(len(chunk), dtype=np.int64)
            props = np.ones(len(chunk))
            items[rows], props[rows] = act(obs.history[rows], obs.user_ids[rows], rng)
            steps = obs.steps
            hist, uid = obs.history, obs.user_ids
            obs, r, _term, _trunc, _info = env.step(items)
            cols["histories"].append(hist[rows])
            cols["users"].append(uid[rows])
            cols["actions"].append(items[rows])
            cols["props"].append(props[rows])
            cols["rewards"].append(r[rows].astype(np.float64))
            cols["episode"].append(start + rows)
            cols["step"].append(steps[rows])
    return Logs(**{k: np.concatenate(v) for k, v in cols.items()})


def logging_act(base: MixedPolicy, uniform: float) -> ActFn:
    """(1 − u)·π_base + u·uniform, categorical, with exact propensities."""

    def act(hist: np.ndarray, users: np.ndarray, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:
        dist = (1.0 - uniform) * candidate_distribution(base, hist, users) \
            + uniform / base.num_items
        cum = np.cumsum(dist, axis=1)
        u = rng.random(len(dist)) * cum[:, -1]
        a = np.minimum((cum > u[:, None]).argmax(axis=1), dist.shape[1] - 1)
        return a, dist[np.arange(len(a)), a]

    return act


def policy_act(policy: MixedPolicy) -> ActFn:
    """The candidate as served: ``act_arrays`` with its exploration."""

    def act(hist: np.ndarray, users: np.ndarray, rng: np.random.Generator
            ) -> tuple[np.ndarray, np.ndarray]:
        return policy.act_arrays(hist, users, explore=True, rng=rng)

    return act


def candidates(env: RecBatchEnv, checkpoint: str | None) -> dict[str, MixedPolicy]:
    """The candidate policies of one environment."""
    feats = features_for(env)
    out: dict[str, MixedPolicy] = {
        "random-init": init_policy(PolicyConfig(env.num_items, max_len=20, hidden=32,
                                                blocks=1), seed=1),
        "popularity-prior": init_policy(
            PolicyConfig(env.num_items, max_len=20, hidden=32, blocks=1,
                         item_features=feats.dim, prior_scale=3.0),
            seed=2, item_features=feats),
    }
    if checkpoint:
        theta = load_checkpoint(checkpoint, expected_num_items=env.num_items)
        out["pretrained"] = theta
        out["pretrained-eps"] = greedy_variant(theta, 0.2)
    out.update(next_versions(env))
    return out


def next_versions(env: RecBatchEnv) -> dict[str, MixedPolicy]:
    """Candidates a deployment's promotion gate actually sees: the next versions of the
    served (logging) network, each a step away from it.

    * ``next-no-uniform``: the logging network without the logger's uniform share;
    * ``next-prior-1.5``: the same network with a sharper popularity prior (1.5 for 1);
    * ``next-perturbed``: the logging network with every item's actor bias moved by
      N(0, 0.5²), about what a few online updates change.
    """
    feats = features_for(env)

    def base(prior: float) -> MixedPolicy:
        return init_policy(PolicyConfig(env.num_items, max_len=20, hidden=32, blocks=1,
                                        item_features=feats.dim, prior_scale=prior),
                           seed=7, item_features=feats)

    perturbed = base(1.0)
    gen = torch.Generator().manual_seed(11)
    bias = dict(perturbed.theta.actor.named_parameters())["score.id_bias"]  # [I]
    with torch.no_grad():
        bias += 0.5 * torch.randn(bias.shape, generator=gen)
    return {"next-no-uniform": base(1.0), "next-prior-1.5": base(1.5),
            "next-perturbed": perturbed}


def logging_base(env: RecBatchEnv) -> MixedPolicy:
    """π_log: a popularity-prior network, softer than the candidate's (prior_scale 1)."""
    feats = features_for(env)
    return init_policy(PolicyConfig(env.num_items, max_len=20, hidden=32, blocks=1,
                                    item_features=feats.dim, prior_scale=1.0),
                       seed=7, item_features=feats)


def step_truth(env: RecBatchEnv, policy: MixedPolicy, logs: Logs, batch: int = 256
               ) -> np.ndarray:
    """Per logged state: Σ_a π(a|s) r_env(s, a) (uses the simulator: truth only)."""
    out = np.empty(len(logs.actions))
    for s in range(0, len(out), batch):
        sl = slice(s, s + batch)
        dist = candidate_distribution(policy, logs.histories[sl], logs.users[sl])
        rew = env.reward_model.reward_all(logs.users[sl], logs.histories[sl], env.num_items)
        out[sl] = (dist * rew).sum(axis=1)
    return out


def padded(values: np.ndarray, logs: Logs, episodes: int, fill: float) -> np.ndarray:
    """[E, T] array of per-decision ``values`` by (episode, step)."""
    t = int(logs.step.max()) + 1
    out = np.full((episodes, t), fill)
    out[logs.episode, logs.step] = values
    return out


def row(estimand: str, e: Estimate, truth: float, truth_se: float) -> dict[str, Any]:
    d = e.to_dict()
    d.update(estimand=estimand, truth=truth, truth_se=truth_se, covered=e.covers(truth),
             error=e.value - truth)
    return d


def evaluate_env(name: str, checkpoint: str | None, args: argparse.Namespace
                 ) -> dict[str, Any]:
    """Every candidate, estimand and estimator of one environment, for every seed."""
    env = make_env(name, "train")
    cands = candidates(env, checkpoint)
    if args.candidates:
        unknown = set(args.candidates) - set(cands)
        if unknown:
            raise SystemExit(f"unknown candidates {sorted(unknown)}; known: {sorted(cands)}")
        cands = {k: v for k, v in cands.items() if k in args.candidates}
    truths: dict[str, dict[str, float]] = {}
    for cname, pol in cands.items():
        t0 = time.perf_counter()
        on = collect(env, policy_act(pol), args.truth_episodes, seed=10_000)
        rets = np.bincount(on.episode, weights=on.rewards, minlength=args.truth_episodes)
        first = on.rewards[on.step == 0]
        truths[cname] = {"return": float(rets.mean()),
                         "return_se": float(rets.std(ddof=1) / np.sqrt(len(rets))),
                         "first": float(first.mean()),
                         "first_se": float(first.std(ddof=1) / np.sqrt(len(first))),
                         "length": float(len(on.actions) / args.truth_episodes),
                         "r_avg_step": float(on.rewards.mean()),
                         "seconds": time.perf_counter() - t0}
        print(f"[{name}] truth {cname}: {truths[cname]}", flush=True)
    base = logging_base(env)
    rows: list[dict[str, Any]] = []
    logging_info: list[dict[str, Any]] = []
    for seed in args.seeds:
        t0 = time.perf_counter()
        logs = collect(env, logging_act(base, args.uniform), args.episodes, seed=seed)
        e_count = args.episodes
        rets = np.bincount(logs.episode, weights=logs.rewards, minlength=e_count)
        logging_info.append({"seed": seed, "decisions": len(logs.actions),
                             "return": float(rets.mean()),
                             "length": float(len(logs.actions) / e_count),
                             "seconds": time.perf_counter() - t0})
        print(f"[{name}] seed {seed}: logged {len(logs.actions)} decisions", flush=True)
        mask = padded(np.ones(len(logs.actions)), logs, e_count, 0.0).astype(bool)
        for cname, pol in cands.items():
            t1 = time.perf_counter()
            pi, q, v = target_and_cross_direct(pol, logs.histories, logs.users, logs.actions,
                                               logs.rewards, logs.episode, seed=seed)
            tr = step_truth(env, pol, logs)
            common = {"env": name, "candidate": cname, "seed": seed}
            est = step_estimates(logs.rewards, pi, logs.props, q_logged=q, v_target=v,
                                 groups=logs.episode, n_boot=args.bootstrap, seed=seed)
            rows += [{**common, **row("step", e, float(tr.mean()), 0.0)}
                     for e in est.values()]
            f = logs.step == 0
            est = step_estimates(logs.rewards[f], pi[f], logs.props[f], q_logged=q[f],
                                 v_target=v[f], n_boot=args.bootstrap, seed=seed)
            rows += [{**common, **row("first", e, truths[cname]["first"],
                                      truths[cname]["first_se"])} for e in est.values()]
            est = trajectory_estimates(
                padded(logs.rewards, logs, e_count, 0.0),
                padded(pi / logs.props, logs, e_count, 1.0), mask,
                q_logged=padded(q, logs, e_count, 0.0), v_target=padded(v, logs, e_count, 0.0),
                n_boot=args.bootstrap, seed=seed)
            rows += [{**common, **row("return", e, truths[cname]["return"],
                                      truths[cname]["return_se"])} for e in est.values()]
            print(f"[{name}] seed {seed} {cname}: {time.perf_counter() - t1:.1f}s "
                  + " ".join(f"{r['estimand']}/{r['estimator']}={r['value']:.3f}"
                             f"{'' if r['covered'] else '(x)'}"
                             for r in rows[-9:]) + f" truth step={tr.mean():.3f} "
                  f"first={truths[cname]['first']:.3f} return={truths[cname]['return']:.3f}",
                  flush=True)
    ckpt_id = None
    if checkpoint:
        ckpt_id = {"path": checkpoint, "weights_sha1": hashlib.sha1(
            (Path(checkpoint) / "weights.safetensors").read_bytes()).hexdigest()[:16]}
    return {"truth": truths, "logging": logging_info, "rows": rows, "checkpoint": ckpt_id,
            "num_items": env.num_items, "users": len(env.users), "max_steps": env.max_steps}


def coverage(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Covered / total per (estimand, estimator), over environments, candidates, seeds."""
    out: dict[str, Any] = {}
    for r in rows:
        k = f"{r['estimand']}/{r['estimator']}"
        c = out.setdefault(k, {"covered": 0, "total": 0})
        c["covered"] += int(r["covered"])
        c["total"] += 1
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--envs", nargs="+", default=["coat", "lfm"])
    p.add_argument("--checkpoint", action="append", default=[],
                   help="ENV=PATH of a pre-trained θ (the 'pretrained' candidates)")
    p.add_argument("--episodes", type=int, default=2000, help="logged episodes per seed")
    p.add_argument("--truth-episodes", type=int, default=4000)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--uniform", type=float, default=0.2)
    p.add_argument("--candidates", nargs="+", help="evaluate only these candidates")
    p.add_argument("--bootstrap", type=int, default=500)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/ope_validation.json"))
    p.add_argument("--render", type=Path, help="print the Markdown tables of a results file")
    args = p.parse_args()
    if args.render is not None:
        print(render(args.render))
        return
    torch.set_num_threads(1)
    ckpts = dict(x.split("=", 1) for x in args.checkpoint)
    started = time.perf_counter()
    results = {name: evaluate_env(name, ckpts.get(name), args) for name in args.envs}
    all_rows = [r for res in results.values() for r in res["rows"]]
    doc = {
        "benchmark": "ope_validation",
        "command": "nice -n 5 .venv/bin/python benchmarks/ope_validation.py "
                   + " ".join(f"--checkpoint {c}" for c in args.checkpoint)
                   + f" --episodes {args.episodes} --truth-episodes {args.truth_episodes}"
                   + f" --seeds {' '.join(map(str, args.seeds))} --bootstrap {args.bootstrap}"
                   + (f" --candidates {' '.join(args.candidates)}" if args.candidates else "")
                   + f" --out {args.out}",
        "settings": {"episodes": args.episodes, "truth_episodes": args.truth_episodes,
                     "seeds": args.seeds, "uniform": args.uniform,
                     "bootstrap": args.bootstrap, "level": 0.95, "split": "train"},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "torch": torch.__version__, "load_avg_after": list(os.getloadavg())},
        "seconds": time.perf_counter() - started,
        "coverage": coverage(all_rows),
        "results": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    print(json.dumps(doc["coverage"], indent=1))


def render(path: Path) -> str:
    """Markdown tables of a results file: coverage per estimator, then every row of the
    first seed, then the mean estimate over seeds."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    lines = ["| env | estimand | estimator | covered / runs | mean error | mean width |"
             " median ESS |", "|---|---|---|---|---|---|---|"]
    for env, res in doc["results"].items():
        groups: dict[tuple[str, str], list[dict[str, Any]]] = {}
        for r in res["rows"]:
            groups.setdefault((r["estimand"], r["estimator"]), []).append(r)
        for (estimand, est), rs in groups.items():
            err = np.mean([r["error"] for r in rs])
            width = np.mean([r["high"] - r["low"] for r in rs])
            lines.append(f"| {env} | {estimand} | {est} | {sum(r['covered'] for r in rs)}"
                         f" / {len(rs)} | {err:+.3f} | {width:.3f} | "
                         f"{np.median([r['ess'] for r in rs]):.0f} |")
    seed0 = doc["settings"]["seeds"][0]
    lines += ["", f"Seed {seed0}, every row:", "",
              "| env | candidate | estimand | estimator | estimate | 95 % interval | truth |"
              " ESS | covered |", "|---|---|---|---|---|---|---|---|---|"]
    for env, res in doc["results"].items():
        for r in res["rows"]:
            if r["seed"] != seed0:
                continue
            truth = f"{r['truth']:.3f}" + (f" ± {r['truth_se']:.3f}" if r["truth_se"] else "")
            lines.append(f"| {env} | {r['candidate']} | {r['estimand']} | {r['estimator']} | "
                         f"{r['value']:.3f} | [{r['low']:.3f}, {r['high']:.3f}] | {truth} | "
                         f"{r['ess']:.0f} | {'yes' if r['covered'] else '**no**'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
