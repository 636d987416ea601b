"""SASRec state encoder G(x_1:t) (eq. 4): causal self-attention over the item history.

Input convention: ``histories`` is ``[B, L]`` int64 of 0-based item ids, right-aligned and
left-padded with ``PAD = -1`` (``policy.types.pad_histories``). Inside the network ids are
shifted by one so that embedding row 0 is the padding row.

Empty histories: a learned *start* token is always placed right before the first real
item (so the sequence the network reads is ``[START, x_1, ..., x_t]``). The state of an
empty history is then the encoding of the start token alone, which is well defined and
trainable. When ``PolicyConfig.num_users > 0`` a user embedding is added to the start
token, which makes the empty-history state personal (Coat episodes start empty) and lets
attention carry the user into every later position.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from policy.config import PolicyConfig
from policy.heads import ItemTable


class _Block(nn.Module):
    """Pre-norm causal multi-head self-attention followed by a point-wise feed-forward."""

    def __init__(self, hidden: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.heads = heads
        self.dropout = dropout
        self.norm_attn = nn.LayerNorm(hidden)
        self.qkv = nn.Linear(hidden, 3 * hidden)
        self.out = nn.Linear(hidden, hidden)
        self.norm_ff = nn.LayerNorm(hidden)
        self.ff = nn.Sequential(
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` [B, T, H]; ``mask`` [B, 1, T, T] bool, True where attention is allowed."""
        b, t, h = x.shape
        q, k, v = self.qkv(self.norm_attn(x)).chunk(3, dim=-1)  # 3 × [B, T, H]
        # [B, T, H] -> [B, heads, T, H/heads]
        q, k, v = (z.view(b, t, self.heads, h // self.heads).transpose(1, 2) for z in (q, k, v))
        att = F.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, dropout_p=self.dropout if self.training else 0.0
        )  # [B, heads, T, H/heads]
        att = att.transpose(1, 2).reshape(b, t, h)  # [B, T, H]
        x = x + self.drop(self.out(att))
        return x + self.drop(self.ff(self.norm_ff(x)))

    def forward_last(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """:meth:`forward` at the newest position only (what a state reads from the last
        block): ``x`` [B, T, H], ``mask`` [B, 1, T, T] → [B, 1, H]. Keys and values still
        come from every position; the query, the output projection and the feed-forward
        run on one position instead of T."""
        b, t, h = x.shape
        d = h // self.heads
        y = self.norm_attn(x)  # [B, T, H]
        w, bias = self.qkv.weight, self.qkv.bias  # [3H, H], [3H]
        q = F.linear(y[:, -1:], w[:h], bias[:h])  # [B, 1, H]
        k, v = F.linear(y, w[h:], bias[h:]).chunk(2, dim=-1)  # 2 × [B, T, H]
        q = q.view(b, 1, self.heads, d).transpose(1, 2)  # [B, heads, 1, d]
        k, v = (z.view(b, t, self.heads, d).transpose(1, 2) for z in (k, v))
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, :, -1:])
        att = att.transpose(1, 2).reshape(b, 1, h)  # [B, 1, H]
        last = x[:, -1:] + self.out(att)  # [B, 1, H]
        return last + self.ff(self.norm_ff(last))


class SASRecEncoder(nn.Module):
    """Maps item histories to states s_t = G(x_1:t): the output at the last position."""

    def __init__(self, config: PolicyConfig, items: ItemTable | None = None) -> None:
        super().__init__()
        self.config = config
        n, h = config.num_items, config.hidden
        # Item features (optional): projected and added to the id embeddings of the input.
        self._items = [items] if items is not None else []
        self.feat_in = nn.Linear(config.item_features, h) if items is not None else None
        # Rows: 0 = padding, 1..I = items (id + 1), I + 1 = start token.
        self.start_index = n + 1
        self.item_emb = nn.Embedding(n + 2, h, padding_idx=0)
        # Positions count from the right end: the last slot is always the newest item, so a
        # state depends on recency, not on how long the history happens to be.
        self.pos_emb = nn.Embedding(config.max_len + 1, h)
        # Last row = users outside [0, num_users) ('unknown').
        self.user_emb = nn.Embedding(config.num_users + 1, h) if config.num_users > 0 else None
        self.emb_drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(
            [_Block(h, config.heads, config.dropout) for _ in range(config.blocks)]
        )
        self.final_norm = nn.LayerNorm(h)
        nn.init.normal_(self.item_emb.weight, std=0.02)
        with torch.no_grad():
            self.item_emb.weight[0].zero_()
        nn.init.normal_(self.pos_emb.weight, std=0.02)
        if self.user_emb is not None:
            nn.init.normal_(self.user_emb.weight, std=0.02)
        if self.feat_in is not None:
            nn.init.normal_(self.feat_in.weight, std=0.02)
            nn.init.zeros_(self.feat_in.bias)

    def tokens(self, histories: torch.Tensor, *, trim: bool = True) -> torch.Tensor:
        """``[B, L]`` PAD=-1 item ids → ``[B, T]`` embedding rows, ``T <= max_len + 1``, with
        the start token placed before the first real item (right-aligned). ``trim=False``
        keeps every row at ``T = max_len + 1`` (one shape for a traced graph)."""
        # Index arithmetic on a [B, L] array: numpy, whatever the device of the network
        # (a dozen tiny torch ops here cost more interpreter time than a traced forward).
        tokens = self.token_array(histories.detach().cpu().numpy(), trim=trim)
        return torch.from_numpy(tokens).to(histories.device)

    def token_array(self, h: np.ndarray, *, trim: bool = True) -> np.ndarray:
        """:meth:`tokens` on an int64 array ``[B, L]`` (no torch call, so a serving thread
        never gives up the interpreter lock here)."""
        max_len = self.config.max_len
        b, length = h.shape
        if length > max_len:
            h = h[:, -max_len:]  # keep the most recent items
        elif length < max_len:
            h = np.concatenate([np.full((b, max_len - length), -1, dtype=h.dtype), h], axis=1)
        if h.size and (h >= self.config.num_items).any():
            bad = int(h[h >= self.config.num_items][0])
            raise ValueError(f"item id {bad} outside [0, {self.config.num_items})")
        ids = np.where(h < 0, 0, h + 1)
        tokens = np.zeros((b, max_len + 1), dtype=np.int64)  # [B, T], T = max_len + 1
        tokens[:, 1:] = ids
        lengths = (ids > 0).sum(axis=1)  # [B]
        start_pos = max_len - lengths  # slot right before the first real item
        tokens[np.arange(b), start_pos] = self.start_index
        # Drop leading columns that are padding in every row: positions count from the
        # right and padding is masked, so the states are unchanged and short histories
        # cost less.
        first = int(start_pos.min()) if b and trim else 0
        return np.ascontiguousarray(tokens[:, first:])

    def forward(
        self, histories: torch.Tensor, user_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``histories`` [B, L] int64 (PAD=-1, right-aligned), ``user_ids`` [B] or None →
        states ``[B, H]``."""
        return self.from_tokens(self.tokens(histories), user_ids)

    def from_tokens(
        self, tokens: torch.Tensor, user_ids: torch.Tensor | None = None,
        *, last_only: bool = False,
    ) -> torch.Tensor:
        """``tokens`` [B, T] from :meth:`tokens`, ``user_ids`` [B] or None → states
        ``[B, H]``. ``last_only`` (inference) runs the last block at the newest position
        only: the same states up to float rounding, for less work."""
        b, t = tokens.shape
        x = self.item_emb(tokens)  # [B, T, H]
        if self.feat_in is not None:
            feats = self._items[0].features  # [I, F]
            item_rows = (tokens - 1).clamp(0, self.config.num_items - 1)
            is_item = ((tokens > 0) & (tokens <= self.config.num_items)).unsqueeze(-1)
            x = x + self.feat_in(feats[item_rows]) * is_item  # [B, T, H]
        is_start = (tokens == self.start_index).unsqueeze(-1)  # [B, T, 1]
        if self.user_emb is not None:
            if user_ids is None:
                users = tokens.new_full((b,), self.config.num_users)
            else:
                users = user_ids.to(tokens.device).long()
                unknown = (users < 0) | (users >= self.config.num_users)
                users = torch.where(unknown, torch.full_like(users, self.config.num_users), users)
            x = x + is_start * self.user_emb(users).unsqueeze(1)  # user joins the start token
        valid = (tokens > 0).unsqueeze(-1)  # [B, T, 1] start token and items
        x = x * (self.config.hidden**0.5) + self.pos_emb.weight[-t:].unsqueeze(0)  # [B, T, H]
        x = self.emb_drop(x) * valid
        # Causal mask restricted to valid keys; every query may also see itself so that
        # padding rows never have an all-masked softmax (their outputs are discarded).
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()  # [T, T]
        key_ok = valid.squeeze(-1).unsqueeze(1)  # [B, 1, T]
        eye = torch.eye(t, dtype=torch.bool, device=x.device)
        mask = ((causal & key_ok) | eye).unsqueeze(1)  # [B, 1, T, T]
        blocks: list[_Block] = list(self.blocks)  # type: ignore[arg-type]
        if last_only and blocks:
            for block in blocks[:-1]:
                x = block(x, mask) * valid  # [B, T, H]
            # The newest position is always valid (an item or the start token).
            return self.final_norm(blocks[-1].forward_last(x, mask)[:, 0])  # [B, H]
        for block in blocks:
            x = block(x, mask) * valid  # [B, T, H]
        return self.final_norm(x[:, -1])  # [B, H] state at the newest position
