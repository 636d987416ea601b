"""Folders of trained artefacts cached across runs (pre-trained πθ, LAAC actors): one key
per set of inputs, written beside and renamed into place."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from policy.item_features import ItemFeatures
from simulator_client.datasets.paths import cache_dir


def cache_folder(kind: str, env_name: str, ident: dict[str, Any],
                 item_features: ItemFeatures | None = None) -> Path:
    """``<cache>/<kind>/<env>-<key>``, the key a digest of ``ident`` (JSON, sorted keys)
    and of the item features when given: any change of the inputs is a new folder."""
    doc = dict(ident)
    if item_features is not None:
        doc["items"] = hashlib.sha1(item_features.matrix.tobytes()
                                    + item_features.prior.tobytes()).hexdigest()
    key = hashlib.sha1(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]
    return cache_dir() / kind / f"{env_name}-{key}"


def write_atomically(out: Path, write: Callable[[Path], object]) -> None:
    """Fill ``out`` by ``write(folder)`` on a private folder beside it, then rename it into
    place: an interrupted or concurrent run never leaves a half-written artefact that
    later runs would trust. A folder already at ``out`` is a stale partial one (callers
    write only when the complete artefact is missing) and is replaced; when another
    process renames its own first, theirs is kept."""
    tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    write(tmp)
    if out.exists():
        shutil.rmtree(out, ignore_errors=True)
    try:
        tmp.rename(out)
    except OSError:  # another process finished the same artefact first: keep theirs
        shutil.rmtree(tmp, ignore_errors=True)
