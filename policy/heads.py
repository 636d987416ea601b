"""Actor and critic heads on top of the state s_t (eqs. 5 and 7).

Three forms:

* untied (default): score(s, a) = ⟨w_a, s⟩ + b_a with an independent row w_a per item.
* tied (``PolicyConfig.tied_heads``): score(s, a) = ⟨W·s, e_a⟩ + b_a with e_a the
  encoder's embedding of item a, the SASRec scoring rule.
* factorised over item features (``PolicyConfig.item_features`` > 0): score(s, a) =
  ⟨W·s, v(f_a)⟩ + u·f_a + b_a with f_a item a's feature row (:class:`ItemTable`), v a small
  MLP and, with ``item_ids``, free per-item residuals added to v(f_a) and b_a. Items that
  were never recommended (or never logged) still get scores through their features.
"""

from __future__ import annotations

import torch
from torch import nn


class ItemTable(nn.Module):
    """The per-item feature matrix ``features`` [I, F] (a buffer, saved in checkpoints)
    and the prior ``prior`` [I] of the item biases."""

    features: torch.Tensor
    prior: torch.Tensor

    def __init__(self, num_items: int, dim: int) -> None:
        super().__init__()
        self.register_buffer("features", torch.zeros(num_items, dim))
        self.register_buffer("prior", torch.zeros(num_items))

    def fill(self, features: torch.Tensor, prior: torch.Tensor) -> None:
        """Copy in an operator's features (``policy.item_features.ItemFeatures``)."""
        if features.shape != self.features.shape or prior.shape != self.prior.shape:
            raise ValueError(f"item features {tuple(features.shape)} / prior "
                             f"{tuple(prior.shape)} do not fit {tuple(self.features.shape)}")
        with torch.no_grad():
            self.features.copy_(features)
            self.prior.copy_(prior)


class _FeatureScorer(nn.Module):
    """score(q, a) = ⟨q, v(f_a) + w_a⟩ + u·f_a + b_a + c·prior_a over the whole catalogue
    (c = ``prior_scale``, a fixed offset: the learned terms can cancel it)."""

    def __init__(self, hidden: int, table: ItemTable, item_ids: bool,
                 prior_scale: float = 0.0) -> None:
        super().__init__()
        self.prior_scale = float(prior_scale)
        num_items, dim = table.features.shape
        self.num_items = int(num_items)
        self._table = [table]  # owned (and saved) once, by the network
        self.vec = nn.Sequential(nn.Linear(dim, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.feat_bias = nn.Linear(dim, 1)
        nn.init.zeros_(self.feat_bias.weight)
        nn.init.zeros_(self.feat_bias.bias)
        self.id_vec = nn.Parameter(torch.zeros(num_items, hidden)) if item_ids else None
        self.id_bias = nn.Parameter(torch.zeros(num_items)) if item_ids else None

    def item_vectors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(v [I, H], b [I]) of every item."""
        table = self._table[0]
        f = table.features
        vec = self.vec(f)
        bias = self.feat_bias(f).squeeze(-1)
        if self.prior_scale:
            bias = bias + self.prior_scale * table.prior
        if self.id_vec is not None and self.id_bias is not None:
            vec, bias = vec + self.id_vec, bias + self.id_bias
        return vec, bias

    def forward(self, query: torch.Tensor) -> torch.Tensor:
        vec, bias = self.item_vectors()
        return query @ vec.T + bias  # [B, I]


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

    def item_vectors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(v [I, H], b [I]) of every item: score = query · v_a + b_a."""
        if self.out is not None:
            return self.out.weight, self.out.bias
        assert self.bias is not None
        return self._item_emb[0].weight[1 : self.num_items + 1], self.bias

    def forward(self, query: torch.Tensor) -> torch.Tensor:
        if self.out is not None:
            return self.out(query)  # [B, I]
        assert self.bias is not None
        items = self._item_emb[0].weight[1 : self.num_items + 1]  # [I, H] (row 0 = padding)
        return query @ items.T + self.bias  # [B, I]


class ActorHead(nn.Module):
    """Actor[s_t]: unnormalised log-probabilities (logits) over the whole catalogue."""

    def __init__(self, hidden: int, num_items: int, item_emb: nn.Embedding | None = None,
                 table: ItemTable | None = None, item_ids: bool = True,
                 prior_scale: float = 0.0) -> None:
        super().__init__()
        self.proj: nn.Module
        self.score: _FeatureScorer | _ItemScorer
        if table is not None:
            self.proj = nn.Linear(hidden, hidden)
            nn.init.normal_(self.proj.weight, std=0.01)  # near-uniform apart from the prior
            nn.init.zeros_(self.proj.bias)
            self.score = _FeatureScorer(hidden, table, item_ids, prior_scale)
            return
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

    def __init__(self, hidden: int, num_items: int, item_emb: nn.Embedding | None = None,
                 table: ItemTable | None = None, item_ids: bool = True) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, hidden))
        self.score: _FeatureScorer | _ItemScorer = (
            _FeatureScorer(hidden, table, item_ids) if table is not None
            else _ItemScorer(hidden, num_items, item_emb))

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        """``state`` [B, H] → Q-values [B, I]."""
        return self.score(self.mlp(state))
