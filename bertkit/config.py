"""Typed configuration dataclasses shared by the encoder, the heads and the model folder.

Every config round-trips through plain dicts (JSON/YAML). ``from_dict`` rejects unknown keys with a message
that names the key and lists the valid ones, so a typo in a YAML file never passes silently.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
from dataclasses import dataclass, field
from typing import Any, TypeVar

from bertkit.errors import ConfigError

C = TypeVar("C", bound="ConfigBase")


class HeadType(str, enum.Enum):
    """Task families; each value is the registry name of the head that implements it."""

    BINARY_CLASSIFICATION = "binary_classification"
    MULTICLASS_CLASSIFICATION = "multiclass_classification"
    MULTILABEL_CLASSIFICATION = "multilabel_classification"
    REGRESSION = "regression"
    ORDINAL_REGRESSION = "ordinal_regression"
    ENSEMBLE_CLASSIFICATION = "ensemble_classification"
    HIERARCHICAL_CLASSIFICATION = "hierarchical_classification"


class PoolingType(str, enum.Enum):
    """How a head turns token states ``[B, T, H]`` into one vector ``[B, H]`` (all mask padding)."""

    CLS = "cls"
    MEAN = "mean"
    MAX = "max"
    ATTENTION = "attention"
    WEIGHTED_MEAN = "weighted_mean"
    LAST = "last"
    POOLER = "pooler"
    GEM = "gem"  # generalised mean over real tokens with a learned exponent p
    LAYER_CLS = "layer_cls"  # concatenation of the last k layers' CLS states ([B, k*H])
    LAYER_CLS_WEIGHTED = "layer_cls_weighted"  # learned softmax-weighted sum of the last k layers' CLS
    NONE = "none"  # token-level heads: no pooling


def _enum_value(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


class ConfigBase:
    """Mixin giving dataclass configs strict ``from_dict`` / ``to_dict``."""

    @classmethod
    def from_dict(cls: type[C], data: dict[str, Any] | None) -> C:
        """Build the config from a dict, rejecting unknown keys with a helpful message."""
        data = dict(data or {})
        names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
        unknown = [k for k in data if k not in names]
        if unknown:
            key = unknown[0]
            close = difflib.get_close_matches(key, sorted(names), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(
                f"unknown {cls.__name__} key '{key}'{hint}; valid keys: {', '.join(sorted(names))}"
            )
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        """Plain-dict form (enums become their string values)."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):  # type: ignore[arg-type]
            value = getattr(self, f.name)
            if isinstance(value, list | tuple):
                value = [_enum_value(v) for v in value]
            out[f.name] = _enum_value(value)
        return out


def check_choice(name: str, value: Any, allowed: list[str] | tuple[str, ...]) -> str:
    """Return ``value`` as a lower-case string if it is one of ``allowed``, else raise ConfigError."""
    v = str(_enum_value(value)).lower()
    if v not in allowed:
        raise ConfigError(f"{name}='{value}' is not valid; choose one of: {', '.join(allowed)}")
    return v


@dataclass
class BertConfig(ConfigBase):
    """How to build the encoder.

    Attributes:
        model_name_or_path: ``"minilm"`` (bundled), a local folder, a hub id, or None to build from scratch.
        model_type: architecture used when building from scratch (any transformers ``model_type``).
        hidden_size, num_hidden_layers, num_attention_heads, intermediate_size, vocab_size,
            max_position_embeddings: from-scratch sizes (ignored for pretrained models).
        hidden_dropout_prob, attention_probs_dropout_prob: dropout overrides (None keeps the model's).
        attn_implementation: "sdpa" (default), "eager" or "flash_attention_2"; falls back when unsupported.
        output_hidden_states: also return all layers' states in ``BertOutput.hidden_states``.
        add_pooler_if_missing: learn a dense+tanh pooler over CLS when the backbone has none.
        gradient_checkpointing: trade compute for memory.
        bert_variant: "standard" or "cnn_hybrid".
        extra_config: extra ``transformers`` config values for from-scratch models.
    """

    model_name_or_path: str | None = None
    model_type: str = "bert"
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int | None = None
    vocab_size: int = 30522
    max_position_embeddings: int = 512
    hidden_dropout_prob: float | None = None
    attention_probs_dropout_prob: float | None = None
    attn_implementation: str = "sdpa"
    output_hidden_states: bool = False
    add_pooler_if_missing: bool = True
    gradient_checkpointing: bool = False
    bert_variant: str = "standard"
    cnn_kernel_sizes: list[int] = field(default_factory=lambda: [3, 5])
    extra_config: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("hidden_size", "num_hidden_layers", "num_attention_heads", "vocab_size"):
            if int(getattr(self, name)) <= 0:
                raise ConfigError(f"BertConfig.{name} must be a positive integer, got {getattr(self, name)}")
        if self.model_name_or_path is None and self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"hidden_size={self.hidden_size} must be divisible by num_attention_heads="
                f"{self.num_attention_heads}"
            )
        self.attn_implementation = check_choice(
            "attn_implementation", self.attn_implementation, ("sdpa", "eager", "flash_attention_2")
        )
        self.bert_variant = check_choice("bert_variant", self.bert_variant, ("standard", "cnn_hybrid"))


@dataclass
class HeadConfig(ConfigBase):
    """Everything a head needs to rebuild itself (saved as ``head/config.json``).

    Attributes:
        head_type: registry name of the head (a :class:`HeadType` value or a custom registered name).
        input_size: width of the encoder states it reads (checked against the encoder at construction).
        output_size: number of outputs (logits); defaults from ``num_labels``.
        num_labels: number of classes / labels / targets.
        label_names: human names of the classes (decoding and reports).
        pooling_type: see :class:`PoolingType`.
        hidden_sizes: optional projection MLP widths before the output layer (empty: none).
        activation: projection activation ("gelu", "relu", "tanh", "silu").
        dropout_prob: dropout before the output layer (and inside the projection).
        multi_sample_dropout: K>1 averages the logits (and losses) over K dropout masks in training.
        loss_type: head-specific loss name (e.g. "bce", "focal", "ce", "mse", "huber", "coral").
        focal_gamma, focal_alpha, label_smoothing, class_weights, pos_weight: loss options.
        max_position_embeddings: positions for WEIGHTED_MEAN pooling.
        extra: head-specific options (e.g. ``{"dimensions": [["E","I"], ...]}``) — data, never code.
    """

    head_type: str = HeadType.BINARY_CLASSIFICATION.value
    input_size: int = 768
    output_size: int | None = None
    num_labels: int = 2
    label_names: list[str] = field(default_factory=list)
    pooling_type: str = PoolingType.CLS.value
    hidden_sizes: list[int] = field(default_factory=list)
    activation: str = "gelu"
    dropout_prob: float = 0.1
    multi_sample_dropout: int = 1
    loss_type: str | None = None
    focal_gamma: float = 2.0
    focal_alpha: float | None = None
    label_smoothing: float = 0.0
    class_weights: list[float] | None = None
    pos_weight: float | None = None
    max_position_embeddings: int = 512
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.head_type = str(_enum_value(self.head_type))
        self.pooling_type = check_choice("pooling_type", self.pooling_type, [p.value for p in PoolingType])
        self.activation = check_choice("activation", self.activation, ("gelu", "relu", "tanh", "silu"))
        if self.num_labels < 1:
            raise ConfigError(f"num_labels must be >= 1, got {self.num_labels}")
        if self.label_names and len(self.label_names) != self.num_labels:
            raise ConfigError(
                f"label_names has {len(self.label_names)} names but num_labels={self.num_labels}; "
                "give one name per label"
            )
        if not 0.0 <= self.dropout_prob < 1.0:
            raise ConfigError(f"dropout_prob must be in [0, 1), got {self.dropout_prob}")
        if self.multi_sample_dropout < 1:
            raise ConfigError(f"multi_sample_dropout must be >= 1, got {self.multi_sample_dropout}")
        self.label_names = [str(n) for n in self.label_names]


@dataclass
class TrainingConfig(ConfigBase):
    """How the Trainer trains (every field is a YAML key under ``training:`` and a ``--set training.X=`` flag).

    Attributes:
        epochs: passes over the training data.
        batch_size / eval_batch_size: examples per optimiser step (before accumulation) / per eval batch.
        learning_rate: peak learning rate of the encoder's top layer.
        head_learning_rate: separate peak learning rate for the head (None: same as ``learning_rate``).
        layerwise_lr_decay: LLRD factor; layer i from the top gets ``lr * decay**i`` (1.0: off).
        weight_decay: AdamW weight decay (never applied to biases and norm weights).
        scheduler: "linear", "cosine" or "constant" (all with warmup).
        warmup_ratio / warmup_steps: warmup length (steps win when > 0).
        gradient_accumulation_steps: micro-batches per optimiser step.
        max_grad_norm: gradient clipping (0: off).
        mixed_precision: "auto" (bf16/fp16 on GPUs that support it, fp32 on CPU), "no", "fp16", "bf16".
        freeze_word_embeddings: keep the token embedding table fixed (its dense gradient and AdamW update are
            the largest per-step costs on CPU for short texts; fine-tuning rarely needs to move it).
        sparse_embedding_updates: "auto" (on for single-process fp32 CPU training), "on" or "off": sparse
            word-embedding gradients with lazy AdamW updates of the rows a batch uses (the table stays trainable;
            bertkit/training/sparse_embeddings.py).
        freeze_encoder_epochs: keep the encoder frozen for this many epochs (head warm-up).
        gradual_unfreeze: after the frozen epochs, unfreeze one more layer per epoch from the top.
        eval_strategy: "epoch" or "steps" (every ``eval_steps`` optimiser steps).
        early_stopping_patience: stop after this many evaluations without improvement (0: off).
        metric_for_best_model: validation metric for early stopping/best checkpoint (None: the head's).
        greater_is_better: direction of that metric (None: the head's).
        checkpoint_steps: write a resumable checkpoint every N optimiser steps (0: only at epoch ends).
        keep_checkpoints: how many periodic checkpoints to keep.
        seed: makes runs reproducible on CPU.
        max_length / truncation: tokenizer budget and strategy ("head", "tail", "head_tail").
        length_bucketing: length-bucketed random batches (less padding, still random order).
        bucket_multiplier: bucket size in batches (bigger: less padding, less randomness).
        calibrate: fit post-hoc settings (temperature, thresholds) on validation data after training.
        device: "auto", "cpu", "cuda" or "mps".
        torch_compile: compile the model with ``torch.compile``.
        num_threads: CPU threads for torch (0: torch's default).
        log_every: steps between training-loss rows in history.csv.
        progress: show a progress bar.
        adversarial: "none", "fgm" (perturb the word embeddings along their gradient) or "awp" (perturb the
            weights); one extra forward/backward per step from ``adv_start_epoch`` on (docs/competition.md).
        fgm_epsilon: L2 norm of FGM's word-embedding perturbation.
        awp_epsilon: AWP's perturbation box relative to each weight's magnitude (``|dw| <= eps * |w|``).
        awp_lr: AWP's step size relative to each weight tensor's norm.
        adv_start_epoch: first (0-based) epoch with adversarial steps.
        ema_decay: exponential moving average of the weights (0: off; e.g. 0.999); evaluation, the best model
            and the final weights use the average. The decay ramps up as ``min(decay, (1+t)/(10+t))``.
        swa_epochs: stochastic weight averaging: uniform average of snapshots taken over the last N epochs
            (0: off); the final evaluation and the final weights use the average.
        swa_snapshots_per_epoch: snapshots per epoch inside the SWA window (evenly spaced steps).
        soup_size: keep the last N evaluated weights and, after training, greedily average those that do not
            hurt the validation metric ("model soup"; 0: off; needs a validation set).
        reinit_layers: re-initialise the top N encoder layers before fine-tuning.
        postprocess: fit post-processing on out-of-fold/validation outputs (binary F1 threshold, per-label
            thresholds, ordinal QWK cut-points, regression clipping), save it with the run, apply in predict.
        chunk_stride: >0: predict long texts as sliding windows of ``max_length`` tokens overlapping by this
            many tokens and aggregate the windows' outputs (0: off).
        chunk_aggregation: "mean", "max" or "attention" (confidence-weighted) aggregation of window outputs.
        pseudo_file: unlabelled data file for fold-safe pseudo-labelling rounds in ``cv`` (None: off).
        pseudo_rounds: pseudo-labelling rounds after the plain CV round.
        pseudo_threshold: keep pseudo-labels whose confidence is at least this (classification).
        pseudo_soft: classification: train on soft labels (probabilities) instead of thresholded hard ones.
        fold_seed: seed of the CV split and row subsampling (None: ``seed``); fix it and vary ``seed`` to train
            several seeds on the same folds (then ``bertkit blend --method mean``).
    """

    epochs: float = 3
    batch_size: int = 32
    eval_batch_size: int = 64
    learning_rate: float = 5e-5
    head_learning_rate: float | None = None
    layerwise_lr_decay: float = 1.0
    weight_decay: float = 0.01
    scheduler: str = "linear"
    warmup_ratio: float = 0.1
    warmup_steps: int = 0
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    mixed_precision: str = "auto"
    freeze_word_embeddings: bool = False
    sparse_embedding_updates: str = "auto"
    freeze_encoder_epochs: int = 0
    gradual_unfreeze: bool = False
    eval_strategy: str = "epoch"
    eval_steps: int = 0
    early_stopping_patience: int = 0
    metric_for_best_model: str | None = None
    greater_is_better: bool | None = None
    checkpoint_steps: int = 0
    keep_checkpoints: int = 1
    seed: int = 0
    max_length: int = 128
    truncation: str = "head"
    length_bucketing: bool = True
    bucket_multiplier: int = 50
    calibrate: bool = True
    device: str = "auto"
    torch_compile: bool = False
    num_threads: int = 0
    log_every: int = 10
    progress: bool = True
    adversarial: str = "none"
    fgm_epsilon: float = 1.0
    awp_epsilon: float = 0.01
    awp_lr: float = 1.0
    adv_start_epoch: int = 0
    ema_decay: float = 0.0
    swa_epochs: int = 0
    swa_snapshots_per_epoch: int = 4
    soup_size: int = 0
    reinit_layers: int = 0
    postprocess: bool = False
    chunk_stride: int = 0
    chunk_aggregation: str = "mean"
    pseudo_file: str | None = None
    pseudo_rounds: int = 1
    pseudo_threshold: float = 0.9
    pseudo_soft: bool = False
    fold_seed: int | None = None

    def __post_init__(self) -> None:
        self.scheduler = check_choice("scheduler", self.scheduler, ("linear", "cosine", "constant"))
        self.mixed_precision = check_choice(
            "mixed_precision", self.mixed_precision, ("auto", "no", "fp16", "bf16")
        )
        self.eval_strategy = check_choice("eval_strategy", self.eval_strategy, ("epoch", "steps", "no"))
        self.truncation = check_choice("truncation", self.truncation, ("head", "tail", "head_tail"))
        self.device = check_choice("device", self.device, ("auto", "cpu", "cuda", "mps"))
        self.sparse_embedding_updates = check_choice(
            "sparse_embedding_updates", str(self.sparse_embedding_updates), ("auto", "on", "off")
        )
        for name in ("batch_size", "eval_batch_size", "gradient_accumulation_steps", "max_length"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"training.{name} must be >= 1, got {getattr(self, name)}")
        if self.epochs <= 0:
            raise ConfigError(f"training.epochs must be > 0, got {self.epochs}")
        if self.learning_rate <= 0:
            raise ConfigError(f"training.learning_rate must be > 0, got {self.learning_rate}")
        if not 0 < self.layerwise_lr_decay <= 1:
            raise ConfigError(f"training.layerwise_lr_decay must be in (0, 1], got {self.layerwise_lr_decay}")
        if self.eval_strategy == "steps" and self.eval_steps < 1:
            raise ConfigError("training.eval_strategy='steps' needs training.eval_steps >= 1")
        self._check_tricks()

    def _check_tricks(self) -> None:
        """Validate the training-trick fields (docs/competition.md)."""
        self.adversarial = check_choice("adversarial", self.adversarial, ("none", "fgm", "awp"))
        self.chunk_aggregation = check_choice(
            "chunk_aggregation", self.chunk_aggregation, ("mean", "max", "attention")
        )
        if self.fgm_epsilon <= 0 or self.awp_epsilon <= 0 or self.awp_lr < 0 or self.adv_start_epoch < 0:
            raise ConfigError(
                "training.fgm_epsilon and awp_epsilon must be > 0, awp_lr and adv_start_epoch >= 0; got "
                f"{self.fgm_epsilon}, {self.awp_epsilon}, {self.awp_lr}, {self.adv_start_epoch}"
            )
        if not 0.0 <= self.ema_decay < 1.0:
            raise ConfigError(f"training.ema_decay must be in [0, 1) (0: off), got {self.ema_decay}")
        for name in ("swa_epochs", "soup_size", "reinit_layers", "chunk_stride"):
            if int(getattr(self, name)) < 0:
                raise ConfigError(f"training.{name} must be >= 0, got {getattr(self, name)}")
        if self.swa_snapshots_per_epoch < 1:
            raise ConfigError(
                f"training.swa_snapshots_per_epoch must be >= 1, got {self.swa_snapshots_per_epoch}"
            )
        if self.ema_decay > 0 and self.swa_epochs > 0:
            raise ConfigError(
                "training.ema_decay and training.swa_epochs are two weight averages; switch on one"
            )
        if self.chunk_stride and self.chunk_stride >= self.max_length - 2:
            raise ConfigError(
                f"training.chunk_stride={self.chunk_stride} must be smaller than max_length - 2 ({self.max_length - 2})"
            )
        if not 0.0 <= self.pseudo_threshold <= 1.0 or self.pseudo_rounds < 1:
            raise ConfigError(
                f"training.pseudo_threshold must be in [0, 1] and pseudo_rounds >= 1; got {self.pseudo_threshold}, "
                f"{self.pseudo_rounds}"
            )
