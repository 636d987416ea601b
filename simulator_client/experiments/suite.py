"""The paper's experiment suite (sections 5–6): every method on every environment, several
seeds, Tables 3–5, learning curves (Figures 4–7), exploration strategies (Figures 8–9).

``ialp experiment --suite paper [--quick] --env coat,lfm,industry --seeds 0,1,2 --out DIR``
runs :func:`run_suite`, which for each environment builds the training and test
environments once and, for each seed, calls :func:`simulator_client.experiments.run_experiment`
with all methods (same seed, same users, same evaluation episodes). Then
:func:`aggregate` reads the per-run ``results.json`` files back into ``DIR/suite.json``
(means and standard deviations over seeds), :func:`plot_suite` draws the PNGs, and
:func:`write_results_md` regenerates ``docs/results.md`` from ``suite.json`` alone.

Definitions used by the tables:

* R@0, Len@0, Ravg@0 (Table 3): the evaluation before any online update (step 0).
* Epoch (Table 4): ``eval_every`` training interactions (the first evaluation after step
  0): 2,500 interactions in the full suite (5 % of its 50k budget), 250 in ``--quick``,
  a tenth of the budget with ``--suite-steps``.
* Final (Table 5): the evaluation after the last training interaction.

Every evaluation plays ``eval_episodes`` episodes in the *test* environment with the
method's deployed exploration (categorical sampling unless stated).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from policy.exploration import STRATEGIES
from simulator_client.experiments.context import ExperimentConfig
from simulator_client.experiments.methods.ialp import QUICK_PRETRAIN
from simulator_client.experiments.runner import available_methods, run_experiment
from trainer.learners import ONLINE_A2C
from trainer.runner import OnlineConfig

PAPER_METHODS = ("random", "popular", "sasrec", "vw-bandit", "dqn", "pg", "a2c", "ialp",
                 "ialp-sampled", "ialp-ft", "ialp-ap", "ialp-ap-random", "llm-online")
"""Table rows, in order; methods not registered in this build (``llm-online``) are skipped.
The peers (popular list, supervised SASRec, VW bandit) see the same training logs and
item features as the learned methods."""
EXPLORE_METHODS = ("a2c", "ialp-ap")
"""Methods compared under each exploration strategy (Figures 8–9)."""
LABELS = {"random": "random", "popular": "popular (training logs)",
          "sasrec": "SASRec next-item (supervised)", "ialp-sampled": "iALP (sampled)",
          "dqn": "DQN", "pg": "PG", "a2c": "A2C", "ialp": "iALP", "ialp-ft": "A-iALP_ft",
          "ialp-ap": "A-iALP_ap", "ialp-ap-random": "A-iALP_ap (β random)",
          "llm-online": "LLMOnline", "vw-bandit": "VW cb_explore_adf"}
METRICS = ("return", "length", "r_avg")

# One A2C setting for every actor-critic (A2C, A-iALP_ft, β of A-iALP_ap): the settings
# that learn on Coat (docs/experiments-baselines.md), so the comparison is like for like.
A2C_HYPER: dict[str, Any] = dict(ONLINE_A2C)
ALPHA_HANDOVER = 150
"""Learner updates after which A-iALP_ap's α reaches 1 (≈ 2.5k interactions at one update
per 16). Industry, seed 0, 20k interactions: 67.43 with 150 against 49 with half the
run's updates (621), whose slow hand-over left π̃ mostly θ for 10k interactions."""


@dataclass(frozen=True)
class SuiteConfig:
    """What one suite run does."""

    envs: tuple[str, ...] = ("coat", "lfm", "industry")
    """Environments (registered names)."""
    seeds: tuple[int, ...] = (0, 1, 2)
    """Seeds; every method runs once per seed and environment."""
    quick: bool = False
    """Small budgets (minutes on two cores) instead of the paper's 50k interactions."""
    methods: tuple[str, ...] = PAPER_METHODS
    """Methods of Tables 3–5 (unregistered ones are skipped)."""
    explore_methods: tuple[str, ...] = EXPLORE_METHODS
    """Methods of the exploration comparison; empty = skip it."""
    explore_seeds: tuple[int, ...] | None = None
    """Seeds of the exploration comparison (None: the first seed in quick mode, else all)."""
    experiment: dict[str, Any] = field(default_factory=dict)
    """Overrides of the mode's :class:`ExperimentConfig` fields (``online`` as a dict)."""
    command: str = ""
    """The command line, recorded in suite.json and docs/results.md."""


def mode_settings(quick: bool) -> dict[str, Any]:
    """ExperimentConfig fields (without seed) of the full or the quick suite."""
    # alpha_steps is recomputed by experiment_config: min(ALPHA_HANDOVER, half the updates).
    if quick:
        steps, every, episodes, alpha_steps = 1_000, 250, 24, 27
        pretrain: dict[str, Any] = dict(QUICK_PRETRAIN)
        online = {"batch_size": 64, "warmup": 128, "updates_per_step": 1,
                  "mask_history": True}
    else:
        steps, every, episodes, alpha_steps = 50_000, 2_500, 200, 1_554
        pretrain = {"epochs": 5, "horizon": 20, "users": 512}
        online = {"batch_size": 64, "warmup": 256, "updates_per_step": 1,
                  "mask_history": True}
    ap = {**A2C_HYPER, "alpha_schedule": "linear", "alpha_start": 0.0,
          "alpha_steps": alpha_steps}
    hyper = {"a2c": A2C_HYPER, "ialp-ft": A2C_HYPER, "ialp-ap": ap,
             "dqn": {"lr": 0.003}, "pg": {"lr": 0.003}, "ialp": {"pretrain": pretrain}}
    return {"steps": steps, "eval_every": every, "eval_episodes": episodes, "num_envs": 16,
            "hidden": 32, "blocks": 1, "max_len": 20, "user_embedding": True,
            "online": online, "hyper": hyper}


def experiment_config(cfg: SuiteConfig, seed: int) -> ExperimentConfig:
    """The ExperimentConfig of one (environment, seed) run."""
    fields_ = mode_settings(cfg.quick)
    over = dict(cfg.experiment)
    if "hyper" in over:  # merge per method, so an override of one key keeps the others
        hyper = {k: dict(v) for k, v in fields_["hyper"].items()}
        for name, values in over.pop("hyper").items():
            hyper.setdefault(name, {}).update(values)
        fields_["hyper"] = hyper
    online = {**fields_.pop("online"), **over.pop("online", {})}
    fields_.update(over)
    ap = fields_["hyper"]["ialp-ap"]
    if "alpha_steps" not in cfg.experiment.get("hyper", {}).get("ialp-ap", {}):
        # α reaches 1 after ALPHA_HANDOVER updates, or half-way through shorter runs.
        updates = (fields_["steps"] - online["warmup"]) / fields_["num_envs"]
        half = int(updates * online["updates_per_step"] / 2)
        ap["alpha_steps"] = max(1, min(ALPHA_HANDOVER, half))
    return ExperimentConfig(seed=seed, online=OnlineConfig(**online), **fields_)


def _registered(methods: Sequence[str]) -> list[str]:
    known = set(available_methods())
    return [m for m in methods if m in known]


_ENVS: dict[str, tuple[Any, Any]] = {}
"""Environments built in this process, by name (a worker reuses them across tasks)."""


def _envs(env_name: str, progress: bool) -> tuple[Any, Any]:
    from simulator_client.registry import make_env

    if env_name not in _ENVS:
        _ENVS[env_name] = (make_env(env_name, "train", progress=progress),
                           make_env(env_name, "test", progress=progress))
    return _ENVS[env_name]


def _cpu_seconds() -> float:
    """CPU time (user + system) of this process and its finished children: on a shared
    machine the wall time says more about the neighbours than about the suite."""
    import resource

    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _explore_seeds(cfg: SuiteConfig) -> tuple[int, ...]:
    if cfg.explore_seeds is not None:
        return cfg.explore_seeds
    return cfg.seeds[:1] if cfg.quick else cfg.seeds


def _run_task(cfg: SuiteConfig, env_name: str, seed: int, kind: str, out: Path,
              progress: bool) -> tuple[str, float]:
    """One (environment, seed) run of the tables (``kind="main"``) or of the exploration
    comparison (``"explore"``); returns (environment, wall seconds)."""
    import torch

    torch.set_num_threads(1)  # small networks: one thread per process is fastest
    t0 = time.perf_counter()
    train_env, test_env = _envs(env_name, progress)
    if kind == "main":
        methods, where = _registered(cfg.methods), out / env_name / f"seed{seed}"
    else:
        methods = [f"{m}+{s}" for m in _registered(cfg.explore_methods) for s in STRATEGIES]
        where = out / "explore" / env_name / f"seed{seed}"
    run_experiment(env_name, train_env, test_env, methods, experiment_config(cfg, seed),
                   out_dir=where, progress=progress)
    return env_name, time.perf_counter() - t0


def run_suite(cfg: SuiteConfig, out_dir: str | Path, *, progress: bool = True,
              docs_dir: str | Path | None = None, jobs: int = 1) -> dict[str, Any]:
    """Run every method on every environment and seed, aggregate, plot, and (with
    ``docs_dir``) regenerate ``docs_dir/results.md``. Returns the suite summary.

    The work is split into (environment, seed) tasks; ``jobs > 1`` runs that many at once
    in worker processes (one torch thread each, progress bars off), which is how two
    cores are both used. Results do not depend on ``jobs``: each task is seeded alone.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    cpu0 = _cpu_seconds()
    tasks = [(e, s, "main") for e in cfg.envs for s in cfg.seeds]
    if _registered(cfg.explore_methods):
        tasks += [(e, s, "explore") for e in cfg.envs for s in _explore_seeds(cfg)]
    busy: dict[str, float] = dict.fromkeys(cfg.envs, 0.0)
    if jobs > 1 and len(tasks) > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor, as_completed

        ctx = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=min(jobs, len(tasks)), mp_context=ctx) as pool:
            futures = [pool.submit(_run_task, cfg, e, s, k, out, False) for e, s, k in tasks]
            for i, fut in enumerate(as_completed(futures), 1):
                env_name, seconds = fut.result()
                busy[env_name] += seconds
                if progress:
                    print(f"[{i}/{len(tasks)}] a {env_name} run finished in "
                          f"{seconds / 60:.1f} min", flush=True)
    else:
        for e, s, k in tasks:
            busy[e] += _run_task(cfg, e, s, k, out, progress)[1]
    methods = _registered(cfg.methods)
    explore = [f"{m}+{s}" for m in _registered(cfg.explore_methods) for s in STRATEGIES]
    summary = aggregate(out, cfg, methods=methods, explore=explore)
    summary["wall_seconds"] = {"total": time.perf_counter() - started}
    summary["cpu_seconds"] = _cpu_seconds() - cpu0
    summary["busy_seconds"] = busy
    summary["jobs"] = jobs
    (out / "suite.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    plot_suite(summary, out)
    if docs_dir is not None:
        write_results_md(out / "suite.json", docs_dir)
    return summary


# -- aggregation ------------------------------------------------------------------------
def _stats(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std()), "n": len(arr)}


def _aggregate_runs(files: list[Path], methods: Sequence[str]) -> dict[str, Any]:
    """Per method: curve (mean/std per evaluation point) and the three table points."""
    runs = [json.loads(f.read_text()) for f in files]
    out: dict[str, Any] = {}
    for name in methods:
        curves = [r["methods"][name]["curve"] for r in runs if name in r["methods"]]
        if not curves:
            continue
        points = min(len(c) for c in curves)
        curve = []
        for i in range(points):
            row: dict[str, Any] = {"step": float(np.mean([c[i]["step"] for c in curves]))}
            for key in METRICS:
                row[key] = _stats([c[i][key] for c in curves])
            curve.append(row)
        seconds = [r["methods"][name]["train"]["seconds"] for r in runs if name in r["methods"]]
        out[name] = {
            "curve": curve,
            "at0": curve[0],
            "at1": curve[1] if points > 1 else curve[0],
            "final": curve[-1],
            "seeds": len(curves),
            "seconds": _stats(seconds),
        }
    return out


def aggregate(out: Path, cfg: SuiteConfig, *, methods: Sequence[str],
              explore: Sequence[str]) -> dict[str, Any]:
    """Read every run's results.json under ``out`` into the suite summary."""
    example = experiment_config(cfg, cfg.seeds[0])
    summary: dict[str, Any] = {
        "suite": "paper", "quick": cfg.quick, "envs": list(cfg.envs), "seeds": list(cfg.seeds),
        "methods": list(methods), "explore_methods": list(explore), "command": cfg.command,
        "experiment": asdict(replace(example, seed=-1)),
        "epoch_interactions": example.eval_every, "results": {}, "explore": {},
        "labels": LABELS,
    }
    for env_name in cfg.envs:
        files = sorted((out / env_name).glob("seed*/results.json"))
        if files:
            summary["results"][env_name] = _aggregate_runs(files, methods)
        files = sorted((out / "explore" / env_name).glob("seed*/results.json"))
        if files and explore:
            summary["explore"][env_name] = _aggregate_runs(files, explore)
    summary["checks"] = _checks(summary)
    return summary


def _checks(summary: dict[str, Any]) -> dict[str, Any]:
    """The acceptance checks per environment: A-iALP_ap's R@0 ≥ 2 × A2C's and its final
    Return ≥ A2C's; A-iALP_ap's final Return ≥ 1.2 × the popularity list's and ≥ the VW
    bandit's; A2C's final Return ≥ 3 × random's (each where both methods ran)."""
    checks: dict[str, Any] = {}
    for env_name, res in summary["results"].items():
        def final(name: str, _res: dict[str, Any] = res) -> float | None:
            return float(_res[name]["final"]["return"]["mean"]) if name in _res else None

        peers: dict[str, Any] = {}
        ap, pop, vw = final("ialp-ap"), final("popular"), final("vw-bandit")
        a2c, rnd = final("a2c"), final("random")
        if ap is not None and pop is not None:
            peers["ap_over_popular"] = ap / pop if pop else float("inf")
            peers["ap_at_least_1_2_popular"] = bool(ap >= 1.2 * pop)
        if ap is not None and vw is not None:
            peers["ap_minus_vw"] = ap - vw
            peers["ap_at_least_vw"] = bool(ap >= vw)
        if a2c is not None and rnd is not None:
            peers["a2c_over_random"] = a2c / rnd if rnd else float("inf")
            peers["a2c_at_least_3_random"] = bool(a2c >= 3 * rnd)
        if peers:
            checks.setdefault(env_name, {}).update(peers)
        if "ialp-ap" not in res or "a2c" not in res:
            continue
        ap0, a2c0 = res["ialp-ap"]["at0"]["return"]["mean"], res["a2c"]["at0"]["return"]["mean"]
        apf, a2cf = (res["ialp-ap"]["final"]["return"]["mean"],
                     res["a2c"]["final"]["return"]["mean"])
        checks.setdefault(env_name, {}).update({
            "r0_ratio": ap0 / a2c0 if a2c0 else float("inf"),
            "r0_at_least_twice": bool(ap0 >= 2 * a2c0),
            "final_gap": apf - a2cf,
            "final_at_least_a2c": bool(apf >= a2cf),
        })
    return checks


# -- plots ------------------------------------------------------------------------------
def _band(ax: Any, curve: list[dict[str, Any]], key: str, label: str) -> None:
    x = np.asarray([p["step"] for p in curve])
    m = np.asarray([p[key]["mean"] for p in curve])
    s = np.asarray([p[key]["std"] for p in curve])
    (line,) = ax.plot(x, m, marker="o", ms=3, label=label)
    ax.fill_between(x, m - s, m + s, color=line.get_color(), alpha=0.15)


def plot_suite(summary: dict[str, Any], out: Path) -> list[Path]:
    """curves-<env>.png (Return and Length, mean ± std over seeds; Figures 4–7) and
    explore-<env>.png (Figures 8–9). Returns the written paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = summary.get("labels", LABELS)
    written = []
    n_seeds = len(summary["seeds"])
    for env_name, res in summary["results"].items():
        fig, axes = plt.subplots(1, 2, figsize=(12, 4))
        for name, agg in res.items():
            for ax, key in zip(axes, ("return", "length"), strict=True):
                _band(ax, agg["curve"], key, labels.get(name, name))
        for ax, title in zip(axes, ("Return", "Length"), strict=True):
            ax.set_title(f"{env_name}: test {title}")
            ax.set_xlabel("training interactions")
            ax.grid(alpha=0.3)
        axes[0].legend(fontsize=8)
        fig.suptitle(f"{env_name}: mean ± std over {n_seeds} seeds")
        fig.tight_layout()
        path = out / f"curves-{env_name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    for env_name, res in summary["explore"].items():
        fig, axes = plt.subplots(2, len(STRATEGIES), figsize=(13, 6.5), squeeze=False)
        for col, strat in enumerate(STRATEGIES):
            for name, agg in res.items():
                base, _, s = name.partition("+")
                if s != strat:
                    continue
                for row, key in enumerate(("return", "length")):
                    _band(axes[row][col], agg["curve"], key, labels.get(base, base))
            axes[0][col].set_title({"epsilon": "ε-greedy", "categorical": "categorical",
                                    "greedy": "greedy"}[strat])
            for row, key in enumerate(("Return", "Length")):
                axes[row][col].set_ylabel(key)
                axes[row][col].grid(alpha=0.3)
                axes[1][col].set_xlabel("training interactions")
            axes[0][col].legend(fontsize=8)
        fig.suptitle(f"{env_name}: exploration strategies (test environment)")
        fig.tight_layout()
        path = out / f"explore-{env_name}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


# -- docs/results.md --------------------------------------------------------------------
def _fmt(stat: dict[str, float], digits: int = 2) -> str:
    if stat.get("n", 2) < 2:
        return f"{stat['mean']:.{digits}f} (1 seed)"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def _table(summary: dict[str, Any], point: str, suffix: str) -> list[str]:
    labels = summary.get("labels", LABELS)
    envs = list(summary["results"])
    head = "| Method | " + " | ".join(
        f"{e} R{suffix} | {e} Len{suffix} | {e} Ravg{suffix}" for e in envs) + " |"
    lines = [head, "|---|" + "---:|" * (3 * len(envs))]
    for name in summary["methods"]:
        cells = []
        for e in envs:
            agg = summary["results"][e].get(name)
            if agg is None:
                cells += ["–"] * 3
                continue
            p = agg[point]
            cells += [_fmt(p["return"]), _fmt(p["length"]), _fmt(p["r_avg"], 3)]
        lines.append(f"| {labels.get(name, name)} | " + " | ".join(cells) + " |")
    return lines


def _reading(summary: dict[str, Any]) -> list[str]:
    """Plain statements computed from the numbers (no claim without its number)."""
    out = []
    for env_name, res in summary["results"].items():
        def m(name: str, point: str, key: str = "return", _res: dict[str, Any] = res) -> float:
            return float(_res[name][point][key]["mean"]) if name in _res else float("nan")

        scratch = [n for n in ("dqn", "pg", "a2c") if n in res]
        best0 = max(scratch, key=lambda n: m(n, "at0")) if scratch else None
        bestf = max(res, key=lambda n: m(n, "final"))
        line = f"* **{env_name}**: "
        if "ialp" in res and best0 is not None:
            line += (f"iALP starts at R@0 = {m('ialp', 'at0'):.2f} against "
                     f"{m(best0, 'at0'):.2f} for the best from-scratch method "
                     f"({LABELS.get(best0, best0)}), a ratio of "
                     f"{m('ialp', 'at0') / max(m(best0, 'at0'), 1e-9):.2f}. ")
        if "ialp-ap" in res and "a2c" in res:
            line += (f"After one epoch A-iALP_ap has {m('ialp-ap', 'at1'):.2f} vs A2C "
                     f"{m('a2c', 'at1'):.2f}; final Return {m('ialp-ap', 'final'):.2f} vs "
                     f"{m('a2c', 'final'):.2f}. ")
        if "ialp-ap" in res and "ialp-ap-random" in res:
            line += (f"β copied from θ ends at {m('ialp-ap', 'final'):.2f}, a random β at "
                     f"{m('ialp-ap-random', 'final'):.2f}. ")
        line += (f"Highest final Return: {LABELS.get(bestf, bestf)} "
                 f"({m(bestf, 'final'):.2f}).")
        out.append(line)
    return out


def write_results_md(suite_json: str | Path, docs_dir: str | Path) -> Path:
    """Regenerate ``docs_dir/results.md`` (and copy the figures to ``docs_dir/img`` and
    the summary to ``docs_dir/results/paper-suite.json``) from a suite.json file."""
    src = Path(suite_json)
    summary = json.loads(src.read_text())
    docs = Path(docs_dir)
    (docs / "img").mkdir(parents=True, exist_ok=True)
    (docs / "results").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(src, docs / "results" / "paper-suite.json")
    figs = []
    for png in sorted(src.parent.glob("*.png")):
        if png.name.startswith(("curves-", "explore-")):
            dest = docs / "img" / f"results-{png.name}"
            shutil.copyfile(png, dest)
            figs.append(dest.name)
    exp = summary["experiment"]
    mode = "quick" if summary["quick"] else "full"
    wall = summary.get("wall_seconds", {})
    lines = [
        "# Results: the paper's experiments on our environments",
        "",
        "Generated by `ialp experiment --suite paper` from `results/paper-suite.json`; do not "
        "edit by hand (the analysis that is not generated lives in "
        "[results-notes.md](results-notes.md)).",
        "",
        "## Command",
        "",
        "```bash",
        summary.get("command") or "ialp experiment --suite paper ...",
        "```",
        "",
        f"Mode: **{mode}**. Environments: {', '.join(summary['envs'])}; seeds "
        f"{', '.join(str(s) for s in summary['seeds'])} (every method, same seeds, same test "
        f"users). Budget per run: {exp['steps']:,} training interactions "
        f"({exp['num_envs']} users in parallel), evaluation every {exp['eval_every']:,} "
        f"interactions on {exp['eval_episodes']} test episodes. One epoch (Table 4) = "
        f"{summary['epoch_interactions']:,} interactions. Network: SASRec H = {exp['hidden']}, "
        f"{exp['blocks']} block(s), window {exp['max_len']}; history masking "
        f"{'on' if exp['online']['mask_history'] else 'off'}. Wall time: "
        f"{wall.get('total', float('nan')) / 60:.1f} min with {summary.get('jobs', 1)} "
        f"worker process(es), {summary.get('cpu_seconds', float('nan')) / 60:.1f} CPU-minutes "
        "(user + system, all processes); wall time of the runs per environment: "
        + ", ".join(f"{k} {v / 60:.1f} min" for k, v in summary.get("busy_seconds", {}).items())
        + ". Values are mean ± std over seeds.",
        "",
        "## Table 3: initial performance (epoch 0)",
        "",
        *_table(summary, "at0", "@0"),
        "",
        "## Table 4: after one epoch",
        "",
        *_table(summary, "at1", "@1"),
        "",
        "## Table 5: final performance",
        "",
        *_table(summary, "final", ""),
        "",
        "## Acceptance check: A-iALP_ap against A2C",
        "",
        "| Env | R@0 ratio (A-iALP_ap / A2C) | ≥ 2 | final Return gap (A-iALP_ap − A2C) | ≥ 0 |",
        "|---|---:|:-:|---:|:-:|",
    ]
    def yes(flag: Any) -> str:
        return "–" if flag is None else ("yes" if flag else "no")

    def num(value: Any, fmt: str) -> str:
        return "–" if value is None else format(value, fmt)

    for env_name, c in summary.get("checks", {}).items():
        if "r0_ratio" in c:
            lines.append(f"| {env_name} | {c['r0_ratio']:.2f} | "
                         f"{yes(c['r0_at_least_twice'])} | {c['final_gap']:+.2f} | "
                         f"{yes(c['final_at_least_a2c'])} |")
    lines += ["", "## Acceptance check: against the peers (final Return)", "",
              "| Env | A-iALP_ap / popular | ≥ 1.2 | A-iALP_ap − VW | ≥ 0 | A2C / random | ≥ 3 |",
              "|---|---:|:-:|---:|:-:|---:|:-:|"]
    for env_name, c in summary.get("checks", {}).items():
        lines.append(
            f"| {env_name} | {num(c.get('ap_over_popular'), '.2f')} | "
            f"{yes(c.get('ap_at_least_1_2_popular'))} | {num(c.get('ap_minus_vw'), '+.2f')} | "
            f"{yes(c.get('ap_at_least_vw'))} | {num(c.get('a2c_over_random'), '.2f')} | "
            f"{yes(c.get('a2c_at_least_3_random'))} |")
    lines += ["", "## Reading (computed from the tables)", "", *_reading(summary), "",
              "## Figures", ""]
    for name in figs:
        lines += [f"![{name}](img/{name})", ""]
    if summary.get("explore"):
        lines += ["Exploration comparison: the final Return per strategy.", "",
                  "| Env | Method | " + " | ".join(STRATEGIES) + " |",
                  "|---|---|" + "---:|" * len(STRATEGIES)]
        for env_name, res in summary["explore"].items():
            bases = sorted({n.partition("+")[0] for n in res})
            for base in bases:
                cells = [_fmt(res[f"{base}+{s}"]["final"]["return"]) if f"{base}+{s}" in res
                         else "–" for s in STRATEGIES]
                lines.append(f"| {env_name} | {LABELS.get(base, base)} | "
                             + " | ".join(cells) + " |")
        lines.append("")
    path = docs / "results.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


__all__ = ["A2C_HYPER", "EXPLORE_METHODS", "PAPER_METHODS", "SuiteConfig", "aggregate",
           "experiment_config", "mode_settings", "plot_suite", "run_suite", "write_results_md"]
