"""GenEE's settings: :class:`GEEConfig` (the ``gee`` hyperparameters) and the names of the
proposers that need no language model. The method itself is described in the package
docstring (:mod:`trainer.gee`)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from policy.settings import settings_from

PROPOSERS_BUILTIN = ("embedding",)
"""Proposers that need no language model; any other ``proposer`` string is a judge spec."""


@dataclass(frozen=True)
class GEEConfig:
    """Settings of GenEE (``--hyper '{"gee": {...}}'``)."""

    pool_size: int = 5
    """Items in the initial pool (the paper: 5)."""
    drop: int = 1
    """Items dropped (and new items proposed) per iteration (the paper: 1)."""
    iterations: int = 15
    """Pools measured; the pool is updated after each measurement but the last."""
    impressions: int | None = None
    """Impressions (served interactions) per iteration; None: inside an experiment of N
    training interactions, N // iterations (at least 1)."""
    exploit_share: float = 0.5
    """Share of new items proposed by exploit (the rest explore), by the deterministic
    credit rule of the package docstring (0.5 with ``drop=1``: exploit and explore
    alternate, exploit first)."""
    explore: bool = True
    """False: every new item is an exploit proposal (the "no exploration" ablation)."""
    random_ctr: bool = False
    """Replace the CTRs used for dropping and shown to the exploit proposer by uniform
    random numbers (ablation; the real CTRs are still logged)."""
    no_drop: bool = False
    """Drop nothing; new items are added, so the pool grows (ablation)."""
    exploit_top: int = 2
    """Best-CTR pool items the exploit rule builds on (the embedding centroid) and best
    items of the history listed in the exploit prompt."""
    init: str = "random"
    """Initial pool: ``random`` (uniform over the catalogue, seeded) or ``explore`` (the
    proposer's explore rule, one item at a time)."""
    proposer: str = "embedding"
    """``embedding`` (no language model; see :class:`EmbeddingProposer`) or judge options
    of an LLM backend, e.g. ``--judge openai --base-url URL --model M`` or
    ``--judge hf --model-path smollm2``."""
    max_new_tokens: int = 24
    """LLM proposers: reply length cap (a name or title fits)."""
    explore_fraction: float = 0.05
    """Embedding explore: draw among this share of items farthest from the pool."""
    seed: int | None = None
    """Seeds the initial pool, serving, the random CTRs and the proposers' draws; None:
    the experiment's seed."""

    def __post_init__(self) -> None:
        if self.pool_size < 1 or self.iterations < 1:
            raise ValueError("pool_size and iterations must be positive")
        if self.drop < 0 or (self.drop >= self.pool_size and not self.no_drop):
            raise ValueError(f"drop must lie in [0, pool_size) (got {self.drop} with "
                             f"pool_size {self.pool_size})")
        if self.impressions is not None and self.impressions < 1:
            raise ValueError("impressions must be positive")
        if not 0.0 <= self.exploit_share <= 1.0:
            raise ValueError("exploit_share must lie in [0, 1]")
        if self.exploit_top < 1:
            raise ValueError("exploit_top must be positive")
        if self.init not in ("random", "explore"):
            raise ValueError(f"init must be 'random' or 'explore', not {self.init!r}")
        if not 0.0 < self.explore_fraction <= 1.0:
            raise ValueError("explore_fraction must lie in (0, 1]")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be positive")

    @classmethod
    def from_hyper(cls, hyper: dict[str, Any]) -> GEEConfig:
        """The config of a method's hyperparameters; unknown keys are an error that names
        the known ones."""
        return settings_from(cls, hyper, "gee")

    def impressions_for(self, steps: int) -> int:
        """Impressions per iteration inside a run of ``steps`` interactions."""
        if self.impressions is not None:
            return self.impressions
        return max(1, steps // self.iterations)
