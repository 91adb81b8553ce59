"""Padding-aware pooling: one function per fixed pooling, one small module for the learned ones.

Every function takes token states ``[B, T, H]`` and a mask ``[B, T]`` (1 = real token) and returns ``[B, H]``.
"""

from __future__ import annotations

import torch
from torch import nn

from bertkit.config import PoolingType, check_choice


def cls_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """First real token of each row (the [CLS] token with right padding; correct with left padding too)."""
    first = first_token_index(mask)  # [B]
    return hidden[torch.arange(hidden.size(0), device=hidden.device), first]


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean over real tokens only."""
    m = mask.unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
    return (hidden * m).sum(1) / m.sum(1).clamp(min=1.0)


def max_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Max over real tokens; a padded position can never be the max."""
    neg = torch.finfo(hidden.dtype).min
    masked = hidden.masked_fill(~mask.bool().unsqueeze(-1), neg)  # [B, T, H]
    out = masked.max(dim=1).values
    return torch.where(mask.bool().any(1, keepdim=True), out, torch.zeros_like(out))


def first_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the first real token per row ``[B]`` (0 with right padding)."""
    return mask.long().argmax(dim=1)


def last_token_index(mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token per row ``[B]``, correct for left and right padding."""
    T = mask.size(1)
    positions = torch.arange(T, device=mask.device).expand_as(mask)  # [B, T]
    return torch.where(mask.bool(), positions, torch.full_like(positions, -1)).max(dim=1).values.clamp(min=0)


def last_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """State of the last real token (the natural summary of a decoder-only model)."""
    idx = last_token_index(mask)
    return hidden[torch.arange(hidden.size(0), device=hidden.device), idx]


_FIXED = {
    PoolingType.CLS.value: cls_pool,
    PoolingType.MEAN.value: mean_pool,
    PoolingType.MAX.value: max_pool,
    PoolingType.LAST.value: last_pool,
}


class Pooler(nn.Module):
    """Pooling as a module so learned poolings carry their parameters with the head.

    Args:
        pooling_type: a :class:`PoolingType` value.
        hidden_size: width H of the token states.
        max_positions: positions covered by WEIGHTED_MEAN's learned weights (later positions share the last).
    """

    def __init__(self, pooling_type: str | PoolingType, hidden_size: int, max_positions: int = 512) -> None:
        super().__init__()
        self.pooling_type = check_choice("pooling_type", pooling_type, [p.value for p in PoolingType])
        if self.pooling_type == PoolingType.ATTENTION.value:
            # learned token scores: w_t = softmax_t(v^T tanh(W h_t)) over real tokens
            self.attention = nn.Sequential(
                nn.Linear(hidden_size, hidden_size), nn.Tanh(), nn.Linear(hidden_size, 1)
            )
        elif self.pooling_type == PoolingType.WEIGHTED_MEAN.value:
            # learned per-position weights (softplus keeps them positive); starts as the plain mean
            self.position_logits = nn.Parameter(torch.zeros(max_positions))

    def forward(
        self, hidden: torch.Tensor, mask: torch.Tensor | None = None, pooler_output: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Pool ``hidden [B, T, H]`` with ``mask [B, T]`` into ``[B, H]``."""
        if mask is None:
            mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
        kind = self.pooling_type
        if kind in _FIXED:
            return _FIXED[kind](hidden, mask)
        if kind == PoolingType.POOLER.value:
            if pooler_output is None:
                return cls_pool(hidden, mask)
            return pooler_output
        if kind == PoolingType.ATTENTION.value:
            scores = self.attention(hidden).squeeze(-1).float()  # [B, T]
            scores = scores.masked_fill(~mask.bool(), float("-inf"))
            weights = torch.softmax(scores, dim=1).nan_to_num(0.0).to(hidden.dtype)  # [B, T]
            return torch.einsum("bt,bth->bh", weights, hidden)
        if kind == PoolingType.WEIGHTED_MEAN.value:
            T = hidden.size(1)
            idx = torch.arange(T, device=hidden.device).clamp(max=self.position_logits.numel() - 1)
            w = nn.functional.softplus(self.position_logits[idx]) / nn.functional.softplus(torch.zeros(()))
            w = w.unsqueeze(0) * mask.to(w.dtype)  # [B, T]
            w = w / w.sum(1, keepdim=True).clamp(min=1e-6)
            return torch.einsum("bt,bth->bh", w.to(hidden.dtype), hidden)
        raise AssertionError(f"pooling '{kind}' returns token states; use it only in token-level heads")
