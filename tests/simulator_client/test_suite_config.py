"""How the suite's command-line overrides reach each run's ExperimentConfig."""

from __future__ import annotations

from simulator_client.experiments.suite_config import SuiteConfig, experiment_config


def test_greedy_evaluation_and_log_subset_reach_every_run() -> None:
    base = experiment_config(SuiteConfig(quick=True), seed=1)
    assert base.online.eval_explore and base.logs == "all"
    cfg = SuiteConfig(quick=True, experiment={"online": {"eval_explore": False},
                                              "logs": "imbalanced", "steps": 500})
    run = experiment_config(cfg, seed=1)
    # The override changes only what it names: the mode's other online settings stay.
    assert not run.online.eval_explore and run.online.mask_history
    assert run.online.batch_size == base.online.batch_size
    assert run.logs == "imbalanced" and run.steps == 500 and run.seed == 1
