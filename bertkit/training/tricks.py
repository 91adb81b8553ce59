"""Training tricks (adversarial training, weight averaging, ...) as small objects the Trainer calls at fixed
points of its loop. Each trick is switched on by a :class:`~bertkit.config.TrainingConfig` field.

Hook order per optimiser step: forward → backward → ``after_backward`` (e.g. an adversarial forward/backward
that adds gradients) → clip → optimiser step → ``after_step`` (e.g. EMA update). Evaluation runs inside
``eval_weights`` (e.g. with EMA weights swapped in); ``on_train_end`` may replace the final weights (SWA).

Switches (see docs/competition.md): ``adversarial: fgm|awp`` (:class:`FGM`, :class:`AWP`), ``ema_decay``
(:class:`EMA`), ``swa_epochs`` (:class:`SWA`), ``soup_size`` (:class:`SoupCollector` +
:func:`bertkit.training.soup.finish_soup`). Averages live in memory: a resumed run restarts them.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

import torch
from torch import nn

from bertkit.config import TrainingConfig


class Trick:
    """Base class: every hook is a no-op."""

    name = "trick"

    def on_train_begin(
        self, model: nn.Module, config: TrainingConfig, total_steps: int, steps_per_epoch: int
    ) -> None:
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


def _backward(accelerator: Any, loss: torch.Tensor) -> None:
    if accelerator is not None and hasattr(accelerator, "backward"):
        accelerator.backward(loss)
    else:
        loss.backward()


def _unwrap(model: nn.Module) -> nn.Module:
    """The BertWithHead under DDP / torch.compile wrappers."""
    while hasattr(model, "module") or hasattr(model, "_orig_mod"):
        model = getattr(model, "module", None) or model._orig_mod
    return model


# ------------------------------------------------------------------------------------------ adversarial
class FGM(Trick):
    """Fast Gradient Method on the word embeddings (Miyato et al. 2017).

    After the clean backward, the embedding table moves by ``r = epsilon * g / ||g||`` (``g`` its gradient),
    a second forward/backward on the same batch adds the adversarial gradients, and the table is restored
    bit for bit. Costs one extra forward/backward per step.

    Args:
        epsilon: L2 norm of the perturbation of the embedding matrix.
        start_epoch: first (0-based) epoch with adversarial steps.
    """

    name = "fgm"

    def __init__(self, epsilon: float = 1.0, start_epoch: int = 0) -> None:
        self.epsilon = float(epsilon)
        self.start_epoch = int(start_epoch)

    def after_backward(self, model: nn.Module, batch: dict[str, Any], epoch: int, accelerator: Any) -> None:
        if epoch < self.start_epoch:
            return
        weight = _unwrap(model).bert.get_input_embeddings().weight  # [V, H]
        if not weight.requires_grad or weight.grad is None:
            return
        norm = torch.linalg.vector_norm(weight.grad.float())
        if not torch.isfinite(norm) or norm == 0:
            return
        backup = weight.data.clone()
        weight.data.add_((self.epsilon * weight.grad / norm).to(weight.dtype))
        try:
            _backward(accelerator, model(**batch)["loss"])
        finally:
            weight.data.copy_(backup)


class AWP(Trick):
    """Adversarial Weight Perturbation (Wu et al. 2020), the Kaggle variant with relative step and box.

    Every trainable parameter whose name contains ``"weight"`` moves by ``lr * g/||g|| * ||w||``, clipped to
    ``w0 ± epsilon * |w0|`` element-wise; a second forward/backward on the perturbed weights adds its
    gradients, and the weights are restored bit for bit. Costs one extra forward/backward per step.

    Args:
        lr: step size relative to each weight tensor's norm.
        epsilon: the perturbation box relative to each weight's magnitude.
        start_epoch: first (0-based) epoch with adversarial steps (AWP usually starts after the first).
    """

    name = "awp"

    def __init__(self, lr: float = 1.0, epsilon: float = 0.01, start_epoch: int = 0) -> None:
        self.lr = float(lr)
        self.epsilon = float(epsilon)
        self.start_epoch = int(start_epoch)

    @staticmethod
    def targets(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
        """Parameters AWP perturbs: trainable, with a gradient, named ``*weight*``."""
        return [
            (n, p)
            for n, p in model.named_parameters()
            if p.requires_grad and p.grad is not None and "weight" in n
        ]

    def after_backward(self, model: nn.Module, batch: dict[str, Any], epoch: int, accelerator: Any) -> None:
        if epoch < self.start_epoch or self.lr == 0:
            return
        backup: dict[str, torch.Tensor] = {}
        with torch.no_grad():
            for name, p in self.targets(_unwrap(model)):
                g_norm = torch.linalg.vector_norm(p.grad.float())
                if not torch.isfinite(g_norm) or g_norm == 0:
                    continue
                backup[name] = p.data.clone()
                w_norm = torch.linalg.vector_norm(p.data.float())
                step = self.lr * p.grad.float() / (g_norm + 1e-6) * (w_norm + 1e-6)
                box = self.epsilon * backup[name].abs()
                p.data.copy_(torch.clamp(p.data + step.to(p.dtype), backup[name] - box, backup[name] + box))
        if not backup:
            return
        params = dict(_unwrap(model).named_parameters())
        try:
            _backward(accelerator, model(**batch)["loss"])
        finally:
            with torch.no_grad():
                for name, value in backup.items():
                    params[name].data.copy_(value)


# ------------------------------------------------------------------------------------- weight averages
def _float_params(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.is_floating_point()}


@contextmanager
def _swapped(model: nn.Module, weights: dict[str, torch.Tensor]) -> Iterator[None]:
    """Temporarily load ``weights`` (name → tensor) into the model's parameters."""
    params = _float_params(model)
    backup = {n: params[n].detach().clone() for n in weights}
    with torch.no_grad():
        for n, w in weights.items():
            params[n].copy_(w)
    try:
        yield
    finally:
        with torch.no_grad():
            for n, w in backup.items():
                params[n].copy_(w)


class EMA(Trick):
    """Exponential moving average of the weights: ``ema = d_t * ema + (1 - d_t) * w`` after every step.

    ``d_t = min(decay, (1 + t) / (10 + t))`` (t = number of updates so far) ramps the decay up so that short
    runs are not dominated by the initial weights. Evaluation (and so the best model) runs with the EMA
    weights swapped in; the final weights are the EMA weights.

    Args:
        decay: the long-run decay (e.g. 0.999; 0.99–0.995 for a few hundred steps).
    """

    name = "ema"

    def __init__(self, decay: float = 0.999) -> None:
        self.decay = float(decay)
        self.shadow: dict[str, torch.Tensor] = {}
        self.num_updates = 0

    def decay_at(self, t: int) -> float:
        """The decay used for update number ``t`` (0-based)."""
        return min(self.decay, (1.0 + t) / (10.0 + t))

    def on_train_begin(
        self, model: nn.Module, config: TrainingConfig, total_steps: int, steps_per_epoch: int
    ) -> None:
        self.shadow = {n: p.detach().clone() for n, p in _float_params(model).items()}
        self.num_updates = 0

    def after_step(self, model: nn.Module, step: int, epoch: int) -> None:
        d = self.decay_at(self.num_updates)
        self.num_updates += 1
        with torch.no_grad():
            for n, p in _float_params(model).items():
                self.shadow[n].mul_(d).add_(p.detach(), alpha=1.0 - d)

    @contextmanager
    def eval_weights(self, model: nn.Module) -> Iterator[None]:
        if not self.num_updates:
            yield
            return
        with _swapped(model, self.shadow):
            yield

    def on_train_end(self, model: nn.Module) -> None:
        if self.num_updates:
            with torch.no_grad():
                params = _float_params(model)
                for n, w in self.shadow.items():
                    params[n].copy_(w)


class SWA(Trick):
    """Stochastic weight averaging (Izmailov et al. 2018): the uniform average of weight snapshots taken at
    evenly spaced steps over the last ``epochs`` epochs (the last step included).

    The final evaluation (and so the best model, when it wins) uses the average; the final weights are the
    average. Works with any schedule; a cosine or linear decay to 0 makes the snapshots close, a constant
    tail makes them diverse.

    Args:
        epochs: length of the averaging window in epochs.
        snapshots_per_epoch: snapshots per epoch inside the window.
    """

    name = "swa"

    def __init__(self, epochs: int = 1, snapshots_per_epoch: int = 4) -> None:
        self.epochs = int(epochs)
        self.snapshots_per_epoch = int(snapshots_per_epoch)
        self.average: dict[str, torch.Tensor] = {}
        self.count = 0
        self.snapshot_steps: set[int] = set()
        self.total_steps = 0
        self.last_step = 0

    def on_train_begin(
        self, model: nn.Module, config: TrainingConfig, total_steps: int, steps_per_epoch: int
    ) -> None:
        window = min(total_steps, self.epochs * steps_per_epoch)
        start = total_steps - window
        n = max(1, min(window, self.epochs * self.snapshots_per_epoch))
        self.snapshot_steps = {start + round((i + 1) * window / n) for i in range(n)}
        self.total_steps, self.average, self.count = total_steps, {}, 0

    def after_step(self, model: nn.Module, step: int, epoch: int) -> None:
        self.last_step = step
        if step not in self.snapshot_steps:
            return
        self.count += 1
        with torch.no_grad():
            for n, p in _float_params(model).items():
                if n not in self.average:
                    self.average[n] = p.detach().clone()
                else:
                    self.average[n].add_(p.detach() - self.average[n], alpha=1.0 / self.count)

    @contextmanager
    def eval_weights(self, model: nn.Module) -> Iterator[None]:
        if not self.count or self.last_step < self.total_steps:
            yield
            return
        with _swapped(model, self.average):
            yield

    def on_train_end(self, model: nn.Module) -> None:
        if self.count:
            with torch.no_grad():
                params = _float_params(model)
                for n, w in self.average.items():
                    params[n].copy_(w)


class SoupCollector(Trick):
    """Keeps (on CPU) the weights of the last ``size`` evaluations for a greedy soup after training
    (:func:`bertkit.training.soup.finish_soup`). Listed last, it sees EMA/SWA weights when those are on."""

    name = "soup"

    def __init__(self, size: int = 4) -> None:
        self.size = int(size)
        self.snapshots: deque[dict[str, torch.Tensor]] = deque(maxlen=self.size)

    def on_train_begin(
        self, model: nn.Module, config: TrainingConfig, total_steps: int, steps_per_epoch: int
    ) -> None:
        self.snapshots.clear()

    @contextmanager
    def eval_weights(self, model: nn.Module) -> Iterator[None]:
        self.snapshots.append({n: p.detach().cpu().clone() for n, p in _float_params(model).items()})
        yield


def build_tricks(config: TrainingConfig) -> list[Trick]:
    """The tricks switched on in ``config`` (none by default), in hook order."""
    tricks: list[Trick] = []
    if config.adversarial == "fgm":
        tricks.append(FGM(config.fgm_epsilon, config.adv_start_epoch))
    elif config.adversarial == "awp":
        tricks.append(AWP(config.awp_lr, config.awp_epsilon, config.adv_start_epoch))
    if config.ema_decay > 0:
        tricks.append(EMA(config.ema_decay))
    if config.swa_epochs > 0:
        tricks.append(SWA(config.swa_epochs, config.swa_snapshots_per_epoch))
    if config.soup_size > 0:
        tricks.append(SoupCollector(config.soup_size))
    return tricks
