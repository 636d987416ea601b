"""Dataset loaders. Every loader reads from :func:`data_dir` and fails with a clear error."""

from simulator_client.datasets.errors import DatasetError
from simulator_client.datasets.paths import data_dir, dataset_file

__all__ = ["DatasetError", "data_dir", "dataset_file"]
