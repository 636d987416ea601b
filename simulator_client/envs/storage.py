"""Built sequential environments: validation, storage under the cache folder, manifests,
and the user models trained for each split (``ialp env build``, ``make_env``)."""

from __future__ import annotations

import json
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from simulator_client.datasets.errors import DatasetError
from simulator_client.datasets.paths import cache_dir
from simulator_client.datasets.sequences import (
    SequenceDataset,
    load_sequence_dataset,
    write_sequence_dataset,
)
from simulator_client.envs.sequential import (
    PatienceLeaveRule,
    RankReward,
    SequentialEnv,
    SequentialEnvConfig,
    prefix_lengths,
    split_users,
)
from simulator_client.user_models.sequential import (
    SequentialModelConfig,
    SequentialUserModel,
    train_sequential_model,
    training_fingerprint,
)

BUILTIN_SEQUENTIAL = ("lfm", "industry")
"""Environments built from the shared data rather than user-supplied files."""
RESERVED_NAMES = ("coat",)
"""Names taken by environments of another kind."""
MANIFEST_VERSION = 1
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


def envs_root() -> Path:
    """Folder holding every built sequential environment (one sub-folder per name)."""
    return cache_dir() / "envs"


def env_folder(name: str) -> Path:
    """Where environment ``name`` is stored."""
    return envs_root() / name


def check_name(name: str) -> None:
    """Reject names that are not safe folder names or clash with other environments."""
    if not NAME_RE.match(name):
        raise ValueError(
            f"invalid environment name {name!r}: use 1-64 lower-case letters, digits, "
            "'.', '_' or '-', starting with a letter or digit"
        )
    if name in RESERVED_NAMES:
        raise ValueError(f"environment name {name!r} is reserved")


def built_names() -> list[str]:
    """Names of the environments stored under :func:`envs_root`."""
    root = envs_root()
    if not root.is_dir():
        return []
    return sorted(p.parent.name for p in root.glob("*/manifest.json"))


def read_manifest(name: str) -> dict[str, Any] | None:
    """The manifest of a built environment, or ``None`` when it is not built."""
    path = env_folder(name) / "manifest.json"
    if not path.is_file():
        return None
    with path.open(encoding="utf-8") as fh:
        data: dict[str, Any] = json.load(fh)
    return data


def _write_manifest(name: str, manifest: dict[str, Any]) -> Path:
    folder = env_folder(name)
    folder.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".json.tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        json.dump(manifest, fh, indent=2, sort_keys=True)
        fh.write("\n")
    path = folder / "manifest.json"
    os.replace(tmp, path)
    return path


def load_builtin_dataset(name: str) -> SequenceDataset:
    if name == "lfm":
        from simulator_client.datasets.lfm import load_lfm

        return load_lfm()
    if name == "industry":
        from simulator_client.datasets.industry import load_industry

        return load_industry()
    raise KeyError(name)


def _config_from(cls: type, data: dict[str, Any] | None) -> Any:
    """Rebuild a frozen config dataclass from a manifest dict (unknown keys ignored)."""
    if not data:
        return cls()
    names = {f.name for f in fields(cls)}
    return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class BuildResult:
    """What :func:`build_environment` did."""

    name: str
    folder: Path
    manifest: dict[str, Any] = field(repr=False)


def prepare_environment(
    name: str,
    *,
    sequences: Path | str | None = None,
    items: Path | str | None = None,
    env_config: SequentialEnvConfig | None = None,
    model_config: SequentialModelConfig | None = None,
) -> BuildResult:
    """Validate the dataset, store it in the generic format and write the manifest.

    ``lfm`` and ``industry`` are converted from the shared data (no files given); any other
    name needs ``sequences`` and ``items`` files in the generic format.
    """
    check_name(name)
    env_config = env_config or SequentialEnvConfig()
    model_config = model_config or SequentialModelConfig()
    if name in BUILTIN_SEQUENTIAL:
        if sequences is not None or items is not None:
            raise ValueError(
                f"{name!r} is built from the shared data; choose another name for your files"
            )
        dataset = load_builtin_dataset(name)
        source = {"kind": "shared-data", "dataset": name}
    else:
        if sequences is None or items is None:
            raise ValueError("building a custom environment needs --sequences and --items")
        dataset = load_sequence_dataset(sequences, items, name=name)
        source = {
            "kind": "files",
            "sequences": str(Path(sequences).resolve()),
            "items": str(Path(items).resolve()),
        }
    folder = env_folder(name)
    write_sequence_dataset(dataset, folder)
    train_users, test_users = split_users(
        dataset.num_users, env_config.test_fraction, env_config.split_seed
    )
    manifest = {
        "format_version": MANIFEST_VERSION,
        "name": name,
        "source": source,
        "files": {"sequences": "sequences.tsv", "items": "items.tsv"},
        "fingerprint": dataset.fingerprint,
        "counts": {
            "users": dataset.num_users,
            "items": dataset.num_items,
            "interactions": dataset.num_interactions,
            "train_users": len(train_users),
            "test_users": len(test_users),
        },
        "item_columns": list(dataset.item_columns),
        "has_ratings": dataset.ratings is not None,
        "env_config": asdict(env_config),
        "model_config": asdict(model_config),
        "models": {},
    }
    _write_manifest(name, manifest)
    return BuildResult(name=name, folder=folder, manifest=manifest)


def _stored_dataset(name: str, manifest: dict[str, Any]) -> SequenceDataset:
    folder = env_folder(name)
    dataset = load_sequence_dataset(
        folder / manifest["files"]["sequences"], folder / manifest["files"]["items"], name=name
    )
    if dataset.fingerprint != manifest["fingerprint"]:
        raise DatasetError(
            "stored files do not match the manifest (edited after the build?); run "
            f"`ialp env build --name {name} ...` again",
            path=folder,
        )
    return dataset


def _ensure_manifest(name: str) -> dict[str, Any]:
    manifest = read_manifest(name)
    if manifest is None:
        if name not in BUILTIN_SEQUENTIAL:
            raise KeyError(f"unknown environment {name!r}: build it with `ialp env build`")
        manifest = prepare_environment(name).manifest
    return manifest


@dataclass(frozen=True)
class _Parts:
    dataset: SequenceDataset
    env_config: SequentialEnvConfig
    model_config: SequentialModelConfig
    train_users: np.ndarray
    test_users: np.ndarray


def _parts(name: str) -> tuple[_Parts, dict[str, Any]]:
    manifest = _ensure_manifest(name)
    dataset = _stored_dataset(name, manifest)
    env_config = _config_from(SequentialEnvConfig, manifest.get("env_config"))
    model_config = _config_from(SequentialModelConfig, manifest.get("model_config"))
    train_users, test_users = split_users(
        dataset.num_users, env_config.test_fraction, env_config.split_seed
    )
    return _Parts(dataset, env_config, model_config, train_users, test_users), manifest


def _model_for(parts: _Parts, split: str, *, progress: bool) -> SequentialUserModel:
    ds = parts.dataset
    if split == "train":
        users, holdout, cfg = parts.train_users, parts.test_users, parts.model_config
    else:
        mode = parts.env_config.test_model_users
        if mode not in ("test", "all"):
            raise ValueError(f"test_model_users must be 'test' or 'all', not {mode!r}")
        users = parts.test_users if mode == "test" else np.arange(ds.num_users)
        holdout = parts.train_users
        # A different seed as well as different data: the two models must not coincide.
        cfg = replace(parts.model_config, seed=parts.model_config.seed + 1)
    return train_sequential_model(
        [ds.sequences[u] for u in users],
        ds.num_items,
        fingerprint=training_fingerprint(ds.fingerprint, users, ds.num_items),
        config=cfg,
        item_text=ds.item_text,
        ratings=[ds.ratings[u] for u in users] if ds.ratings is not None else None,
        holdout=[ds.sequences[u] for u in holdout],
        progress=progress,
        desc=f"{ds.name} {split} user model",
    )


def make_sequential_env(
    name: str, split: str = "test", *, progress: bool = True
) -> SequentialEnv:
    """Build the ``"train"`` or ``"test"`` environment of a sequential dataset.

    ``lfm`` and ``industry`` are prepared from the shared data on first use; custom names
    must have been built with ``ialp env build``. Models train once and are cached.
    """
    if split not in ("train", "test"):
        raise ValueError(f"split must be 'train' or 'test', not {split!r}")
    parts, _ = _parts(name)
    cfg = parts.env_config
    model = _model_for(parts, split, progress=progress)
    train_model = model if split == "train" else _model_for(parts, "train", progress=progress)
    ds = parts.dataset
    users = parts.train_users if split == "train" else parts.test_users
    return SequentialEnv(
        dataset=ds,
        prefixes=prefix_lengths(ds, cfg),
        user_model=model,
        env_config=cfg,
        name=f"{name}-{split}",
        num_items=ds.num_items,
        users=users,
        reward_model=RankReward(model, repeat_reward=cfg.repeat_reward),
        leave_rule=PatienceLeaveRule(
            initial=cfg.initial_patience,
            satisfied=cfg.satisfied_reward,
            recovery=cfg.patience_recovery,
        ),
        max_steps=cfg.max_steps,
        history_window=cfg.history_window,
        # One representation for both splits: the training model's item embeddings.
        item_vectors=train_model.item_embeddings(),
        item_popularity=ds.item_popularity(parts.train_users),
        item_text=ds.item_text,
        item_ids=ds.item_ids,
    )


def build_environment(
    name: str,
    *,
    sequences: Path | str | None = None,
    items: Path | str | None = None,
    env_config: SequentialEnvConfig | None = None,
    model_config: SequentialModelConfig | None = None,
    progress: bool = True,
) -> BuildResult:
    """Prepare ``name`` (see :func:`prepare_environment`), train both user models and
    record their metrics in the manifest."""
    result = prepare_environment(
        name, sequences=sequences, items=items, env_config=env_config, model_config=model_config
    )
    parts, manifest = _parts(name)
    models: dict[str, Any] = {}
    for split in ("train", "test"):
        model = _model_for(parts, split, progress=progress)
        models[split] = {k: round(v, 6) for k, v in sorted(model.metrics.items())}
    manifest["models"] = models
    _write_manifest(name, manifest)
    return BuildResult(name=name, folder=result.folder, manifest=manifest)


def sequential_stats(name: str) -> dict[str, Any]:
    """Dataset statistics of a sequential environment (no model training)."""
    parts, manifest = _parts(name)
    ds = parts.dataset
    prefixes = prefix_lengths(ds, parts.env_config)
    lens = np.asarray([len(s) for s in ds.sequences])
    return {
        "name": name,
        "users": ds.num_users,
        "items": ds.num_items,
        "interactions": ds.num_interactions,
        "train_users": len(parts.train_users),
        "test_users": len(parts.test_users),
        "train_interactions": int(lens[parts.train_users].sum()),
        "test_interactions": int(lens[parts.test_users].sum()),
        "items_used": int((ds.item_popularity() > 0).sum()),
        "sequence_length": ds.length_stats(),
        "initial_history_length_mean": float(prefixes.mean()),
        "continuation_length_mean": float((lens - prefixes).mean()),
        "has_ratings": ds.ratings is not None,
        "item_columns": list(ds.item_columns),
        "source": manifest.get("source"),
        "folder": str(env_folder(name)),
        "models": manifest.get("models", {}),
    }
