"""Task sampling (which task the next batch comes from), endless per-task batch streams, loss weighting.

* ``proportional``: ``p_t ∝ n_t`` (every training example is seen about equally often).
* ``temperature``: ``p_t ∝ n_t^(1/T)``; T=1 is proportional, T→∞ uniform; T≈2 up-samples small tasks.
* ``round_robin``: tasks in turn, in a fixed order.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from bertkit.config import check_choice
from bertkit.data.samplers import LengthBucketBatchSampler
from bertkit.errors import ConfigError
from bertkit.multitask.config import SAMPLINGS


def sampling_probabilities(
    sizes: dict[str, int], strategy: str, temperature: float = 1.0
) -> dict[str, float]:
    """The probability of drawing each task.

    Args:
        sizes: task → number of training examples.
        strategy: ``proportional``, ``temperature`` or ``round_robin`` (uniform over a cycle).
        temperature: T of ``temperature`` sampling (``p ∝ n^(1/T)``).
    """
    strategy = check_choice("sampling", strategy, SAMPLINGS)
    if not sizes or any(n <= 0 for n in sizes.values()):
        raise ConfigError(f"every task needs training examples; sizes: {sizes}")
    if strategy == "round_robin":
        return {t: 1.0 / len(sizes) for t in sizes}
    power = 1.0 if strategy == "proportional" else 1.0 / float(temperature)
    raw = {t: math.pow(float(n), power) for t, n in sizes.items()}
    total = sum(raw.values())
    return {t: v / total for t, v in raw.items()}


class TaskSampler:
    """Draws task names for successive training steps (seeded, reproducible).

    Args:
        sizes: task → number of training examples.
        strategy: see :func:`sampling_probabilities`.
        temperature: T of temperature sampling.
        seed: random seed.
    """

    def __init__(
        self, sizes: dict[str, int], strategy: str = "temperature", temperature: float = 2.0, seed: int = 0
    ) -> None:
        self.tasks = list(sizes)
        self.strategy = check_choice("sampling", strategy, SAMPLINGS)
        self.probabilities = sampling_probabilities(sizes, self.strategy, temperature)
        self._p = np.array([self.probabilities[t] for t in self.tasks])
        self._rng = np.random.default_rng(seed)
        self._step = 0

    def __iter__(self) -> Iterator[str]:
        return self

    def __next__(self) -> str:
        if self.strategy == "round_robin":
            task = self.tasks[self._step % len(self.tasks)]
        else:
            task = self.tasks[int(self._rng.choice(len(self.tasks), p=self._p))]
        self._step += 1
        return task


class BatchStream:
    """An endless stream of index batches over one task's dataset (a new shuffled epoch when one ends).

    Args:
        lengths: token length of every example (length-bucketed random batches).
        batch_size: examples per batch.
        seed: random seed.
        bucket_multiplier: bucket size in batches (1: plain random batches).
    """

    def __init__(
        self, lengths: list[int], batch_size: int, seed: int = 0, bucket_multiplier: int = 50
    ) -> None:
        if not lengths:
            raise ConfigError("a task has no training examples")
        self.sampler = LengthBucketBatchSampler(
            lengths, batch_size, seed=seed, shuffle=True, bucket_multiplier=bucket_multiplier
        )
        self.epoch = 0
        self._batches: list[list[int]] = []
        self._pos = 0

    def __next__(self) -> list[int]:
        if self._pos >= len(self._batches):
            self.sampler.set_epoch(self.epoch)
            self._batches = [list(b) for b in self.sampler]
            self.epoch += 1
            self._pos = 0
        batch = self._batches[self._pos]
        self._pos += 1
        return batch

    def __len__(self) -> int:
        return len(self.sampler)


class UncertaintyWeighting(nn.Module):
    """Learned task weights by homoscedastic uncertainty (Kendall, Gal & Cipolla 2018).

    ``L = Σ_t exp(-s_t) · L_t + s_t`` with one learned ``s_t = log σ_t²`` per task (initialised at 0, i.e.
    weight 1); a task whose loss stays high gets a smaller weight, and the ``+ s_t`` term stops all weights
    from collapsing to 0.
    """

    def __init__(self, tasks: list[str]) -> None:
        super().__init__()
        self.tasks = list(tasks)
        self.log_vars = nn.Parameter(torch.zeros(len(self.tasks)))

    def forward(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        """The weighted loss of one task (a scalar)."""
        s = self.log_vars[self.tasks.index(task)]
        return torch.exp(-s) * loss + s

    def weights(self) -> dict[str, float]:
        """Current effective weights ``exp(-s_t)``."""
        return {t: float(torch.exp(-v)) for t, v in zip(self.tasks, self.log_vars.detach())}


class StaticWeighting(nn.Module):
    """Fixed per-task loss weights (the ``weight`` of each task)."""

    def __init__(self, weights: dict[str, float]) -> None:
        super().__init__()
        self._weights = dict(weights)

    def forward(self, task: str, loss: torch.Tensor) -> torch.Tensor:
        return loss * float(self._weights.get(task, 1.0))

    def weights(self) -> dict[str, float]:
        return dict(self._weights)


def make_weighting(kind: str, weights: dict[str, float]) -> Any:
    """``static`` → :class:`StaticWeighting`, ``uncertainty`` → :class:`UncertaintyWeighting`."""
    kind = check_choice("loss_weighting", kind, ("static", "uncertainty"))
    return StaticWeighting(weights) if kind == "static" else UncertaintyWeighting(list(weights))
