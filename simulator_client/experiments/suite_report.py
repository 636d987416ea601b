"""The paper suite's results: aggregation over seeds, acceptance checks, plots and the
regenerated ``docs/results.md``."""

from __future__ import annotations

import json
import shutil
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from policy.exploration import STRATEGIES
from simulator_client.experiments.suite_config import (
    BEYOND_METRICS,
    LABELS,
    METRICS,
    SuiteConfig,
    experiment_config,
)


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
            for key in BEYOND_METRICS:
                if all(key in c[i] for c in curves):
                    row[key] = _stats([c[i][key] for c in curves])
            curve.append(row)
        seconds = [r["methods"][name]["train"]["seconds"] for r in runs if name in r["methods"]]
        ctr = _ctr_curve([r["methods"][name] for r in runs if name in r["methods"]])
        ranking = _ranking([r["methods"][name] for r in runs if name in r["methods"]])
        out[name] = {
            "curve": curve,
            "at0": curve[0],
            "at1": curve[1] if points > 1 else curve[0],
            "final": curve[-1],
            "seeds": len(curves),
            "seconds": _stats(seconds),
            **({"ctr_curve": ctr} if ctr else {}),
            **({"ranking": ranking} if ranking else {}),
        }
    return out


RANKING_METRICS = ("hr@10", "ndcg@10")
"""Offline next-item accuracy of a run's final model (``runner.train_method``'s
``"ranking"``), aggregated over seeds; the last columns of Table 6."""


def _ranking(results: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """HR@10 and NDCG@10 (mean ± std over the seeds that recorded them); empty for a
    method without a ranking (e.g. the VW bandit)."""
    ranked = [r["ranking"] for r in results if r.get("ranking")]
    return {key: _stats([r[key] for r in ranked]) for key in RANKING_METRICS
            if ranked and all(key in r for r in ranked)}


def _ctr_curve(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """GenEE methods: the pool's CTR per iteration (training impressions), mean ± std
    over the seeds that measured that iteration; empty for every other method."""
    from trainer.gee import ctr_curve

    curves = [dict(ctr_curve(r.get("report") or {})) for r in results]
    iterations = sorted({i for c in curves for i in c})
    return [{"iteration": i, "ctr": _stats([c[i] for c in curves if i in c])}
            for i in iterations]


STABILITY_FACTOR = 10.0
"""A logged loss or Q value above this many times the largest reachable Return fails the
stability check (issue: "no loss or Q value explodes")."""


def _stability(files: list[Path]) -> dict[str, Any]:
    """The largest |loss| and |Q| logged by any update of any run under ``files`` (online
    learning and, for iALP methods, Algorithm 1's pre-training of θ), against
    ``STABILITY_FACTOR`` × the training environment's largest reachable Return."""
    worst = {"loss": (0.0, ""), "value": (0.0, ""), "pretrain_loss": (0.0, ""),
             "pretrain_value": (0.0, "")}
    non_finite, runs, bound = 0, 0, None
    for f in files:
        doc = json.loads(f.read_text())
        if doc.get("max_return") is not None:
            bound = STABILITY_FACTOR * float(doc["max_return"])
        for name, res in doc["methods"].items():
            sources = [("", res.get("train", {}).get("extremes"))]
            sources.append(("pretrain_", (res.get("pretrain") or {}).get("extremes")))
            for prefix, ext in sources:
                if not ext:
                    continue
                runs += 1
                non_finite += int(ext["non_finite"])
                for kind in ("loss", "value"):
                    val = float(ext[f"max_{kind}"])
                    if val > worst[prefix + kind][0]:
                        worst[prefix + kind] = (val, name)
    out: dict[str, Any] = {"bound": bound, "non_finite": non_finite, "logs": runs}
    for key, (val, name) in worst.items():
        out[f"max_{key}"], out[f"max_{key}_method"] = val, name
    largest = max(v for v, _ in worst.values())
    out["holds"] = bool(non_finite == 0 and bound is not None and largest <= bound)
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
            summary.setdefault("stability", {})[env_name] = _stability(files)
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
    for env_name, res in summary["results"].items():
        gee = {name: agg["ctr_curve"] for name, agg in res.items() if agg.get("ctr_curve")}
        if not gee:
            continue
        fig, ax = plt.subplots(figsize=(7, 4))
        for name, curve in gee.items():
            x = np.asarray([p["iteration"] for p in curve])
            m = np.asarray([p["ctr"]["mean"] for p in curve])
            sd = np.asarray([p["ctr"]["std"] for p in curve])
            (line,) = ax.plot(x, m, marker="o", ms=3, label=labels.get(name, name))
            ax.fill_between(x, m - sd, m + sd, color=line.get_color(), alpha=0.15)
        ax.set_xlabel("iteration")
        ax.set_ylabel("CTR (mean reward per impression)")
        ax.set_title(f"{env_name}: GenEE pool CTR per iteration, mean ± std over {n_seeds} "
                     "seeds")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        path = out / f"curves-gee-{env_name}.png"
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


def _code_line(code: dict[str, Any]) -> str:
    """The sentence naming the commit the results came from."""
    if not code.get("commit"):
        return "Code version: not recorded."
    if code.get("dirty"):
        return (f"Code: commit {code['commit'][:10]} **with uncommitted changes** (the "
                "results may not be reproducible from the commit).")
    return f"Code: commit {code['commit'][:10]}, no uncommitted changes."


def _runtime_line(runtime: dict[str, Any]) -> str:
    """The sentence naming the CPU and library versions (empty when not recorded)."""
    if not runtime:
        return ""
    pkgs = ", ".join(f"{k} {v}" for k, v in runtime.get("packages", {}).items() if v)
    return f" Runtime: Python {runtime.get('python')}, {runtime.get('cpu')}; {pkgs}."


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


def _beyond_table(summary: dict[str, Any]) -> list[str]:
    """Table 6: diversity, novelty and coverage of the final evaluation, and the final
    model's HR@10 and NDCG@10 on the test users' held-out last items."""
    labels = summary.get("labels", LABELS)
    envs = list(summary["results"])
    head = "| Method | " + " | ".join(
        f"{e} diversity | {e} novelty | {e} coverage | {e} HR@10 | {e} NDCG@10"
        for e in envs) + " |"
    per_env = len(BEYOND_METRICS) + len(RANKING_METRICS)
    lines = [head, "|---|" + "---:|" * (per_env * len(envs))]
    for name in summary["methods"]:
        cells = []
        for e in envs:
            agg = summary["results"][e].get(name)
            final = agg["final"] if agg is not None else {}
            ranking = (agg or {}).get("ranking", {})
            cells += [_fmt(final[k], 3) if k in final else "–" for k in BEYOND_METRICS]
            cells += [_fmt(ranking[k], 3) if k in ranking else "–" for k in RANKING_METRICS]
        lines.append(f"| {labels.get(name, name)} | " + " | ".join(cells) + " |")
    return lines


def _ctr_table(summary: dict[str, Any]) -> list[str]:
    """GenEE: the pool's CTR at the first and the last iteration (mean ± std over seeds)."""
    labels = summary.get("labels", LABELS)
    lines: list[str] = []
    for env_name, res in summary["results"].items():
        for name, agg in res.items():
            curve = agg.get("ctr_curve")
            if not curve:
                continue
            first, last = curve[0]["ctr"], curve[-1]["ctr"]
            lines.append(f"| {env_name} | {labels.get(name, name)} | {len(curve)} | "
                         f"{_fmt(first, 3)} | {_fmt(last, 3)} | "
                         f"{last['mean'] - first['mean']:+.3f} |")
    if not lines:
        return []
    return ["## GenEE: the pool's CTR per iteration", "",
            "CTR = mean reward per impression of the served pool in one iteration of "
            "training interactions (the environments' rewards are graded, so this is the "
            "CTR analogue); first and last measured iteration, mean ± std over seeds. "
            "Figures: `curves-gee-<env>.png`.", "",
            "| Env | Method | iterations | CTR first | CTR last | change |",
            "|---|---|---:|---:|---:|---:|", *lines, ""]


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
            line += (f"β copied from θ (A-iALP_ap) ends at {m('ialp-ap', 'final'):.2f}, a "
                     f"random β at {m('ialp-ap-random', 'final'):.2f}. ")
        line += (f"Highest final Return: {LABELS.get(bestf, bestf)} "
                 f"({m(bestf, 'final'):.2f}).")
        out.append(line)
    return out


def write_results_md(suite_json: str | Path, docs_dir: str | Path, *,
                     name: str = "results") -> Path:
    """Regenerate ``docs_dir/<name>.md`` (and copy the figures to ``docs_dir/img`` and
    the summary to ``docs_dir/results/<json name>``) from a suite.json file. The paper
    suite is ``results`` (summary ``paper-suite.json``); another name keeps its own page,
    figures (``img/<name>-*.png``) and summary (``results/<name>.json``)."""
    if not name or any(c in name for c in "/\\. "):
        raise ValueError(f"the page name {name!r} must be a plain file stem, e.g. 'results'")
    src = Path(suite_json)
    summary = json.loads(src.read_text())
    docs = Path(docs_dir)
    (docs / "img").mkdir(parents=True, exist_ok=True)
    (docs / "results").mkdir(parents=True, exist_ok=True)
    page = name  # ("name" is reused by the loops below)
    json_name = "paper-suite.json" if page == "results" else f"{page}.json"
    shutil.copyfile(src, docs / "results" / json_name)
    figs = []
    for png in sorted(src.parent.glob("*.png")):
        if png.name.startswith(("curves-", "explore-")):
            dest = docs / "img" / f"{page}-{png.name}"
            shutil.copyfile(png, dest)
            figs.append(dest.name)
    exp = summary["experiment"]
    mode = "quick" if summary["quick"] else "full"
    wall = summary.get("wall_seconds", {})
    lines = [
        "# Results: the paper's experiments on our environments",
        "",
        f"Generated by `ialp experiment --suite paper` from `results/{json_name}`; do not "
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
        + ". Values are mean ± std over seeds. " + _code_line(summary.get("code") or {})
        + _runtime_line(summary.get("runtime") or {}),
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
        "## Table 6: beyond accuracy (final evaluation)",
        "",
        "Diversity: mean pairwise cosine distance between the items of an episode (item "
        "vectors of the environment); novelty: mean −log2 of the recommended items' "
        "share of the training interactions (higher = less popular); coverage: distinct "
        "items recommended over all test episodes / catalogue size "
        "(definitions in `simulator_client/metrics.py`). HR@10 and NDCG@10: offline "
        "accuracy of the final model, leave-last-out on each test user's log (Coat: the "
        "rated items, least to most liked): the model scores every item given the rest of "
        "the log, history items are excluded from the ranking, and the held-out last item "
        "counts as a hit when it ranks in the top 10 (NDCG: 1 / log2(rank + 1), ties "
        "broken at random); users whose last item is already in their history are "
        "skipped. On Coat the test users and logs are the training ones, so this is an "
        "in-sample fit there. – : the method cannot score the whole catalogue "
        "(`simulator_client/evaluation.py`, `next_item_ranking`).",
        "",
        *_beyond_table(summary),
        "",
        *_ctr_table(summary),
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
    if summary.get("stability"):
        lines += ["", "## Stability: the largest logged loss and Q value", "",
                  f"Every update of every run above (and of the pre-training of θ behind the "
                  f"iALP rows) logs its losses and Q values (mean and largest |Q(s,a)| of the "
                  f"batch, the mean TD target). The check: none is non-finite and none "
                  f"exceeds {STABILITY_FACTOR:g} × the training environment's largest "
                  f"reachable Return (cap × largest one-step reward).", "",
                  "| Env | bound | largest loss (method) | largest Q (method) | "
                  "pre-training: largest loss | largest Q | non-finite | holds |",
                  "|---|---:|---:|---:|---:|---:|---:|:-:|"]
        for env_name, st in summary["stability"].items():
            lines.append(
                f"| {env_name} | {num(st['bound'], '.0f')} | {st['max_loss']:.3g} "
                f"({LABELS.get(st['max_loss_method'], st['max_loss_method'])}) | "
                f"{st['max_value']:.3g} "
                f"({LABELS.get(st['max_value_method'], st['max_value_method'])}) | "
                f"{st['max_pretrain_loss']:.3g} | {st['max_pretrain_value']:.3g} | "
                f"{st['non_finite']} | {yes(st['holds'])} |")
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
    path = docs / f"{page}.md"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
