"""Re-initialise the top N encoder layers before fine-tuning (Zhang et al. 2021, "Revisiting Few-sample BERT
Fine-tuning"): the top layers of a pre-trained encoder are specialised to the pre-training task, and fresh
ones often fine-tune more stably on small data. Switch: ``training.reinit_layers: N``.
"""

from __future__ import annotations

import torch
from torch import nn

from bertkit.errors import ConfigError


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm) or "norm" in type(module).__name__.lower()


@torch.no_grad()
def reinit_module(module: nn.Module, std: float, generator: torch.Generator) -> None:
    """BERT's initialisation: N(0, std) linear/embedding weights, zero biases, unit norm weights."""
    for sub in module.modules():
        if isinstance(sub, nn.Linear | nn.Embedding | nn.Conv1d):
            sub.weight.copy_(torch.randn(sub.weight.shape, generator=generator) * std)
            if getattr(sub, "bias", None) is not None:
                sub.bias.zero_()
        elif _is_norm(sub):
            if getattr(sub, "weight", None) is not None:
                sub.weight.fill_(1.0)
            if getattr(sub, "bias", None) is not None:
                sub.bias.zero_()


def reinit_top_layers(
    bert: nn.Module, num_layers: int, seed: int = 0, include_pooler: bool = True
) -> list[str]:
    """Re-initialise the top ``num_layers`` transformer layers of a :class:`~bertkit.encoder.BertCore`.

    Args:
        bert: the encoder (``bert.layers`` bottom first, ``bert.hf_config.initializer_range`` for the std).
        num_layers: how many layers from the top (0: nothing).
        seed: seeds the new weights (same seed → same weights).
        include_pooler: also re-initialise the backbone's native pooler (it sits above the top layer).

    Returns:
        The names (relative to ``bert``) of the re-initialised parameters.
    """
    layers = list(bert.layers)
    if not 0 <= num_layers <= len(layers):
        raise ConfigError(
            f"reinit_layers={num_layers} is out of range; this encoder has {len(layers)} layers"
        )
    if num_layers == 0:
        return []
    std = float(getattr(bert.hf_config, "initializer_range", 0.02) or 0.02)
    gen = torch.Generator().manual_seed(int(seed))
    targets: list[nn.Module] = layers[len(layers) - num_layers :]
    pooler = getattr(getattr(bert, "model", None), "pooler", None)
    if include_pooler and isinstance(pooler, nn.Module):
        targets.append(pooler)
    ids = {id(p) for m in targets for p in m.parameters()}
    for module in targets:
        reinit_module(module, std, gen)
    return [n for n, p in bert.named_parameters() if id(p) in ids]
