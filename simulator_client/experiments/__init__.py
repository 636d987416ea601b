"""In-process experiments: methods trained online against a simulated environment.

* :mod:`.context` — ``ExperimentConfig``, ``MethodContext`` and the method registry;
* :mod:`.methods` — the built-in methods (registered on import);
* :mod:`.runner` — one run: train each method, evaluate on the test users;
* :mod:`.report` — tables and learning curves;
* :mod:`.suite` — the paper's experiment suite (Tables 3–5, curves, exploration).
"""

from simulator_client.experiments.context import (
    CURVE_METRICS,
    ExperimentConfig,
    MethodContext,
    MethodFactory,
    learner_agent,
    register_method,
)
from simulator_client.experiments.report import plot_curves, table_rows
from simulator_client.experiments.runner import (
    available_methods,
    build_agent,
    item_feature_config,
    policy_config_for,
    run_experiment,
    train_method,
)

__all__ = ["CURVE_METRICS", "ExperimentConfig", "MethodContext", "MethodFactory",
           "available_methods", "build_agent", "item_feature_config", "learner_agent",
           "plot_curves", "policy_config_for", "register_method", "run_experiment",
           "table_rows", "train_method"]
