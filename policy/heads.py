"""Actor and critic heads on top of the state s_t (eqs. 5 and 7).

Two forms (``PolicyConfig.tied_heads``):

* tied: score(s, a) = ⟨W·s, e_a⟩ + b_a with e_a the encoder's embedding of item a,
  the SASRec scoring rule. Items share what the encoder learned about them.
* untied (default): score(s, a) = ⟨w_a, s⟩ + b_a with an independent row w_a per item.
"""

from __future__ import annotations

import torch
from torch import nn


class _ItemScorer(nn.Module):
    """Maps a query [B, H] to one score per item [B, I], tied to item embeddings or not."""

    def __init__(self, hidden: int, num_items: int, item_emb: nn.Embedding | None) -> None:
        super().__init__()
        self.num_items = num_items
        # Kept outside the module tree (a plain attribute) so the embedding is owned, saved
        # and counted once, by the encoder.
        self._item_emb = [item_emb] if item_emb is not None else []
        self.out = None if item_emb is not None else nn.Linear(hidden, num_items)
        self.bias = nn.Parameter(torch.zeros(num_items)) if item_emb is not None else None

    def forward(self, query: torch.Tensor) -> torch.Tensor:
        if self.out is not None:
            return self.out(query)  # [B, I]
        assert self.bias is not None
        items = self._item_emb[0].weight[1 : self.num_items + 1]  # [I, H] (row 0 = padding)
        return query @ items.T + self.bias  # [B, I]


class ActorHead(nn.Module):
    """Actor[s_t]: unnormalised log-probabilities (logits) over the whole catalogue."""

    def __init__(self, hidden: int, num_items: int, item_emb: nn.Embedding | None = None) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden, hidden) if item_emb is not None else nn.Identity()
        self.score = _ItemScorer(hidden, num_items, item_emb)
        if self.score.out is not None:
            # Small initial logits: an untrained actor starts close to uniform.
            nn.init.normal_(self.score.out.weight, std=0.01)
            nn.init.zeros_(self.score.out.bias)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        """``state`` [B, H] → logits [B, I]."""
        return self.score(self.proj(state))


class CriticHead(nn.Module):
    """Critic[s_t] (eq. 7): Q(s_t, a) for every item a of the catalogue at once."""

    def __init__(self, hidden: int, num_items: int, item_emb: nn.Embedding | None = None) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.score = _ItemScorer(hidden, num_items, item_emb)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        """``state`` [B, H] → Q-values [B, I]."""
        return self.score(self.mlp(state))
