"""The paper suite's configuration: methods, labels, the quick and full budgets, and the
experiment settings of one (environment, seed) run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from simulator_client.experiments.context import ExperimentConfig
from simulator_client.experiments.methods.ialp import QUICK_PRETRAIN
from trainer.agents import OnlineConfig
from trainer.learners import ONLINE_A2C, ONLINE_AP

PAPER_METHODS = ("random", "popular", "sasrec", "vw-bandit", "dqn", "pg", "a2c", "ialp",
                 "ialp-sampled", "ialp-ft", "ialp-ap", "ialp-ap-random", "llm-online",
                 "laac", "laac-ap", "gee", "gee-exploit", "gee-random-ctr", "gee-no-drop")


"""Table rows, in order; methods not registered in this build (``llm-online``) are skipped.
The peers (popular list, supervised SASRec, VW bandit) see the same training logs and
item features as the learned methods."""


EXPLORE_METHODS = ("a2c", "ialp-ap")


"""Methods compared under each exploration strategy (Figures 8–9)."""


LABELS = {"random": "random", "popular": "popular (training logs)",
          "sasrec": "SASRec next-item (supervised)", "ialp-sampled": "iALP (sampled)",
          "dqn": "DQN", "pg": "PG", "a2c": "A2C", "ialp": "iALP", "ialp-ft": "A-iALP_ft",
          "ialp-ap": "A-iALP_ap", "ialp-ap-random": "A-iALP_ap (β random)",
          "ialp-ap-copy": "A-iALP_ap (β copy of θ)",
          "llm-online": "LLMOnline", "vw-bandit": "VW cb_explore_adf",
          "laac": "LAAC", "laac-ap": "LAAC + A-iALP_ap", "gee": "GenEE",
          "gee-exploit": "GenEE (exploit only)", "gee-random-ctr": "GenEE (random CTR)",
          "gee-no-drop": "GenEE (no drop)"}


METRICS = ("return", "length", "r_avg")


BEYOND_METRICS = ("diversity", "novelty", "coverage")
"""Beyond-accuracy metrics of every evaluation (``simulator_client.metrics``), aggregated
where the environment provides them; the suite's Table 6."""


A2C_HYPER: dict[str, Any] = dict(ONLINE_A2C)
AP_HYPER: dict[str, Any] = dict(ONLINE_AP)


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
        pretrain = {"epochs": 5, "horizon": 20, "users": 512, "candidates": "topk",
                    "listwise": 1.0}
        online = {"batch_size": 64, "warmup": 256, "updates_per_step": 1,
                  "mask_history": True}
    ap = {**AP_HYPER, "alpha_schedule": "linear", "alpha_start": 0.0,
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
