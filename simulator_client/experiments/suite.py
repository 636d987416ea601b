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
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from policy.exploration import STRATEGIES
from simulator_client.experiments.runner import available_methods, run_experiment
from simulator_client.experiments.suite_config import (
    A2C_HYPER,
    EXPLORE_METHODS,
    PAPER_METHODS,
    SuiteConfig,
    experiment_config,
    mode_settings,
)
from simulator_client.experiments.suite_report import aggregate, plot_suite, write_results_md


def code_version(root: str | Path | None = None) -> dict[str, Any]:
    """The code a suite runs: ``{"commit": sha, "dirty": bool}`` of the git work tree at
    ``root`` (default: this package's checkout); ``{}`` outside a git checkout.

    Worker processes import some modules only when a task first needs them, so a file
    edited while a suite runs can reach part of its results: a result is reproducible
    from its commit only when ``dirty`` is false (run suites from a clean clone)."""
    where = Path(root) if root is not None else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, check=True,
                                capture_output=True, text=True, timeout=10).stdout.strip()
        status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                cwd=where, check=True, capture_output=True, text=True,
                                timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {}
    return {"commit": commit, "dirty": bool(status.strip())}


RUNTIME_PACKAGES = ("torch", "numpy", "scipy", "vowpalwabbit", "transformers",
                    "sentence-transformers", "peft")
"""Packages whose versions a suite records: their numerics reach the results."""


def runtime_info() -> dict[str, Any]:
    """Where a suite runs: Python, CPU model and the versions of :data:`RUNTIME_PACKAGES`
    (``null`` when not installed). Short pre-training runs are chaotic (a last-bit change
    in a float can move a seed's R@0 by tens of points), so a different CPU or library
    version can change results that the same commit produced elsewhere."""
    import platform
    from importlib import metadata

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions: dict[str, str | None] = {}
    for name in RUNTIME_PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {"python": platform.python_version(), "cpu": cpu, "packages": versions}


def _registered(methods: Sequence[str]) -> list[str]:
    known = set(available_methods())
    return [m for m in methods if m in known]


_ENVS: dict[str, tuple[Any, Any]] = {}


"""Environments built in this process, by name (a worker reuses them across tasks)."""


def _envs(env_name: str, progress: bool) -> tuple[Any, Any]:
    from simulator_client.envs.by_name import make_env

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
              docs_dir: str | Path | None = None, jobs: int = 1,
              docs_name: str = "results") -> dict[str, Any]:
    """Run every method on every environment and seed, aggregate, plot, and (with
    ``docs_dir``) regenerate ``docs_dir/<docs_name>.md``. Returns the suite summary.

    The work is split into (environment, seed) tasks; ``jobs > 1`` runs that many at once
    in worker processes (one torch thread each, progress bars off), which is how two
    cores are both used. Results do not depend on ``jobs``: each task is seeded alone.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    cpu0 = _cpu_seconds()
    code = code_version()
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
    summary["runtime"] = runtime_info()
    # Dirty if a tracked file changed at the start or at any time up to the end.
    end = code_version()
    summary["code"] = {**code, "dirty": bool(code.get("dirty") or end.get("dirty")
                                              or end.get("commit") != code.get("commit"))
                       } if code else {}
    (out / "suite.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    plot_suite(summary, out)
    if docs_dir is not None:
        write_results_md(out / "suite.json", docs_dir, name=docs_name)
    return summary


__all__ = ["A2C_HYPER", "EXPLORE_METHODS", "PAPER_METHODS", "RUNTIME_PACKAGES", "SuiteConfig",
           "aggregate", "code_version", "experiment_config", "mode_settings", "plot_suite",
           "run_suite", "runtime_info", "write_results_md"]
