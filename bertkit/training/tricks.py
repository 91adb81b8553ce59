"""Training tricks (adversarial training, weight averaging, ...) as small objects the Trainer calls at fixed
points of its loop. Each trick is switched on by a :class:`~bertkit.config.TrainingConfig` field.

Hook order per optimiser step: forward → backward → ``after_backward`` (e.g. an adversarial forward/backward
that adds gradients) → clip → optimiser step → ``after_step`` (e.g. EMA update). Evaluation runs inside
``eval_weights`` (e.g. with EMA weights swapped in); ``on_train_end`` may replace the final weights (SWA).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from torch import nn

from bertkit.config import TrainingConfig


class Trick:
    """Base class: every hook is a no-op."""

    name = "trick"

    def on_train_begin(self, model: nn.Module, config: TrainingConfig, total_steps: int, steps_per_epoch: int) -> None:
        """Called once before the first step (after a resume too)."""

    def after_backward(self, model: nn.Module, batch: dict[str, Any], epoch: int, accelerator: Any) -> None:
        """Called after the main backward pass, before clipping and the optimiser step."""

    def after_step(self, model: nn.Module, step: int, epoch: int) -> None:
        """Called after each optimiser step."""

    @contextmanager
    def eval_weights(self, model: nn.Module) -> Iterator[None]:
        """Context in which evaluation (and saving the best model) happens."""
        yield

    def on_train_end(self, model: nn.Module) -> None:
        """Called once after the last step, before the best weights are restored."""


@contextmanager
def all_eval_weights(tricks: list[Trick], model: nn.Module) -> Iterator[None]:
    """Enter every trick's ``eval_weights`` context."""
    with ExitStack() as stack:
        for trick in tricks:
            stack.enter_context(trick.eval_weights(model))
        yield


def build_tricks(config: TrainingConfig) -> list[Trick]:
    """The tricks switched on in ``config`` (none by default)."""
    return []
