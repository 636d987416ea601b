"""Architecture settings of the SASRec actor-critic; saved in every checkpoint."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class PolicyConfig:
    """Shape of the policy network. Two checkpoints with equal configs are interchangeable."""

    num_items: int
    """Catalogue size I: the actor and critic heads have one output per item."""
    max_len: int = 50
    """History window the encoder reads: the most recent ``max_len`` items of a state."""
    hidden: int = 64
    """Width H of item, position and state embeddings."""
    heads: int = 2
    """Attention heads per self-attention block (must divide ``hidden``)."""
    blocks: int = 2
    """Number of causal self-attention blocks."""
    dropout: float = 0.1
    """Dropout on embeddings, attention weights and feed-forward outputs (training only)."""
    num_users: int = 0
    """0 = no user embedding. Otherwise user ids in ``[0, num_users)`` get their own row and
    any other id (negative, or an unseen user in the service) shares one 'unknown' row."""
    tied_heads: bool = False
    """Score items by a dot product with the encoder's item embeddings (as SASRec does)
    instead of an independent output row per item. Off by default: with the max over
    next-state Q of eq. 8, tying made Q-values diverge on Coat (the same embedding moves the
    input and the output of the bootstrap), see docs/policy.md."""
    item_features: int = 0
    """Width F of a per-item feature matrix (``policy.item_features``: log-popularity and
    co-occurrence embeddings from training logs, optionally text embeddings). 0 = plain item
    ids. With F > 0 the heads are factorised, score(s, a) = ⟨q(s), v_a⟩ + b_a with v_a and
    b_a functions of item a's features, so one reward moves every similar item, and the
    encoder adds projected features to its input embeddings. The matrix itself is a
    buffer of the network (saved in checkpoints)."""
    item_ids: bool = True
    """With ``item_features`` > 0: keep a free per-item vector and bias next to the feature
    terms (zero-initialised residuals)."""
    prior_scale: float = 1.0
    """With ``item_features`` > 0: the actor's logits include ``prior_scale`` × the
    features' prior (standardised log-popularity of the training logs) as a fixed offset,
    so a new policy starts popularity-aware; the learned terms can cancel it."""

    def __post_init__(self) -> None:
        if self.num_items <= 0:
            raise ValueError(f"num_items must be positive, got {self.num_items}")
        if self.max_len <= 0:
            raise ValueError(f"max_len must be positive, got {self.max_len}")
        if self.hidden <= 0 or self.heads <= 0 or self.hidden % self.heads:
            raise ValueError(
                f"hidden ({self.hidden}) must be a positive multiple of heads ({self.heads})"
            )
        if self.blocks < 0:
            raise ValueError(f"blocks must be >= 0, got {self.blocks}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must lie in [0, 1), got {self.dropout}")
        if self.item_features < 0:
            raise ValueError(f"item_features must be >= 0, got {self.item_features}")
        if self.item_features and self.tied_heads:
            raise ValueError("item_features and tied_heads are alternatives; choose one")
        if self.num_users < 0:
            raise ValueError(f"num_users must be >= 0, got {self.num_users}")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dictionary of every field."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PolicyConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error (a newer format)."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"unknown PolicyConfig fields: {', '.join(unknown)}")
        return cls(**data)
