"""The SASRec actor-critic network: one encoder G shared by the actor and critic heads."""

from __future__ import annotations

import torch
from torch import nn

from policy.config import PolicyConfig
from policy.heads import ActorHead, CriticHead, ItemTable
from policy.sasrec import SASRecEncoder


class ActorCritic(nn.Module):
    """G(x_1:t) → (Actor[s_t], Critic[s_t]).

    All learners use this same module: A2C trains both heads, PG only the actor, DQN only
    the critic (the unused head simply stays at its initial weights).
    """

    def __init__(self, config: PolicyConfig) -> None:
        super().__init__()
        self.config = config
        # Item features (PolicyConfig.item_features > 0): one table shared by the encoder's
        # input and both heads; zeros until :meth:`set_item_features` or a checkpoint fills it.
        self.items = ItemTable(config.num_items, config.item_features) \
            if config.item_features > 0 else None
        self.encoder = SASRecEncoder(config, self.items)
        tied = self.encoder.item_emb if config.tied_heads else None
        self.actor = ActorHead(config.hidden, config.num_items, tied, self.items,
                               config.item_ids, config.prior_scale)
        self.critic = CriticHead(config.hidden, config.num_items, tied, self.items,
                                 config.item_ids)

    def set_item_features(self, features: torch.Tensor, prior: torch.Tensor) -> None:
        """Fill the item table ([I, F] features, [I] prior of the actor's item bias)."""
        if self.items is None:
            raise ValueError("this network was built without item features "
                             "(PolicyConfig.item_features = 0)")
        self.items.fill(features.float(), prior.float())

    def encode(self, histories: torch.Tensor, user_ids: torch.Tensor | None = None) -> torch.Tensor:
        """States ``[B, H]``."""
        return self.encoder(histories, user_ids)

    def forward(
        self, histories: torch.Tensor, user_ids: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``histories`` [B, L] (PAD=-1) → (actor logits [B, I], Q-values [B, I])."""
        state = self.encode(histories, user_ids)  # [B, H]
        return self.actor(state), self.critic(state)

    def logits(self, histories: torch.Tensor, user_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Actor logits ``[B, I]`` only."""
        return self.actor(self.encode(histories, user_ids))

    def q_values(
        self, histories: torch.Tensor, user_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Critic Q-values ``[B, I]`` only."""
        return self.critic(self.encode(histories, user_ids))
