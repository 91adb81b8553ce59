"""Greedy model soup (Wortsman et al. 2022): average the weights of several checkpoints of one run, adding a
checkpoint only when the averaged model does not get worse on validation data.

Two entry points: :func:`greedy_soup` over any state dicts or saved folders (model folders written by
``save_pretrained``, or ``checkpoints/step-N`` folders), and :func:`finish_soup`, which the training job calls
after ``Trainer.train`` to soup the weights the :class:`~bertkit.training.tricks.SoupCollector` kept
(``training.soup_size: N``). The soup is chosen on the validation rows, exactly like the best checkpoint.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bertkit.errors import ModelFolderError

logger = logging.getLogger(__name__)

Ingredient = dict[str, torch.Tensor] | str | Path


@dataclass
class SoupResult:
    """What :func:`greedy_soup` returns.

    Attributes:
        weights: the souped state (name → tensor), already loaded into the model.
        chosen: indices (into the ingredient list) of the checkpoints in the soup, in the order added.
        scores: each ingredient's own validation score.
        soup_score: the soup's validation score.
    """

    weights: dict[str, torch.Tensor]
    chosen: list[int]
    scores: list[float]
    soup_score: float
    history: list[dict[str, Any]] = field(default_factory=list)


def load_ingredient(item: Ingredient) -> dict[str, torch.Tensor]:
    """A state dict from a dict, a checkpoint folder (``model.safetensors``) or a model folder."""
    if isinstance(item, dict):
        return item
    from safetensors.torch import load_file

    path = Path(item)
    if (path / "model.safetensors").is_file():
        return load_file(str(path / "model.safetensors"))
    if (path / "model" / "bert").is_dir():
        path = path / "model"
    if (path / "bert" / "model.safetensors").is_file() and (path / "head" / "model.safetensors").is_file():
        state = {f"bert.{k}": v for k, v in load_file(str(path / "bert" / "model.safetensors")).items()}
        state.update({f"head.{k}": v for k, v in load_file(str(path / "head" / "model.safetensors")).items()})
        return state
    raise ModelFolderError(f"{path} is neither a checkpoint folder nor a bertkit model folder")


def average_states(states: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Element-wise mean of floating tensors (others are taken from the first state)."""
    out: dict[str, torch.Tensor] = {}
    for name, first in states[0].items():
        if first.is_floating_point():
            out[name] = torch.stack([s[name].float() for s in states]).mean(0).to(first.dtype)
        else:
            out[name] = first.clone()
    return out


def _load(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    own = model.state_dict()
    with torch.no_grad():
        for name, value in state.items():
            if name in own:
                own[name].copy_(value.to(own[name].device, own[name].dtype))


def greedy_soup(
    model: nn.Module,
    ingredients: Sequence[Ingredient],
    score_fn: Callable[[nn.Module], float],
    greater_is_better: bool = True,
) -> SoupResult:
    """Greedy soup: rank ingredients by their own score, start from the best, and add each next one when the
    average of the soup plus it scores at least as well as the soup.

    Args:
        model: a model of the right architecture; receives the final soup.
        ingredients: state dicts or folders (see :func:`load_ingredient`).
        score_fn: validation score of the model as it currently is.
        greater_is_better: direction of the score.
    """
    if not ingredients:
        raise ValueError("greedy_soup needs at least one ingredient")
    states = [load_ingredient(i) for i in ingredients]
    sign = 1.0 if greater_is_better else -1.0
    scores: list[float] = []
    for state in states:
        _load(model, state)
        scores.append(float(score_fn(model)))
    order = sorted(range(len(states)), key=lambda i: -sign * scores[i])
    chosen = [order[0]]
    best = scores[order[0]]
    history = [{"added": order[0], "score": best, "kept": True}]
    for i in order[1:]:
        candidate = average_states([states[j] for j in [*chosen, i]])
        _load(model, candidate)
        value = float(score_fn(model))
        keep = not np.isnan(value) and sign * value >= sign * best
        history.append({"added": i, "score": value, "kept": keep})
        if keep:
            chosen.append(i)
            best = value
    weights = average_states([states[j] for j in chosen])
    _load(model, weights)
    return SoupResult(weights, chosen, scores, best, history)


def finish_soup(trainer: Any, valid_dataset: Any) -> dict[str, Any] | None:
    """Soup the weights a :class:`SoupCollector` kept during ``trainer.train`` (no-op without one).

    The soup replaces the trainer's model (and ``output_dir/model`` when the trainer writes one). Returns a
    small report (chosen snapshots, scores) or None.
    """
    from bertkit.training.tricks import SoupCollector

    collector = next((t for t in trainer.tricks if isinstance(t, SoupCollector)), None)
    if collector is None or valid_dataset is None or len(collector.snapshots) < 2:
        return None
    metric, greater = trainer._metric_direction()

    def score(_: nn.Module) -> float:
        return float(trainer.evaluate(valid_dataset)[0][metric])

    model = trainer.model
    snapshots = [{f"{k}": v for k, v in s.items()} for s in collector.snapshots]
    result = greedy_soup(model, snapshots, score, greater)
    if trainer.output_dir is not None and trainer.is_main:
        model.save_pretrained(trainer.output_dir / "model")
    report = {
        "metric": metric,
        "chosen": result.chosen,
        "scores": result.scores,
        "soup_score": result.soup_score,
    }
    logger.info("greedy soup: %s", report)
    return report
