"""Trainable-parameter counting, the parity assertion, and the A1–A4 ablation models with matched budgets.

========  ==================================  =========================================================
variant   adapters                            purpose
========  ==================================  =========================================================
A1        shared LoRA, r=24 (strategy s2)     lower bound: everything shared
A2        private LoRA per task, r=24 (s1)    upper bound: nothing shared
A3        shared r=16 + private r=8, concat   composition without a fusion module
A4        shared r=16 + private r=8, attn     the full model (attention fusion)
========  ==================================  =========================================================

The nominal ranks do not give equal budgets (A2 has one r=24 adapter *per task*; A4 has fusion weights), so
:func:`build_ablation_models` measures A4 and re-solves the adjustable rank of A1, A2 and A3 — a LoRA
adapter's size is linear in its rank — until every variant is within ``tolerance`` of the others, then
asserts it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from bertkit.errors import ConfigError

#: nominal adapter settings of the ablations, and the rank field adjusted for parity (None: the reference)
ABLATIONS: dict[str, tuple[dict[str, Any], str | None]] = {
    "A1": ({"strategy": "s2", "shared_rank": 24}, "shared_rank"),
    "A2": ({"strategy": "s1", "private_rank": 24}, "private_rank"),
    "A3": ({"strategy": "s3a", "shared_rank": 16, "private_rank": 8, "fusion": "concat"}, "shared_rank"),
    "A4": ({"strategy": "s3a", "shared_rank": 16, "private_rank": 8, "fusion": "attention"}, None),
}


class ParityError(ConfigError):
    """Trainable parameter counts differ by more than the tolerance."""


def count_trainable_parameters(model: nn.Module | int) -> int:
    """Number of trainable (``requires_grad``) parameters, each shared tensor counted once; ints pass through."""
    if isinstance(model, int):
        return model
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


def assert_parameter_parity(models: dict[str, nn.Module | int], tolerance: float = 0.05) -> dict[str, int]:
    """Raise :class:`ParityError` unless ``(max - min) / max <= tolerance`` over the trainable counts.

    Args:
        models: name → model (or a precomputed count).
        tolerance: allowed relative spread (0.05 = 5%).

    Returns:
        name → trainable parameter count.
    """
    if not models:
        raise ConfigError("assert_parameter_parity needs at least one model")
    counts = {name: count_trainable_parameters(m) for name, m in models.items()}
    hi, lo = max(counts.values()), min(counts.values())
    spread = (hi - lo) / hi if hi else 0.0
    if spread > tolerance:
        listing = ", ".join(f"{k}={v:,}" for k, v in counts.items())
        raise ParityError(
            f"trainable parameters differ by {spread:.1%} (> {tolerance:.0%}): {listing}; adjust the ranks "
            "(build_ablation_models does it automatically)"
        )
    return counts


def _adapter_rank_cost(model: Any, field_name: str) -> tuple[int, int]:
    """(parameters of the adapters a rank field controls, that rank) in a built model."""
    strategy = model.strategy
    rank = int(getattr(strategy.config, field_name))
    names = (
        {"shared"} if field_name == "shared_rank" else {a for a in strategy.adapter_ranks() if a != "shared"}
    )
    params = sum(p.numel() for p, adapter in strategy._lora_params if adapter in names)
    return params, rank


def build_ablation_models(
    task_configs: dict[str, Any],
    bert_name: str | None = "minilm",
    tolerance: float = 0.05,
    variants: tuple[str, ...] = ("A1", "A2", "A3", "A4"),
    adapter_overrides: dict[str, Any] | None = None,
    build: Callable[..., Any] | None = None,
    **model_kwargs: Any,
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """Build the A1–A4 ablation models with ranks adjusted to A4's trainable budget, then assert parity.

    Args:
        task_configs: the tasks (as for :func:`~bertkit.multitask.model.create_multi_task_model`).
        bert_name: the shared backbone.
        tolerance: parity tolerance.
        variants: which ablations to build (A4 is always built as the reference).
        adapter_overrides: adapter settings applied to every variant (target modules, alpha ratio...).
        build: model factory (default :func:`create_multi_task_model`).
        **model_kwargs: further factory arguments (``bert_config``, ``tokenizer``...).
            ``use_task_specific_projections`` defaults to False here: an ``H → H`` projection per task
            (``2H → 2H`` behind concat fusion) would outweigh the adapters being compared.

    Returns:
        (variant → model, variant → adapter settings used).
    """
    from bertkit.multitask.model import create_multi_task_model

    build = build or create_multi_task_model
    common = dict(adapter_overrides or {})
    model_kwargs.setdefault("use_task_specific_projections", False)

    def make(settings: dict[str, Any]) -> Any:
        return build(task_configs, bert_name=bert_name, adapters={**common, **settings}, **model_kwargs)

    reference_settings = dict(ABLATIONS["A4"][0])
    models = {"A4": make(reference_settings)}
    settings_used = {"A4": reference_settings}
    target = count_trainable_parameters(models["A4"])
    for name in variants:
        if name == "A4":
            continue
        if name not in ABLATIONS:
            raise ConfigError(f"unknown ablation '{name}'; choose from {', '.join(ABLATIONS)}")
        settings, field_name = dict(ABLATIONS[name][0]), ABLATIONS[name][1]
        model = make(settings)
        assert field_name is not None
        cost, rank = _adapter_rank_cost(model, field_name)
        per_rank = cost / rank
        fixed = count_trainable_parameters(model) - cost
        new_rank = int(round((target - fixed) / per_rank))
        if new_rank < 1:
            raise ParityError(
                f"{name} cannot match A4's budget ({target:,}) by its {field_name}: its other trainable "
                f"parameters alone are {fixed:,}"
            )
        if new_rank != rank:
            settings[field_name] = new_rank
            model = make(settings)
        models[name], settings_used[name] = model, settings
    ordered = {k: models[k] for k in ("A1", "A2", "A3", "A4") if k in models}
    assert_parameter_parity(ordered, tolerance)
    return ordered, {k: settings_used[k] for k in ordered}
