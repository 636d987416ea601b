"""Versioned policy checkpoints: a directory, or a byte string for publication.

Directory layout (written atomically: a temporary sibling directory renamed into place)::

    weights.safetensors   theta.* (and beta.* for scheme "ap") tensors
    config.json           PolicyConfig
    meta.json             format, version, alpha, scheme, head, exploration, metadata,
                          and beta_pool when π_β is restricted to a pool of items

Byte format (``policy_to_bytes``): the magic ``IALPPOL1``, a 4-byte little-endian header
length, a UTF-8 JSON header holding config.json and meta.json, then the safetensors bytes.
No pickle anywhere, so a blob from the bus can never execute code.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import struct
import uuid
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as st_load
from safetensors.torch import load_file, save_file
from safetensors.torch import save as st_save

from policy.actor_critic import ActorCritic
from policy.config import PolicyConfig
from policy.exploration import ExplorationConfig
from policy.item_features import ItemFeatures
from policy.mixed import MixedPolicy

log = logging.getLogger(__name__)

FORMAT = 1
MAGIC = b"IALPPOL1"
WEIGHTS = "weights.safetensors"
CONFIG = "config.json"
META = "meta.json"


class CheckpointError(ValueError):
    """A checkpoint is missing, malformed, or does not fit the expected catalogue."""


def now_iso() -> str:
    """Current UTC time, ISO 8601 with seconds."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def build_network(
    config: PolicyConfig, *, seed: int, item_features: ItemFeatures | None = None
) -> ActorCritic:
    """A freshly initialised network; the global torch RNG is left untouched.

    ``item_features`` fills the item table of a network with ``config.item_features`` > 0
    (without it the table stays zero, to be loaded from a checkpoint or copied)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = ActorCritic(config)
    if item_features is not None:
        if item_features.dim != config.item_features or (
                item_features.num_items != config.num_items):
            raise ValueError(
                f"item features are [{item_features.num_items}, {item_features.dim}] but the "
                f"network expects [{config.num_items}, {config.item_features}]")
        net.set_item_features(torch.from_numpy(item_features.matrix),
                              torch.from_numpy(item_features.prior))
    return net


def init_policy(
    config: PolicyConfig, *, seed: int, item_features: ItemFeatures | None = None
) -> MixedPolicy:
    """An untrained plain policy (scheme ``none``, version 0)."""
    net = build_network(config, seed=seed, item_features=item_features)
    net.eval()
    meta = {"created_at": now_iso(), "parent_version": None, "updates": 0, "init_seed": seed}
    return MixedPolicy(net, scheme="none", version=0, metadata=meta)


def local_policy(
    checkpoint: str | Path | None, *, num_items: int, max_len: int, seed: int
) -> MixedPolicy:
    """The policy a process starts from when Redis holds none: the checkpoint if one is
    configured, else an untrained policy over ``num_items`` (the API and the trainer both
    start this way)."""
    if checkpoint is not None:
        return load_checkpoint(checkpoint)
    log.warning("no checkpoint given: starting from an untrained policy over %d items",
                num_items)
    return init_policy(PolicyConfig(num_items=num_items, max_len=max_len), seed=seed)


# -- serialisation helpers -------------------------------------------------------------
def _tensors(policy: MixedPolicy) -> dict[str, torch.Tensor]:
    out: dict[str, torch.Tensor] = {}
    nets = [("theta", policy.theta)] + ([("beta", policy.beta)] if policy.beta else [])
    for prefix, net in nets:
        for name, tensor in net.state_dict().items():
            out[f"{prefix}.{name}"] = tensor.detach().cpu().contiguous().clone()
    return out


def _meta(policy: MixedPolicy) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "format": FORMAT,
        "version": policy.version,
        "alpha": policy.alpha,
        "scheme": policy.scheme,
        "head": policy.head,
        "q_temperature": policy.q_temperature,
        "exploration": asdict(policy.exploration),
        "metadata": policy.metadata,
    }
    if policy.beta_pool is not None:
        # Only when set: an unrestricted policy's meta stays as it always was.
        meta["beta_pool"] = list(policy.beta_pool)
    return meta


def _check_items(config: PolicyConfig, expected: int | None, where: str) -> None:
    if expected is not None and config.num_items != expected:
        raise CheckpointError(
            f"{where}: the policy was built for {config.num_items} items but the catalogue "
            f"has {expected}; train or convert a policy for this catalogue"
        )


def _assemble(
    config: PolicyConfig, meta: dict[str, Any], tensors: dict[str, torch.Tensor], where: str
) -> MixedPolicy:
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{where}: unsupported checkpoint format {meta.get('format')!r}")
    nets: dict[str, ActorCritic] = {}
    for prefix in ("theta", "beta"):
        part = {k[len(prefix) + 1 :]: v for k, v in tensors.items() if k.startswith(prefix + ".")}
        if not part:
            continue
        net = ActorCritic(config)
        try:
            net.load_state_dict(part, strict=True)
        except RuntimeError as exc:
            raise CheckpointError(f"{where}: weights do not match the config: {exc}") from exc
        net.eval()
        nets[prefix] = net
    if "theta" not in nets:
        raise CheckpointError(f"{where}: no theta.* weights")
    pool = meta.get("beta_pool")
    if pool is not None and not isinstance(pool, list):
        raise CheckpointError(f"{where}: beta_pool must be a list of item indices")
    return MixedPolicy(
        nets["theta"],
        nets.get("beta"),
        alpha=float(meta["alpha"]),
        scheme=str(meta["scheme"]),
        version=int(meta["version"]),
        metadata=dict(meta.get("metadata") or {}),
        head=str(meta.get("head", "actor")),
        q_temperature=float(meta.get("q_temperature", 1.0)),
        exploration=ExplorationConfig(**meta.get("exploration", {})),
        beta_pool=pool,
    )


# -- directories -------------------------------------------------------------------------
def save_checkpoint(policy: MixedPolicy, directory: str | Path) -> Path:
    """Write ``policy`` into ``directory`` (created or atomically replaced); returns it."""
    target = Path(directory).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.parent / f".{target.name}.tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        save_file(_tensors(policy), str(tmp / WEIGHTS))
        meta = _meta(policy)
        meta["saved_at"] = now_iso()
        for name, obj in ((CONFIG, policy.config.to_dict()), (META, meta)):
            with open(tmp / name, "w", encoding="utf-8") as fh:
                json.dump(obj, fh, indent=2, sort_keys=True)
                fh.flush()
                os.fsync(fh.fileno())
        if target.exists():
            # Swap: readers see either the old or the new directory, never a mix.
            old = target.parent / f".{target.name}.old-{uuid.uuid4().hex}"
            os.rename(target, old)
            os.rename(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.rename(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def load_checkpoint(path: str | Path, *, expected_num_items: int | None = None) -> MixedPolicy:
    """Load a directory written by :func:`save_checkpoint`.

    Raises :class:`CheckpointError` when files are missing or when ``expected_num_items``
    differs from the checkpoint's catalogue size.
    """
    root = Path(path)
    for name in (WEIGHTS, CONFIG, META):
        if not (root / name).is_file():
            raise CheckpointError(f"{root}: missing {name}; not a policy checkpoint")
    config = PolicyConfig.from_dict(json.loads((root / CONFIG).read_text(encoding="utf-8")))
    _check_items(config, expected_num_items, str(root))
    meta = json.loads((root / META).read_text(encoding="utf-8"))
    return _assemble(config, meta, load_file(str(root / WEIGHTS)), str(root))


# -- bytes ---------------------------------------------------------------------------------
def policy_to_bytes(policy: MixedPolicy) -> bytes:
    """Serialise for publication through Redis (see the module docstring)."""
    header = json.dumps(
        {"config": policy.config.to_dict(), "meta": _meta(policy)}, sort_keys=True
    ).encode("utf-8")
    return MAGIC + struct.pack("<I", len(header)) + header + st_save(_tensors(policy))


def policy_from_bytes(blob: bytes, *, expected_num_items: int | None = None) -> MixedPolicy:
    """Inverse of :func:`policy_to_bytes`."""
    if len(blob) < len(MAGIC) + 4 or not blob.startswith(MAGIC):
        raise CheckpointError("not a serialised policy (bad magic)")
    (size,) = struct.unpack_from("<I", blob, len(MAGIC))
    start = len(MAGIC) + 4
    if start + size > len(blob):
        raise CheckpointError("truncated policy blob")
    header = json.loads(blob[start : start + size].decode("utf-8"))
    config = PolicyConfig.from_dict(header["config"])
    _check_items(config, expected_num_items, "policy blob")
    tensors = st_load(bytes(blob[start + size :]))
    return _assemble(config, header["meta"], tensors, "policy blob")
