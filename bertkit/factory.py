"""Factories: the short ways to build an encoder, an encoder with a head, or a model for a task."""

from __future__ import annotations

import dataclasses
from typing import Any

from bertkit.config import BertConfig, HeadConfig, HeadType, PoolingType
from bertkit.encoder import BertCore
from bertkit.errors import ConfigError
from bertkit.heads import get_head_class, heads_for_competition
from bertkit.model import BertWithHead, load_tokenizer

DEFAULT_BACKBONE = "minilm"

#: Head, pooling and loss defaults per competition type (documented in docs/heads.md).
COMPETITION_DEFAULTS: dict[str, dict[str, Any]] = {
    "binary_classification": {"pooling_type": "cls", "loss_type": "bce"},
    "imbalanced_binary": {"head_type": "binary_classification", "pooling_type": "cls", "loss_type": "focal"},
    "multiclass_classification": {"pooling_type": "cls", "loss_type": "ce", "label_smoothing": 0.05},
    "multilabel_classification": {"pooling_type": "cls", "loss_type": "bce"},
    "regression": {"pooling_type": "mean", "loss_type": "mse", "dropout_prob": 0.0},
    "ordinal_regression": {"pooling_type": "mean", "loss_type": "coral"},
    "hierarchical_classification": {"pooling_type": "cls"},
}

_TASK_ALIASES = {
    "binary": "binary_classification",
    "multiclass": "multiclass_classification",
    "classification": "multiclass_classification",
    "sentiment": "multiclass_classification",
    "multilabel": "multilabel_classification",
    "ordinal": "ordinal_regression",
    "ensemble": "ensemble_classification",
    "hierarchical": "hierarchical_classification",
}


def create_bert_core(
    name_or_path: str | None = None, config: BertConfig | dict[str, Any] | None = None, **kwargs: Any
) -> BertCore:
    """Build an encoder.

    Examples:
        >>> create_bert_core("minilm")                                # bundled pretrained MiniLM
        >>> create_bert_core("path/to/hf_model_folder")               # local folder or hub id
        >>> create_bert_core(hidden_size=256, num_hidden_layers=4, num_attention_heads=4)  # random init

    Args:
        name_or_path: "minilm", a local folder or a hub id; None builds from ``config``/``kwargs``.
        config: a :class:`BertConfig` or its dict form.
        **kwargs: :class:`BertConfig` fields (override ``config``).
    """
    cfg = _bert_config(name_or_path, config, kwargs)
    return BertCore(cfg)


def _bert_config(
    name: str | None, config: BertConfig | dict[str, Any] | None, kwargs: dict[str, Any]
) -> BertConfig:
    base = config.to_dict() if isinstance(config, BertConfig) else dict(config or {})
    base.update(kwargs)
    if name is not None:
        base["model_name_or_path"] = name
    return BertConfig.from_dict(base)


def _normalise_head_type(head_type: str | HeadType | None, num_labels: int) -> str:
    if head_type is None:
        return (
            HeadType.BINARY_CLASSIFICATION.value
            if num_labels == 2
            else HeadType.MULTICLASS_CLASSIFICATION.value
        )
    name = str(getattr(head_type, "value", head_type)).lower()
    name = _TASK_ALIASES.get(name, name)
    get_head_class(name)  # unknown names raise listing the valid ones
    return name


def create_bert_with_head(
    head_type: str | HeadType | None = None,
    num_labels: int = 2,
    bert_name: str | None = None,
    bert_config: BertConfig | dict[str, Any] | None = None,
    head_config: HeadConfig | dict[str, Any] | None = None,
    freeze_bert: bool = False,
    freeze_bert_layers: int = 0,
    label_names: list[str] | None = None,
    pooling_type: str | PoolingType | None = None,
    tokenizer: Any | None = None,
    metadata: dict[str, Any] | None = None,
    **head_kwargs: Any,
) -> BertWithHead:
    """Build an encoder and a registered head in one call.

    Example:
        >>> model = create_bert_with_head(head_type=HeadType.BINARY_CLASSIFICATION, num_labels=2,
        ...                               bert_name="minilm", freeze_bert_layers=2)

    Args:
        head_type: registry name or :class:`HeadType` (default: binary for 2 labels, else multiclass).
        num_labels: classes / labels / targets.
        bert_name: "minilm" (default when no ``bert_config`` is given), a local folder or a hub id.
        bert_config: from-scratch or detailed encoder config (``BertConfig`` or dict).
        head_config: a :class:`HeadConfig` or dict; ``input_size`` defaults to the encoder's hidden size.
        freeze_bert: freeze the whole encoder.
        freeze_bert_layers: freeze the embeddings and the first k layers.
        label_names: class names used for decoding and reports.
        pooling_type: override the head's default pooling ("last" for decoder-only backbones).
        tokenizer: a tokenizer to keep with the model (default: the backbone's, or the bundled one).
        metadata: JSON-able facts saved in ``model_metadata.json``.
        **head_kwargs: further :class:`HeadConfig` fields (``loss_type``, ``dropout_prob``, ``extra``...).
    """
    if bert_name is None and bert_config is None:
        bert_name = DEFAULT_BACKBONE
    bert = BertCore(_bert_config(bert_name, bert_config, {}))
    if isinstance(head_config, HeadConfig):
        hc = head_config.to_dict()
        explicit_input = True
    else:
        hc = dict(head_config or {})
        explicit_input = "input_size" in hc
    if head_type is not None or "head_type" not in hc:
        hc["head_type"] = _normalise_head_type(head_type, int(hc.get("num_labels", num_labels)))
    else:
        hc["head_type"] = _normalise_head_type(hc["head_type"], int(hc.get("num_labels", num_labels)))
    hc.setdefault("num_labels", num_labels)
    if label_names is not None:
        hc["label_names"] = list(label_names)
        hc["num_labels"] = len(label_names) if hc["head_type"] != "regression" else hc["num_labels"]
    if not explicit_input:
        hc["input_size"] = bert.hidden_size
    hc.update(head_kwargs)
    head_cls = get_head_class(hc["head_type"])
    if pooling_type is not None:
        hc["pooling_type"] = getattr(pooling_type, "value", pooling_type)
    elif "pooling_type" not in hc:
        hc["pooling_type"] = "last" if bert.decoder_only else head_cls.default_pooling
    head = head_cls(HeadConfig.from_dict(hc))
    if getattr(head.pooler, "needs_hidden_states", False):
        bert.config.output_hidden_states = True  # layer poolings read every layer (saved with the encoder)
    if tokenizer is None:
        tokenizer = load_tokenizer(bert.config.model_name_or_path)
    model = BertWithHead(bert, head, tokenizer=tokenizer, metadata=metadata)
    if freeze_bert:
        model.freeze_bert()
    elif freeze_bert_layers:
        model.freeze_bert(num_layers=freeze_bert_layers)
    return model


def create_model(
    model_type: str = "bert_with_head",
    head_type: str | HeadType | None = None,
    num_labels: int = 2,
    config: dict[str, Any] | None = None,
    **kwargs: Any,
) -> BertCore | BertWithHead:
    """Build by model type: ``"bert_core"`` or ``"bert_with_head"``.

    ``config`` holds :class:`BertConfig` fields (a from-scratch encoder unless it names
    ``model_name_or_path``); without it the bundled MiniLM is used.
    """
    kind = str(model_type).lower()
    if kind not in ("bert_core", "bert_with_head"):
        raise ConfigError(f"model_type='{model_type}' is not valid; choose one of: bert_core, bert_with_head")
    bert_name = None if config else DEFAULT_BACKBONE
    if kind == "bert_core":
        return create_bert_core(bert_name, config=config)
    return create_bert_with_head(
        head_type=head_type, num_labels=num_labels, bert_name=bert_name, bert_config=config, **kwargs
    )


def create_bert_for_task(
    task: str | HeadType, num_labels: int = 2, freeze_bert: bool = False, **kwargs: Any
) -> BertWithHead:
    """Build a model for a task name (``"binary"``, ``"regression"``, a :class:`HeadType`...)."""
    return create_bert_with_head(head_type=task, num_labels=num_labels, freeze_bert=freeze_bert, **kwargs)


def create_bert_for_competition(competition_type: str, num_labels: int = 2, **kwargs: Any) -> BertWithHead:
    """Build a model with the head, pooling and loss defaults of a competition type.

    The best registered head for the type is chosen by registry priority; ``COMPETITION_DEFAULTS`` gives
    pooling/loss defaults (see docs/heads.md). Keyword arguments override any default.
    """
    key = str(getattr(competition_type, "value", competition_type)).lower()
    key = _TASK_ALIASES.get(key, key)
    defaults = dict(COMPETITION_DEFAULTS.get(key, {}))
    head_type = defaults.pop("head_type", None)
    if head_type is None:
        candidates = heads_for_competition(key)
        if not candidates:
            known = sorted(set(COMPETITION_DEFAULTS) | set(_all_comp_types()))
            raise ConfigError(
                f"unknown competition type '{competition_type}'; known types: {', '.join(known)}"
            )
        head_type = candidates[0]
    defaults.update(kwargs)
    return create_bert_with_head(head_type=head_type, num_labels=num_labels, **defaults)


def _all_comp_types() -> list[str]:
    from bertkit.heads import HEADS

    return sorted({t for n in HEADS.names() for t in HEADS.meta(n)["competition_types"]})


def head_config_fields() -> list[str]:
    """Names of :class:`HeadConfig` fields (for CLI help)."""
    return [f.name for f in dataclasses.fields(HeadConfig)]
