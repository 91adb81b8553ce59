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


def gem_pool(hidden: torch.Tensor, mask: torch.Tensor, p: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Generalised mean ``(mean_t clamp(h_t, eps)^p)^(1/p)`` over real tokens (p=1: mean of the positive part,
    p→∞: max). Computed in float32."""
    m = mask.unsqueeze(-1).float()  # [B, T, 1]
    x = hidden.float().clamp(min=eps).pow(p) * m  # [B, T, H]
    pooled = x.sum(1) / m.sum(1).clamp(min=1.0)  # [B, H]
    return pooled.clamp(min=eps).pow(1.0 / p).to(hidden.dtype)


_LAYER_POOLINGS = (PoolingType.LAYER_CLS.value, PoolingType.LAYER_CLS_WEIGHTED.value)


class Pooler(nn.Module):
    """Pooling as a module so learned poolings carry their parameters with the head.

    Args:
        pooling_type: a :class:`PoolingType` value.
        hidden_size: width H of the token states.
        max_positions: positions covered by WEIGHTED_MEAN's learned weights (later positions share the last).
        num_layers: k, the last layers whose CLS states LAYER_CLS / LAYER_CLS_WEIGHTED combine
            (``HeadConfig.extra["pooling_layers"]``, default 4).

    LAYER_CLS concatenates the last k layers' CLS states ``[B, k*H]`` and maps them back to ``[B, H]`` with a
    linear layer initialised to their mean; LAYER_CLS_WEIGHTED is a softmax-weighted sum with k learned
    weights (starting equal). Both read ``all_hidden_states`` (``BertOutput.hidden_states``); without them
    (a plain ``[B, T, H]`` call) every one of the k slots uses the given states.
    """

    def __init__(
        self, pooling_type: str | PoolingType, hidden_size: int, max_positions: int = 512, num_layers: int = 4
    ) -> None:
        super().__init__()
        self.pooling_type = check_choice("pooling_type", pooling_type, [p.value for p in PoolingType])
        self.num_layers = int(num_layers)
        self.needs_hidden_states = self.pooling_type in _LAYER_POOLINGS
        if self.pooling_type == PoolingType.GEM.value:
            self.gem_p = nn.Parameter(torch.tensor(3.0))
        elif self.pooling_type == PoolingType.LAYER_CLS.value:
            self.layer_mix = nn.Linear(self.num_layers * hidden_size, hidden_size)
            with torch.no_grad():  # starts as the mean of the k CLS states
                eye = torch.eye(hidden_size) / self.num_layers
                self.layer_mix.weight.copy_(eye.repeat(1, self.num_layers))
                self.layer_mix.bias.zero_()
        elif self.pooling_type == PoolingType.LAYER_CLS_WEIGHTED.value:
            self.layer_logits = nn.Parameter(torch.zeros(self.num_layers))
        if self.pooling_type == PoolingType.ATTENTION.value:
            # learned token scores: w_t = softmax_t(v^T tanh(W h_t)) over real tokens
            self.attention = nn.Sequential(
                nn.Linear(hidden_size, hidden_size), nn.Tanh(), nn.Linear(hidden_size, 1)
            )
        elif self.pooling_type == PoolingType.WEIGHTED_MEAN.value:
            # learned per-position weights (softplus keeps them positive); starts as the plain mean
            self.position_logits = nn.Parameter(torch.zeros(max_positions))

    def _layer_cls(
        self, hidden: torch.Tensor, mask: torch.Tensor, layers: tuple[torch.Tensor, ...] | None
    ) -> torch.Tensor:
        k = self.num_layers
        states = list(layers[-k:]) if layers else [hidden]
        states = [states[0]] * (k - len(states)) + states  # fewer layers than k: repeat the lowest
        cls = torch.stack([cls_pool(h, mask) for h in states], dim=1)  # [B, k, H]
        if self.pooling_type == PoolingType.LAYER_CLS.value:
            return self.layer_mix(cls.flatten(1))  # [B, k*H] -> [B, H]
        w = torch.softmax(self.layer_logits.float(), 0).to(cls.dtype)  # [k]
        return torch.einsum("k,bkh->bh", w, cls)

    def forward(
        self,
        hidden: torch.Tensor,
        mask: torch.Tensor | None = None,
        pooler_output: torch.Tensor | None = None,
        all_hidden_states: tuple[torch.Tensor, ...] | None = None,
    ) -> torch.Tensor:
        """Pool ``hidden [B, T, H]`` with ``mask [B, T]`` into ``[B, H]`` (``all_hidden_states``: every layer's
        ``[B, T, H]`` states, embeddings first, for the layer poolings)."""
        if mask is None:
            mask = torch.ones(hidden.shape[:2], dtype=torch.long, device=hidden.device)
        kind = self.pooling_type
        if kind in _FIXED:
            return _FIXED[kind](hidden, mask)
        if kind == PoolingType.GEM.value:
            return gem_pool(hidden, mask, self.gem_p.clamp(min=1.0))
        if kind in _LAYER_POOLINGS:
            return self._layer_cls(hidden, mask, all_hidden_states)
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
