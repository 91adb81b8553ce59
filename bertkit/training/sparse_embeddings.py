"""Sparse (lazy) updates of the word-embedding table: the CPU training speed-up that keeps the table trainable.

On a CPU the largest per-step costs after the matmuls are the dense ``[V, H]`` gradient of the word
embeddings (allocated, zero-filled and scattered into every step), its pass through gradient clipping and the
AdamW update of all ``V`` rows — although a batch touches a few hundred of the 30k rows. With
``training.sparse_embedding_updates`` the embedding produces a sparse gradient (``nn.Embedding(sparse=True)``)
and :class:`LazyRowsAdamW` applies AdamW to the touched rows only (the "lazy Adam" of TensorFlow's LazyAdam and
PyTorch's ``SparseAdam``: a row's moments, bias correction and weight decay advance when the row is used).
Every other parameter gets the regular (fused) AdamW step. :func:`clip_gradients` clips by the global norm of
dense and sparse gradients together.

``auto`` turns it on for single-process fp32 training on the CPU with trainable word embeddings and no
adversarial training (FGM/AWP read the dense embedding gradient); the GPU keeps the dense path.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from bertkit.config import TrainingConfig
from bertkit.errors import ConfigError


def use_sparse_embeddings(
    config: TrainingConfig, embedding: nn.Module, device: torch.device, processes: int
) -> bool:
    """Whether this run uses sparse embedding gradients (``training.sparse_embedding_updates``)."""
    mode = config.sparse_embedding_updates
    if mode == "off" or not isinstance(embedding, nn.Embedding) or not embedding.weight.requires_grad:
        return False
    blockers = []
    if processes > 1:
        blockers.append("several processes (DDP reduces dense gradients)")
    if config.adversarial != "none":
        blockers.append(f"adversarial={config.adversarial} (reads the dense embedding gradient)")
    if config.torch_compile:
        blockers.append("torch_compile (compiled graphs keep dense gradients)")
    if config.mixed_precision in ("fp16", "bf16") or device.type != "cpu":
        blockers.append("a GPU or mixed precision (the dense path is fast there)")
    if mode == "on" and blockers:
        raise ConfigError(
            f"training.sparse_embedding_updates=on does not work with {blockers[0]}; use auto or off"
        )
    return not blockers


class LazyRowsAdamW(torch.optim.AdamW):
    """AdamW whose groups marked ``lazy_rows`` take sparse gradients and update only the rows they touch.

    The other groups go through :class:`torch.optim.AdamW` unchanged (the fused kernel where available). State
    keys (``step``, ``exp_avg``, ``exp_avg_sq``) are AdamW's, so checkpoints and resumption work as for AdamW.
    """

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:  # type: ignore[override]
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        groups = self.param_groups
        lazy = [g for g in groups if g.get("lazy_rows")]
        self.param_groups = [g for g in groups if not g.get("lazy_rows")]
        try:
            super().step()
        finally:
            self.param_groups = groups
        for group in lazy:
            for p in group["params"]:
                if p.grad is not None:
                    self._update_rows(p, group)
        return loss

    def _update_rows(self, p: torch.Tensor, group: dict[str, Any]) -> None:
        grad = p.grad
        assert grad is not None
        if not grad.is_sparse:  # a dense gradient (e.g. sparse mode switched off mid-run): every row
            grad = grad.to_sparse(1)
        grad = grad.coalesce()
        rows, values = grad.indices()[0], grad.values()  # [R], [R, H]
        state = self.state[p]
        if not state:
            state["step"] = torch.zeros((), dtype=torch.float32, device=p.device)
            state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["step"] += 1
        t = float(state["step"])
        beta1, beta2 = group["betas"]
        lr, wd, eps = float(group["lr"]), float(group["weight_decay"]), float(group["eps"])
        m = state["exp_avg"].index_select(0, rows).lerp_(values, 1 - beta1)  # [R, H]
        v = state["exp_avg_sq"].index_select(0, rows).mul_(beta2).addcmul_(values, values, value=1 - beta2)
        state["exp_avg"].index_copy_(0, rows, m)
        state["exp_avg_sq"].index_copy_(0, rows, v)
        w = p.index_select(0, rows)
        if wd:
            w.mul_(1 - lr * wd)
        denom = (v / (1 - beta2**t)).sqrt_().add_(eps)
        w.addcdiv_(m, denom, value=-lr / (1 - beta1**t))
        p.index_copy_(0, rows, w)


def clip_gradients(parameters: Iterable[torch.Tensor], max_norm: float) -> torch.Tensor:
    """Clip dense and sparse gradients together by their global L2 norm (sparse ones are coalesced first,
    so duplicate rows count once); returns the norm before clipping."""
    params = [p for p in parameters if p.grad is not None]
    norms = []
    for p in params:
        grad = p.grad
        assert grad is not None
        if grad.is_sparse:
            p.grad = grad = grad.coalesce()
            norms.append(torch.linalg.vector_norm(grad.values()))
        else:
            norms.append(torch.linalg.vector_norm(grad))
    if not norms:
        return torch.zeros(())
    total = torch.linalg.vector_norm(torch.stack(norms))
    coef = float(max_norm) / (float(total) + 1e-6)
    if coef < 1.0 and math.isfinite(coef):
        for p in params:
            assert p.grad is not None
            (p.grad._values() if p.grad.is_sparse else p.grad).mul_(coef)  # coalesced sparse: scale in place
    return total
