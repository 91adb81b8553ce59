"""S3b: hierarchical multi-task learning over a shared LoRA and a level-1 LoRA.

* Level-1 tasks (e.g. NER): ``E(x; shared + level1)`` → head.
* Level-2 tasks (e.g. relation extraction, QA, sentence classification):
  ``h_s = E(x; shared)``, ``h_1 = E(x; shared + level1)`` (entity features, detached when
  ``detach_l1_for_l2``), ``c = cross_level(h_s, h_1)`` (attention of ``h_s`` over ``h_1``, or a concat
  projection), ``z = level2_adapter_t(c)`` (a low-rank residual adapter per task) → head.

The level-1 and shared adapters are PEFT LoRA adapters (see :mod:`bertkit.multitask.adapters`); the
cross-level attention and the feature-level adapters are written here because PEFT has no counterpart.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from bertkit.encoder import BertOutput
from bertkit.errors import ConfigError
from bertkit.multitask.config import AdapterConfig

_SHARED = ("shared",)
_LEVEL1 = ("shared", "level1")


class CrossLevelAttention(nn.Module):
    """Pre-norm residual attention of shared features (queries) over level-1 features (keys/values).

    Args:
        hidden: state width H.
        heads: attention heads (H must be divisible by it).
        dropout: attention dropout.
    """

    def __init__(self, hidden: int, heads: int = 4, dropout: float = 0.1) -> None:
        super().__init__()
        if hidden % heads:
            raise ConfigError(f"cross_level_heads={heads} must divide the hidden size {hidden}")
        self.norm_q = nn.LayerNorm(hidden)
        self.norm_kv = nn.LayerNorm(hidden)
        self.attention = nn.MultiheadAttention(hidden, heads, dropout=dropout, batch_first=True)

    def forward(self, shared: torch.Tensor, level1: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[B, T, H]``, ``[B, T, H]``, mask ``[B, T]`` → ``[B, T, H]`` (padded positions zeroed)."""
        kv = self.norm_kv(level1)
        attended, _ = self.attention(
            self.norm_q(shared), kv, kv, key_padding_mask=mask == 0, need_weights=False
        )
        return (shared + attended) * mask.unsqueeze(-1).to(shared.dtype)


class ConcatCrossLevel(nn.Module):
    """``W [h_s; h_1]`` (``2H → H``), initialised to the average of the two states."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Linear(2 * hidden, hidden)
        with torch.no_grad():
            eye = torch.eye(hidden) * 0.5
            self.proj.weight.copy_(torch.cat([eye, eye], dim=1))
            self.proj.bias.zero_()

    def forward(self, shared: torch.Tensor, level1: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[B, T, H]`` × 2 → ``[B, T, H]``."""
        return self.proj(torch.cat([shared, level1], dim=-1))


class FeatureAdapter(nn.Module):
    """Low-rank residual adapter on features: ``h + U · gelu(D · h)`` (U starts at 0, so it starts as identity).

    Args:
        hidden: state width H.
        rank: bottleneck width r (``2·H·r + r + H`` parameters).
        dropout: dropout inside the bottleneck.
    """

    def __init__(self, hidden: int, rank: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.down = nn.Linear(hidden, rank)
        self.up = nn.Linear(rank, hidden)
        self.dropout = nn.Dropout(dropout)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[..., H]`` → ``[..., H]``."""
        return hidden + self.up(self.dropout(nn.functional.gelu(self.down(hidden))))


class HierarchicalFeatures(nn.Module):
    """The S3b feature computation for every task (level 1 or level 2).

    Args:
        config: adapter configuration (``cross_level``, ``cross_level_heads``, ``level2_rank``,
            ``detach_l1_for_l2``).
        task_levels: task → 1 or 2.
        hidden: state width H.
    """

    def __init__(self, config: AdapterConfig, task_levels: dict[str, int], hidden: int) -> None:
        super().__init__()
        self.levels = {t: int(v) for t, v in task_levels.items()}
        self.detach_l1 = bool(config.detach_l1_for_l2)
        level2 = [t for t, v in self.levels.items() if v == 2]
        self.cross: nn.Module | None = None
        if level2:
            self.cross = (
                CrossLevelAttention(hidden, config.cross_level_heads)
                if config.cross_level == "attention"
                else ConcatCrossLevel(hidden)
            )
        self.level2 = nn.ModuleDict({t: FeatureAdapter(hidden, config.level2_rank) for t in level2})

    def task_modules(self, task: str) -> list[nn.Module]:
        """The level-2 adapter of ``task`` (the cross-level module is shared)."""
        return [self.level2[task]] if task in self.level2 else []

    def passes(self, task: str) -> list[tuple[str, ...]]:
        """Level 1: one pass (shared + level1); level 2: a shared pass and a level-1 pass."""
        return [_LEVEL1] if self.levels[task] == 1 else [_SHARED, _LEVEL1]

    def features(self, task: str, encode: Callable[[tuple[str, ...], bool], BertOutput]) -> BertOutput:
        """Level-1 features, or cross-level + level-2 adapter features."""
        if self.levels[task] == 1:
            return encode(_LEVEL1, True)
        assert self.cross is not None
        shared = encode(_SHARED, True)
        level1 = encode(_LEVEL1, not self.detach_l1)
        mask = shared.attention_mask
        fused = self.cross(shared.last_hidden_state, level1.last_hidden_state, mask)  # [B, T, H]
        return BertOutput(last_hidden_state=self.level2[task](fused), attention_mask=mask)
