"""Where datasets and caches live."""

from __future__ import annotations

import os
from pathlib import Path

from simulator_client.datasets.errors import DatasetError

_REPO_ROOT = Path(__file__).resolve().parents[2]


def data_dir() -> Path:
    """The dataset root: ``$IALP_DATA_DIR``, else ``../shared/data`` when it exists.

    ``../shared/data`` is looked up beside the current directory first and then beside the
    project checkout, so commands work from the repository root and from elsewhere.
    """
    env = os.environ.get("IALP_DATA_DIR")
    if env:
        return Path(env).expanduser()
    for base in (Path.cwd(), _REPO_ROOT):
        candidate = (base / ".." / "shared" / "data").resolve()
        if candidate.is_dir():
            return candidate
    raise DatasetError(
        "no dataset directory found: set IALP_DATA_DIR to the folder holding coat/, "
        "lastfm_llara/ and amazon_industrial_scientific/ (or place it at ../shared/data)"
    )


def dataset_file(relative: str, *, expected: str, source: str) -> Path:
    """Resolve ``relative`` under :func:`data_dir`, raising a helpful error if missing."""
    path = data_dir() / relative
    if not path.is_file():
        raise DatasetError("file not found", path=path, expected=expected, source=source)
    return path


def cache_dir() -> Path:
    """Where trained user models and other derived artifacts are cached.

    ``$IALP_CACHE_DIR``, else ``$XDG_CACHE_HOME/ialp``, else ``~/.cache/ialp``.
    """
    env = os.environ.get("IALP_CACHE_DIR")
    if env:
        path = Path(env).expanduser()
    else:
        xdg = os.environ.get("XDG_CACHE_HOME")
        path = (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "ialp"
    path.mkdir(parents=True, exist_ok=True)
    return path
