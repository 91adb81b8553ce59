"""PCGrad gradient surgery (Yu et al. 2020, "Gradient Surgery for Multi-Task Learning").

For the shared parameters, each task's gradient ``g_i`` has its component along every *conflicting* task
gradient ``g_j`` (``g_i · g_j < 0``) projected out, visiting the other tasks in a random order::

    g_i' = g_i
    for j in shuffled(tasks without i):
        if g_i' · g_j < 0:
            g_i' = g_i' - (g_i' · g_j) / ||g_j||² · g_j

and the update uses ``Σ_i g_i'``. Task-specific parameters (heads, private adapters) keep their ordinary
gradients. :func:`pcgrad_project` is the pure formula; :class:`PCGradAccumulator` applies it to a model
whose tasks are back-propagated one after the other.

Optional norm balancing (``gradient_balance="mean_norm"``, :func:`balance_norms`): before the projection
every task gradient is rescaled to the mean of the task gradient norms, ``g_i ← g_i · mean_j‖g_j‖ / ‖g_i‖``.
Adam normalises the *summed* shared gradient per coordinate, so a task whose gradient is several times
smaller than the others' (a token-level loss averaged over many tokens beside sentence-level ones) is
otherwise left with a fraction of its learning rate — the equal-magnitude target of GradNorm (Chen et al.
2018), applied directly instead of through learned loss weights.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from bertkit.errors import ConfigError
from bertkit.multitask.config import GRADIENT_BALANCES


def pcgrad_project(
    grads: Sequence[torch.Tensor],
    generator: torch.Generator | None = None,
    orders: Sequence[Sequence[int]] | None = None,
) -> list[torch.Tensor]:
    """Project conflicting components out of each task gradient.

    Args:
        grads: one flat gradient ``[P]`` per task (same shape, same device).
        generator: random source for the visiting orders (ignored when ``orders`` is given).
        orders: explicit visiting order of the *other* tasks for each task (tests, reproducibility).

    Returns:
        The projected gradients ``g_i'`` (``[P]`` each), in the input order. Sum them for the update.
    """
    n = len(grads)
    if n == 0:
        raise ConfigError("pcgrad_project needs at least one gradient")
    if len({tuple(g.shape) for g in grads}) != 1:
        raise ConfigError("pcgrad_project needs gradients of one shape (flatten them first)")
    flat = [g.detach().reshape(-1).to(torch.float32) for g in grads]  # each [P]
    norms_sq = [float(g.dot(g)) for g in flat]
    out: list[torch.Tensor] = []
    for i in range(n):
        if orders is not None:
            order = [int(j) for j in orders[i]]
            if sorted(order) != sorted(j for j in range(n) if j != i):
                raise ConfigError(f"orders[{i}] must list every other task once, got {order}")
        else:
            others = torch.tensor([j for j in range(n) if j != i], dtype=torch.long)
            perm = torch.randperm(len(others), generator=generator) if len(others) else others
            order = others[perm].tolist()
        g = flat[i].clone()
        for j in order:
            dot = float(g.dot(flat[j]))
            if dot < 0.0 and norms_sq[j] > 0.0:
                g = g - (dot / norms_sq[j]) * flat[j]
        out.append(g.to(grads[i].dtype).reshape(grads[i].shape))
    return out


def balance_norms(grads: Sequence[torch.Tensor], norms: Sequence[float] | None = None) -> list[torch.Tensor]:
    """Rescale every non-zero task gradient to the mean norm of the non-zero ones.

    Args:
        grads: one gradient per task (any shapes).
        norms: their norms when already known (the accumulator measures them as it collects).

    Returns:
        ``g_i · m / ‖g_i‖`` with ``m`` the mean of the non-zero norms; zero gradients stay zero (a task that
        does not reach the shared parameters is not inflated).
    """
    norms = list(norms) if norms is not None else [float(g.float().norm()) for g in grads]
    nonzero = [n for n in norms if n > 0.0]
    if not nonzero:
        return [g.clone() for g in grads]
    target = sum(nonzero) / len(nonzero)
    return [g * (target / n) if n > 0.0 else g.clone() for g, n in zip(grads, norms, strict=True)]


def count_conflicts(grads: Sequence[torch.Tensor]) -> int:
    """Number of task pairs whose gradients conflict (negative dot product)."""
    flat = [g.reshape(-1).float() for g in grads]
    return sum(
        1 for i in range(len(flat)) for j in range(i + 1, len(flat)) if float(flat[i].dot(flat[j])) < 0.0
    )


class PCGradAccumulator:
    """Collect each task's gradient on the shared parameters, then write back the PCGrad sum.

    Usage per optimiser step::

        acc = PCGradAccumulator(shared_params, generator)
        for task in tasks:
            loss_t.backward()      # task-specific parameters accumulate as usual
            acc.collect()          # takes (and clears) the shared parameters' gradient of this task
        acc.apply()                # shared .grad = Σ_i g_i' ; returns the number of conflicting pairs

    Args:
        shared_params: the parameters every task updates (encoder, shared adapters, shared fusion).
        generator: random source of the projection orders.
        balance: ``none`` or ``mean_norm`` (:func:`balance_norms` before the projection).
    """

    def __init__(
        self,
        shared_params: Sequence[nn.Parameter],
        generator: torch.Generator | None = None,
        balance: str = "none",
    ) -> None:
        if balance not in GRADIENT_BALANCES:
            raise ConfigError(
                f"PCGrad balance must be one of {', '.join(GRADIENT_BALANCES)}, got {balance!r}"
            )
        self.params = [p for p in shared_params if p.requires_grad]
        self.generator = generator
        self.balance = balance
        self.grads: list[torch.Tensor] = []
        self.norms: list[float] = []  # ||g_i|| of each collected task gradient, before any projection

    def collect(self) -> None:
        """Store the shared gradient of the task just back-propagated and reset it to None."""
        parts = []
        for p in self.params:
            parts.append(
                torch.zeros(p.numel(), device=p.device) if p.grad is None else p.grad.reshape(-1).float()
            )
            p.grad = None
        flat = torch.cat(parts) if parts else torch.zeros(0)  # [P]
        self.grads.append(flat)
        self.norms.append(float(flat.norm()))

    def apply(self) -> int:
        """Write ``Σ_i g_i'`` into the shared parameters' ``.grad``; returns the number of conflicting pairs."""
        if not self.grads or not self.params:
            return 0
        conflicts = count_conflicts(self.grads)
        grads = balance_norms(self.grads, self.norms) if self.balance == "mean_norm" else self.grads
        total = torch.stack(pcgrad_project(grads, self.generator)).sum(0)  # [P]
        offset = 0
        for p in self.params:
            n = p.numel()
            p.grad = total[offset : offset + n].view_as(p).to(p.dtype)
            offset += n
        self.grads, self.norms = [], []
        return conflicts
