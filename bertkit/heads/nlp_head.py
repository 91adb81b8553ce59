"""``create_nlp_head``: the keyword spelling of the registered heads (one implementation, two spellings).

``create_nlp_head(NLPTaskConfig(...), input_dim, use_task_attention=True, ...)`` maps the task type to a
registered head name and the keyword options to :class:`~bertkit.config.HeadConfig` fields and ``extra``
keys, then builds the head through the registry, exactly like ``create_bert_with_head`` does. The block
options are plain ``extra`` data, so heads built either way save and load the same way.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from bertkit.config import HeadConfig, PoolingType, check_choice
from bertkit.errors import ConfigError
from bertkit.heads.base import BaseHead, create_head, get_head_class
from bertkit.heads.blocks import ATTENTION_TYPES, FFN_TYPES, NORM_TYPES


class NLPTaskType(str, enum.Enum):
    """NLP task types; each maps to a registered head (see ``NLP_TASK_HEADS``)."""

    TEXT_CLASSIFICATION = "text_classification"
    SENTIMENT_ANALYSIS = "sentiment_analysis"
    NATURAL_LANGUAGE_INFERENCE = "natural_language_inference"
    BINARY_CLASSIFICATION = "binary_classification"
    MULTILABEL_CLASSIFICATION = "multilabel_classification"
    REGRESSION = "regression"
    ORDINAL_REGRESSION = "ordinal_regression"
    NAMED_ENTITY_RECOGNITION = "named_entity_recognition"
    TOKEN_CLASSIFICATION = "token_classification"
    PART_OF_SPEECH_TAGGING = "part_of_speech_tagging"
    QUESTION_ANSWERING = "question_answering"
    TEXT_SIMILARITY = "text_similarity"
    TIMESERIES_CLASSIFICATION = "timeseries_classification"
    TIMESERIES_REGRESSION = "timeseries_regression"


#: task type -> registry name of the head that implements it
NLP_TASK_HEADS: dict[str, str] = {
    NLPTaskType.TEXT_CLASSIFICATION.value: "multiclass_classification",
    NLPTaskType.SENTIMENT_ANALYSIS.value: "multiclass_classification",
    NLPTaskType.NATURAL_LANGUAGE_INFERENCE.value: "multiclass_classification",
    NLPTaskType.BINARY_CLASSIFICATION.value: "binary_classification",
    NLPTaskType.MULTILABEL_CLASSIFICATION.value: "multilabel_classification",
    NLPTaskType.REGRESSION.value: "regression",
    NLPTaskType.ORDINAL_REGRESSION.value: "ordinal_regression",
    NLPTaskType.NAMED_ENTITY_RECOGNITION.value: "token_classification",
    NLPTaskType.TOKEN_CLASSIFICATION.value: "token_classification",
    NLPTaskType.PART_OF_SPEECH_TAGGING.value: "token_classification",
    NLPTaskType.QUESTION_ANSWERING.value: "question_answering",
    NLPTaskType.TEXT_SIMILARITY.value: "text_similarity",
    NLPTaskType.TIMESERIES_CLASSIFICATION.value: "timeseries_classification",
    NLPTaskType.TIMESERIES_REGRESSION.value: "timeseries_regression",
}

_TOKEN_TASKS = {"named_entity_recognition", "token_classification", "part_of_speech_tagging"}
_ONE_OUTPUT_TASKS = {"regression", "text_similarity", "timeseries_regression"}

#: documented option presets (explicit keyword arguments override them)
NLP_HEAD_PRESETS: dict[str, dict[str, Any]] = {
    # linear layer on the pooled state: fastest, fewest parameters
    "efficient": {"use_intermediate": False, "use_task_attention": False, "use_ffn": False},
    # differential task attention + SwiGLU FFN over the tokens, intermediate projection after pooling
    "high_capacity": {
        "use_intermediate": True,
        "intermediate_size": 512,
        "use_task_attention": True,
        "attention_type": "differential",
        "num_attention_heads": 4,
        "use_ffn": True,
        "ffn_type": "swiglu",
        "ffn_expansion_factor": 4,
        "normalization_type": "zero_centered_rms_norm",
    },
}

_DEFAULTS: dict[str, Any] = {
    "use_intermediate": False,
    "intermediate_size": 256,
    "use_task_attention": False,
    "attention_type": "multi_head",
    "num_attention_heads": 4,
    "use_ffn": False,
    "ffn_type": "mlp",
    "ffn_expansion_factor": 4,
    "normalization_type": "layer_norm",
}


@dataclass
class NLPTaskConfig:
    """What the task is (the head's size and kind); how the head is built is given to :func:`create_nlp_head`.

    Attributes:
        name: a label for the task (kept in ``HeadConfig.extra["task_name"]``).
        task_type: an :class:`NLPTaskType` (or its value).
        num_classes: classes / labels / targets; None picks 1 for regression-like tasks, else 2.
        dropout_rate: dropout before the output layer (and inside the blocks).
        use_crf: CRF decoding for token classification (``extra["use_crf"]``; token tasks only).
        label_names: optional class names.
    """

    name: str
    task_type: NLPTaskType | str
    num_classes: int | None = None
    dropout_rate: float = 0.1
    use_crf: bool = False
    label_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        value = str(getattr(self.task_type, "value", self.task_type)).lower()
        self.task_type = NLPTaskType(check_choice("task_type", value, [t.value for t in NLPTaskType]))
        if self.num_classes is None:
            self.num_classes = 1 if self.task_type.value in _ONE_OUTPUT_TASKS else 2
        if self.use_crf and self.task_type.value not in _TOKEN_TASKS:
            raise ConfigError(
                f"use_crf applies to token classification tasks only, not '{self.task_type.value}'"
            )


def _resolve_options(preset: str | None, explicit: dict[str, Any]) -> dict[str, Any]:
    """Defaults, then the preset, then explicit (non-None) keyword arguments."""
    opts = dict(_DEFAULTS)
    if preset is not None:
        opts.update(NLP_HEAD_PRESETS[check_choice("preset", preset, tuple(NLP_HEAD_PRESETS))])
    given = {k: v for k, v in explicit.items() if v is not None}
    # naming a kind (attention_type, ffn_type, intermediate_size) switches its block on unless told otherwise
    for switch, kind in (
        ("use_task_attention", "attention_type"),
        ("use_ffn", "ffn_type"),
        ("use_intermediate", "intermediate_size"),
    ):
        if kind in given and switch not in given:
            given[switch] = True
    opts.update(given)
    return opts


def nlp_head_config(
    task_config: NLPTaskConfig | dict[str, Any],
    input_dim: int,
    pooling_type: str | PoolingType | None = None,
    use_intermediate: bool | None = None,
    intermediate_size: int | None = None,
    use_task_attention: bool | None = None,
    attention_type: str | None = None,
    num_attention_heads: int | None = None,
    use_ffn: bool | None = None,
    ffn_type: str | None = None,
    ffn_expansion_factor: float | None = None,
    normalization_type: str | None = None,
    dropout_rate: float | None = None,
    preset: str | None = None,
    **head_kwargs: Any,
) -> HeadConfig:
    """The :class:`HeadConfig` that :func:`create_nlp_head` builds (pass it to ``create_bert_with_head``).

    Arguments are those of :func:`create_nlp_head`.
    """
    task = task_config if isinstance(task_config, NLPTaskConfig) else NLPTaskConfig(**task_config)
    head_type = NLP_TASK_HEADS[str(getattr(task.task_type, "value", task.task_type))]
    opts = _resolve_options(
        preset,
        {
            "use_intermediate": use_intermediate,
            "intermediate_size": intermediate_size,
            "use_task_attention": use_task_attention,
            "attention_type": attention_type,
            "num_attention_heads": num_attention_heads,
            "use_ffn": use_ffn,
            "ffn_type": ffn_type,
            "ffn_expansion_factor": ffn_expansion_factor,
            "normalization_type": normalization_type,
        },
    )
    extra: dict[str, Any] = {"task_name": task.name}
    norm = check_choice("normalization_type", opts["normalization_type"], NORM_TYPES)
    if opts["use_task_attention"]:
        extra["task_attention"] = check_choice("attention_type", opts["attention_type"], ATTENTION_TYPES)
        extra["attention_heads"] = int(opts["num_attention_heads"])
    if opts["use_ffn"]:
        extra["ffn"] = check_choice("ffn_type", opts["ffn_type"], FFN_TYPES)
        extra["ffn_expansion_factor"] = float(opts["ffn_expansion_factor"])
    if opts["use_intermediate"]:
        extra["intermediate_size"] = int(opts["intermediate_size"])
    if len(extra) > 1:
        extra["norm"] = norm
    if task.use_crf:
        extra["use_crf"] = True
    extra.update(head_kwargs.pop("extra", None) or {})
    fields: dict[str, Any] = {
        "head_type": head_type,
        "input_size": int(input_dim),
        "num_labels": int(task.num_classes or 1),
        "dropout_prob": float(task.dropout_rate if dropout_rate is None else dropout_rate),
        "extra": extra,
    }
    if task.label_names:
        fields["label_names"] = list(task.label_names)
    if pooling_type is not None:
        fields["pooling_type"] = str(getattr(pooling_type, "value", pooling_type))
    else:
        fields["pooling_type"] = get_head_class(head_type).default_pooling  # unknown heads raise here
    fields.update(head_kwargs)
    return HeadConfig.from_dict(fields)


def create_nlp_head(
    task_config: NLPTaskConfig | dict[str, Any],
    input_dim: int,
    pooling_type: str | PoolingType | None = None,
    use_intermediate: bool | None = None,
    intermediate_size: int | None = None,
    use_task_attention: bool | None = None,
    attention_type: str | None = None,
    num_attention_heads: int | None = None,
    use_ffn: bool | None = None,
    ffn_type: str | None = None,
    ffn_expansion_factor: float | None = None,
    normalization_type: str | None = None,
    dropout_rate: float | None = None,
    preset: str | None = None,
    **head_kwargs: Any,
) -> BaseHead:
    """Build the registered head for an NLP task, configured by keyword options.

    Example:
        >>> task = NLPTaskConfig("sentiment", NLPTaskType.SENTIMENT_ANALYSIS, num_classes=3)
        >>> head = create_nlp_head(task, input_dim=768, use_task_attention=True, attention_type="cbam",
        ...                        use_ffn=True, ffn_type="swiglu", normalization_type="rms_norm")
        >>> out = head({"hidden_states": states, "attention_mask": mask})  # logits, probabilities [B, 3]

    Options left as None take the preset's value, else the default (no blocks: a plain linear head).
    Naming ``attention_type``, ``ffn_type`` or ``intermediate_size`` switches that block on.

    Args:
        task_config: an :class:`NLPTaskConfig` (or its dict form): task type, classes, dropout, CRF.
        input_dim: the encoder's hidden size H.
        pooling_type: a :class:`PoolingType` value (default: the head's own default; use ``"last"`` for
            decoder-only backbones).
        use_intermediate: add the post-pooling projection ``[B, H] -> [B, intermediate_size]``
            (linear, norm, activation, dropout).
        intermediate_size: its width (default 256).
        use_task_attention: add a task-attention block over the token states before pooling.
        attention_type: ``multi_head`` (default), ``cbam`` or ``differential``.
        num_attention_heads: heads of the attention block (default 4; must divide H).
        use_ffn: add a pre-norm residual feed-forward block over the token states.
        ffn_type: ``mlp`` (default), ``glu``, ``geglu`` or ``swiglu``.
        ffn_expansion_factor: FFN hidden width / H (default 4).
        normalization_type: ``layer_norm`` (default), ``rms_norm``, ``band_rms``, ``zero_centered_rms_norm``
            (used by the blocks and the intermediate projection).
        dropout_rate: overrides ``task_config.dropout_rate``.
        preset: ``"efficient"`` or ``"high_capacity"`` (see ``NLP_HEAD_PRESETS``).
        **head_kwargs: further :class:`HeadConfig` fields (``loss_type``, ``hidden_sizes``, ``extra``...).

    Returns:
        The registered head instance (e.g. a :class:`MulticlassClassificationHead`); a task whose head is
        not registered raises the registry's "unknown head" error listing the valid names.
    """
    cfg = nlp_head_config(
        task_config,
        input_dim,
        pooling_type=pooling_type,
        use_intermediate=use_intermediate,
        intermediate_size=intermediate_size,
        use_task_attention=use_task_attention,
        attention_type=attention_type,
        num_attention_heads=num_attention_heads,
        use_ffn=use_ffn,
        ffn_type=ffn_type,
        ffn_expansion_factor=ffn_expansion_factor,
        normalization_type=normalization_type,
        dropout_rate=dropout_rate,
        preset=preset,
        **head_kwargs,
    )
    return create_head(cfg)


__all__ = [
    "NLP_HEAD_PRESETS",
    "NLP_TASK_HEADS",
    "NLPTaskConfig",
    "NLPTaskType",
    "create_nlp_head",
    "nlp_head_config",
]
