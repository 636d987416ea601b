"""Actor and critic heads on top of the state s_t (eqs. 5 and 7)."""

from __future__ import annotations

import torch
from torch import nn


class ActorHead(nn.Module):
    """Actor[s_t]: unnormalised log-probabilities (logits) over the whole catalogue."""

    def __init__(self, hidden: int, num_items: int) -> None:
        super().__init__()
        self.proj = nn.Linear(hidden, num_items)
        # Small initial logits: an untrained actor starts close to uniform.
        nn.init.normal_(self.proj.weight, std=0.01)
        nn.init.zeros_(self.proj.bias)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        """``state`` [B, H] → logits [B, I]."""
        return self.proj(state)


class CriticHead(nn.Module):
    """Critic[s_t] (eq. 7): Q(s_t, a) for every item a of the catalogue at once."""

    def __init__(self, hidden: int, num_items: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(hidden, hidden), nn.ReLU())
        self.proj = nn.Linear(hidden, num_items)

    def forward(self, state: torch.Tensor) -> torch.Tensor:
        """``state`` [B, H] → Q-values [B, I]."""
        return self.proj(self.mlp(state))
