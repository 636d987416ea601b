"""Session-wide test settings: deterministic torch, a persistent model cache, data checks."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest_plugins = ["tests.redis_fixtures"]

ROOT = Path(__file__).resolve().parents[1]

# Trained user models are cached by content hash; keep them across test runs in the repo's
# ignored cache folder unless the caller chose another location.
os.environ.setdefault("IALP_CACHE_DIR", str(ROOT / ".ialp_cache" / "test"))


def pytest_configure(config: pytest.Config) -> None:
    import torch

    # Two cores: one intra-op thread keeps parallel test processes from thrashing.
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def shared_data_dir() -> Path:
    """The real dataset folder (IALP_DATA_DIR or ../shared/data)."""
    from simulator_client.datasets.paths import data_dir

    path = data_dir()
    if not (path / "coat" / "train.ascii").is_file():
        pytest.fail(f"datasets not found under {path}: set IALP_DATA_DIR")
    return path
