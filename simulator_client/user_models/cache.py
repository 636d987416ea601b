"""Content-addressed on-disk cache for trained user models."""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import asdict, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np

from simulator_client.datasets.paths import cache_dir


def cache_key(kind: str, fingerprint: str, config: Any) -> str:
    """A stable key over the data fingerprint and the full model configuration."""
    cfg = asdict(config) if is_dataclass(config) and not isinstance(config, type) else config
    blob = json.dumps({"kind": kind, "data": fingerprint, "config": cfg}, sort_keys=True)
    return f"{kind}-{hashlib.sha256(blob.encode()).hexdigest()[:20]}"


def cache_path(key: str) -> Path:
    """The ``.npz`` file that holds the artifact for ``key``."""
    return cache_dir() / f"{key}.npz"


def load_arrays(key: str) -> dict[str, np.ndarray] | None:
    """The cached arrays for ``key``, or ``None`` when absent or unreadable."""
    path = cache_path(key)
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            return {name: data[name] for name in data.files}
    except (OSError, ValueError):
        # A truncated file from an interrupted run: rebuild rather than fail.
        return None


def save_arrays(key: str, arrays: dict[str, np.ndarray]) -> Path:
    """Write ``arrays`` atomically (temp file + rename) so readers never see half a file."""
    path = cache_path(key)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp.npz")
    os.close(fd)
    try:
        np.savez(tmp, **arrays)  # type: ignore[arg-type]
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path
