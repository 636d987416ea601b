"""The network shape an experiment gives its learned methods (``policy_config_for``)."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from policy.checkpoint import build_network
from simulator_client.experiments.context import ExperimentConfig
from simulator_client.experiments.runner import policy_config_for

ENV = SimpleNamespace(num_items=40, users=np.arange(7), history_window=50)


@pytest.mark.parametrize("item_ids", [True, False])
def test_item_ids_setting_reaches_the_network(item_ids: bool) -> None:
    """``item_ids=False`` (``--no-item-ids``) builds heads without free per-item rows:
    items are scored through their features only."""
    cfg = policy_config_for(ENV, ExperimentConfig(item_ids=item_ids))  # type: ignore[arg-type]
    assert cfg.item_ids is item_ids and cfg.item_features > 0 and cfg.num_users == 7
    net = build_network(cfg, seed=0)
    names = {n for n, _ in net.named_parameters()}
    assert any(n.endswith("id_vec") for n in names) is item_ids
    assert any(n.endswith("id_bias") for n in names) is item_ids
