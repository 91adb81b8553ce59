"""Optimiser and schedule: AdamW parameter groups (weight decay, layer-wise LR decay, head LR) + warmup."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from bertkit.config import TrainingConfig


def _no_decay(name: str, param: nn.Parameter) -> bool:
    """Biases, norm weights and other 1-D parameters get no weight decay."""
    return param.ndim <= 1 or "norm" in name.lower()


def build_param_groups(model: nn.Module, config: TrainingConfig) -> list[dict[str, Any]]:
    """AdamW groups keyed by (learning rate, weight decay).

    The encoder's parameters get ``lr * decay**(L - depth)`` (depth 0 = embeddings, L = top layer, anything
    above the layers gets ``lr``); the head gets ``head_learning_rate`` (or ``lr``).
    """
    lr = config.learning_rate
    head_lr = config.head_learning_rate or lr
    bert = getattr(model, "bert", None)
    depth = bert.parameter_depth() if bert is not None and hasattr(bert, "parameter_depth") else {}
    num_layers = getattr(bert, "num_layers", 0)
    groups: dict[tuple[float, float], list[nn.Parameter]] = {}
    for name, param in model.named_parameters():
        if name.startswith("bert."):
            d = depth.get(name[len("bert.") :], num_layers + 1)
            p_lr = lr * config.layerwise_lr_decay ** max(num_layers - d, 0) if d <= num_layers else lr
        else:
            p_lr = head_lr
        wd = 0.0 if _no_decay(name, param) else config.weight_decay
        groups.setdefault((p_lr, wd), []).append(param)
    return [{"params": ps, "lr": g_lr, "weight_decay": wd} for (g_lr, wd), ps in sorted(groups.items())]


def build_optimizer(
    model: nn.Module, config: TrainingConfig, lazy_rows: nn.Parameter | None = None
) -> torch.optim.Optimizer:
    """AdamW over :func:`build_param_groups`.

    The fused kernel is used where torch has one for every parameter's device (CPU and CUDA in recent
    torch): one pass over the weights instead of several — on a 2-core CPU it halved the optimiser step of MiniLM.
    With ``lazy_rows`` (the word-embedding table, with sparse gradients) that parameter moves to its own group
    updated row by row (:class:`~bertkit.training.sparse_embeddings.LazyRowsAdamW`).
    """
    from bertkit.training.sparse_embeddings import LazyRowsAdamW

    groups = build_param_groups(model, config)
    cls: type[torch.optim.AdamW] = torch.optim.AdamW
    if lazy_rows is not None:
        cls = LazyRowsAdamW
        for g in groups:
            if any(p is lazy_rows for p in g["params"]):
                g["params"] = [p for p in g["params"] if p is not lazy_rows]
                groups.append({**g, "params": [lazy_rows], "lazy_rows": True})
                break
        groups = [g for g in groups if g["params"]]
    try:
        return cls(groups, lr=config.learning_rate, betas=(0.9, 0.999), eps=1e-8, fused=True)
    except (RuntimeError, TypeError, ValueError):
        return cls(groups, lr=config.learning_rate, betas=(0.9, 0.999), eps=1e-8)


def schedule_factor(step: int, total: int, warmup: int, kind: str) -> float:
    """Multiplier of the peak learning rate at optimiser step ``step`` (0-based)."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if kind == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    progress = min(max(progress, 0.0), 1.0)
    if kind == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return max(0.0, 1.0 - progress)


class WarmupSchedule(torch.optim.lr_scheduler.LambdaLR):
    """Warmup then linear/cosine decay (or constant); its state is plain numbers (JSON-able)."""

    def __init__(
        self, optimizer: torch.optim.Optimizer, total_steps: int, warmup_steps: int, kind: str
    ) -> None:
        self.total_steps = int(total_steps)
        self.warmup_steps = int(warmup_steps)
        self.kind = kind
        super().__init__(
            optimizer, lambda s: schedule_factor(s, self.total_steps, self.warmup_steps, self.kind)
        )

    def state_dict(self) -> dict[str, Any]:
        return {
            "last_epoch": self.last_epoch,
            "base_lrs": list(self.base_lrs),
            "last_lr": list(self._last_lr) if hasattr(self, "_last_lr") else None,
            "_step_count": self._step_count,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.last_epoch = int(state["last_epoch"])
        self.base_lrs = list(state["base_lrs"])
        self._step_count = int(state["_step_count"])
        if state.get("last_lr") is not None:
            self._last_lr = list(state["last_lr"])


def warmup_steps_for(config: TrainingConfig, total_steps: int) -> int:
    """Warmup length in optimiser steps."""
    return config.warmup_steps if config.warmup_steps > 0 else int(round(config.warmup_ratio * total_steps))
