"""Multi-task configuration: tasks (files, formats, heads, weights), adapter strategy, loader and training.

A multi-task YAML has four sections (see ``docs/multitask.md`` and ``examples/multitask.yaml``)::

    model:    {backbone: minilm, use_task_specific_projections: true, quantization: auto, ...}
    adapters: {strategy: s3a, shared_rank: 16, private_rank: 8, fusion: attention, ...}
    training: {steps: 600, sampling: temperature, temperature: 2.0, gradient_surgery: pcgrad, ...}
    tasks:
      sentiment: {train: ../shared/data/sst2/train.csv, test: ..., head: binary_classification, weight: 1.0}
      ner:       {train: ../shared/data/conll2003/train.conll, format: ner}

Every section is strict: unknown keys raise a :class:`~bertkit.errors.ConfigError` naming the key.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bertkit.config import ConfigBase, TrainingConfig, check_choice
from bertkit.errors import ConfigError

#: PCGrad gradient balancing before the projection (``training.gradient_balance``)
GRADIENT_BALANCES = ("none", "mean_norm")
#: adapter strategies (issue 8 / reference 004): "none" is full fine-tuning of the shared encoder
STRATEGIES = ("none", "s1", "s2", "s3a", "s3b", "s4")
STRATEGY_ALIASES = {
    "full": "none",
    "finetune": "none",
    "single": "s1",
    "per_task": "s1",
    "private": "s1",
    "shared": "s2",
    "shared_private": "s3a",
    "flat": "s3a",
    "hierarchical": "s3b",
    "sequential": "s4",
}
FUSIONS = ("attention", "gated", "concat")
FUSION_ALIASES = {"gated_residual": "gated", "gate": "gated", "none": "concat"}
SAMPLINGS = ("proportional", "temperature", "round_robin")
TASK_FORMATS = ("auto", "table", "ner")

#: the MBTI preset: four named binary dimensions; target 1 = the second letter of each pair
MBTI_DIMENSIONS = [["E", "I"], ["S", "N"], ["T", "F"], ["J", "P"]]
TYPE_PRESETS: dict[str, list[list[str]]] = {"mbti": MBTI_DIMENSIONS}


@dataclass
class AdapterConfig(ConfigBase):
    """Which adapters sit on the shared encoder and how their outputs are combined.

    Attributes:
        strategy: ``none`` (full fine-tuning), ``s1`` (one LoRA per task), ``s2`` (one shared LoRA),
            ``s3a`` (shared + private LoRA per task + fusion), ``s3b`` (hierarchical), ``s4`` (sequential:
            shared first, then private per task). Aliases: single, shared, shared_private, hierarchical...
        shared_rank / private_rank: LoRA ranks of the shared and per-task adapters (S1 uses private_rank).
        level1_rank / level2_rank: S3b ranks of the level-1 LoRA and the level-2 feature adapters.
        alpha_ratio: ``lora_alpha = alpha_ratio * rank`` (keeps the LoRA scale fixed when ranks change).
        lora_dropout: dropout on the LoRA input.
        target_modules: ``"attention"`` (q, k, v, o projections of any supported backbone), ``"all-linear"``
            or a list of module-name suffixes.
        fusion: S3a fusion of shared and private features: ``attention``, ``gated`` or ``concat``.
        fusion_dim: query/key width of ``AttentionFusion``.
        levels: S3b task → level (1 or 2); unlisted token tasks are level 1, the rest level 2.
        cross_level: S3b combination of shared and level-1 features: ``attention`` or ``concat``.
        cross_level_heads: attention heads of the cross-level attention.
        detach_l1_for_l2: S3b: level-2 losses do not flow back into the level-1 adapter.
        stage1_fraction: S4: share of the training steps spent on the shared adapter alone.
    """

    strategy: str = "none"
    shared_rank: int = 16
    private_rank: int = 8
    level1_rank: int = 8
    level2_rank: int = 8
    alpha_ratio: float = 2.0
    lora_dropout: float = 0.05
    target_modules: Any = "attention"
    fusion: str = "attention"
    fusion_dim: int = 64
    levels: dict[str, int] = field(default_factory=dict)
    cross_level: str = "attention"
    cross_level_heads: int = 4
    detach_l1_for_l2: bool = True
    stage1_fraction: float = 0.5

    def __post_init__(self) -> None:
        s = str(self.strategy).lower()
        self.strategy = check_choice("adapters.strategy", STRATEGY_ALIASES.get(s, s), STRATEGIES)
        f = str(self.fusion).lower()
        self.fusion = check_choice("adapters.fusion", FUSION_ALIASES.get(f, f), FUSIONS)
        self.cross_level = check_choice("adapters.cross_level", self.cross_level, ("attention", "concat"))
        for name in ("shared_rank", "private_rank", "level1_rank", "level2_rank", "fusion_dim"):
            if int(getattr(self, name)) < 1:
                raise ConfigError(f"adapters.{name} must be >= 1, got {getattr(self, name)}")
        if not 0.0 < self.stage1_fraction < 1.0:
            raise ConfigError(f"adapters.stage1_fraction must be in (0, 1), got {self.stage1_fraction}")
        bad = {k: v for k, v in self.levels.items() if v not in (1, 2)}
        if bad:
            raise ConfigError(f"adapters.levels values must be 1 or 2, got {bad}")

    @property
    def uses_lora(self) -> bool:
        """True for every strategy but full fine-tuning."""
        return self.strategy != "none"


@dataclass
class ModelOptions(ConfigBase):
    """The shared encoder and how it is loaded.

    Attributes:
        backbone: ``"minilm"`` (bundled), a local folder or a hub id.
        bert_options: further :class:`~bertkit.config.BertConfig` fields (a from-scratch encoder when they
            name ``model_type`` and no backbone is wanted: set ``backbone: null``).
        use_task_specific_projections: a residual ``H → H`` projection per task before its head.
        quantization: ``auto`` (decided from parameter count and free GPU memory), ``4bit`` (QLoRA; needs CUDA
            and bitsandbytes) or ``none``.
        gradient_checkpointing: ``auto``, true or false.
        attn_implementation: ``auto`` (FlashAttention 2 where installed and supported, else SDPA, else eager),
            or one of ``sdpa``, ``eager``, ``flash_attention_2``.
    """

    backbone: str | None = "minilm"
    bert_options: dict[str, Any] = field(default_factory=dict)
    use_task_specific_projections: bool = True
    quantization: str = "auto"
    gradient_checkpointing: Any = "auto"
    attn_implementation: str = "auto"

    def __post_init__(self) -> None:
        self.quantization = check_choice("model.quantization", self.quantization, ("auto", "4bit", "none"))
        self.attn_implementation = check_choice(
            "model.attn_implementation",
            self.attn_implementation,
            ("auto", "sdpa", "eager", "flash_attention_2"),
        )
        if self.gradient_checkpointing not in ("auto", True, False):
            raise ConfigError(
                f"model.gradient_checkpointing must be auto, true or false, got {self.gradient_checkpointing!r}"
            )


@dataclass
class MultiTaskTrainingConfig(TrainingConfig):
    """:class:`~bertkit.config.TrainingConfig` plus the multi-task loop's own settings.

    Attributes:
        steps: optimiser steps (0: ``epochs`` × the number of training batches of all tasks together).
        sampling: which task the next batch comes from: ``proportional`` (p ∝ n), ``temperature``
            (p ∝ n^(1/T)) or ``round_robin``.
        temperature: T of temperature sampling (1 = proportional, ∞ = uniform).
        loss_weighting: ``static`` (each task's ``weight``) or ``uncertainty`` (learned, Kendall et al. 2018).
        gradient_surgery: ``none`` or ``pcgrad`` (every step takes one batch of every task and projects
            conflicting gradients on the shared parameters, Yu et al. 2020).
        gradient_balance: with PCGrad, ``none`` (the paper's sum) or ``mean_norm`` (rescale every task's
            shared gradient to the mean task-gradient norm before the projection, so a task with small
            gradients — e.g. token-level NER beside sentence classification — is not drowned out).
        eval_every: evaluate every N steps (0: ~10 evaluations per run).
        auto_batch_size: before training, find the largest batch size up to ``batch_size`` whose
            forward + backward on every task's longest examples fits in memory (halving on out-of-memory).
    """

    steps: int = 0
    sampling: str = "temperature"
    temperature: float = 2.0
    loss_weighting: str = "static"
    gradient_surgery: str = "none"
    gradient_balance: str = "none"
    eval_every: int = 0
    auto_batch_size: bool = False
    calibrate: bool = False

    def __post_init__(self) -> None:
        super().__post_init__()
        self.sampling = check_choice("training.sampling", self.sampling, SAMPLINGS)
        self.loss_weighting = check_choice(
            "training.loss_weighting", self.loss_weighting, ("static", "uncertainty")
        )
        self.gradient_surgery = check_choice(
            "training.gradient_surgery", self.gradient_surgery, ("none", "pcgrad")
        )
        self.gradient_balance = check_choice(
            "training.gradient_balance", self.gradient_balance, GRADIENT_BALANCES
        )
        if self.gradient_balance != "none" and self.gradient_surgery != "pcgrad":
            raise ConfigError(
                "training.gradient_balance needs every task's gradient at each step; "
                "set training.gradient_surgery: pcgrad (or gradient_balance: none)"
            )
        if self.temperature <= 0:
            raise ConfigError(f"training.temperature must be > 0, got {self.temperature}")
        if self.steps < 0 or self.eval_every < 0:
            raise ConfigError("training.steps and training.eval_every must be >= 0")
        if self.gradient_accumulation_steps != 1:
            raise ConfigError("multi-task training does not use gradient_accumulation_steps; use batch_size")


@dataclass
class TaskSpec(ConfigBase):
    """One task of a multi-task run: its files, format, head and weight.

    Attributes:
        train / valid / test: data files (CSV/TSV/Parquet/JSONL tables, or CoNLL/NER-JSONL for ``ner``);
            relative paths are resolved against the YAML's folder, then the current directory.
        format: ``auto`` (CoNLL suffixes → ner, else table), ``table`` or ``ner``.
        task: for tables, ``auto`` or binary | multiclass | multilabel | regression | ordinal.
        text_column / text_columns / label_column / id_column: column overrides (tables).
        head: registered head name (default: recommended by ``bertkit analyze`` / token_classification).
        head_options: further :class:`~bertkit.config.HeadConfig` fields.
        pooling: pooling override.
        weight: static loss weight (also the task's weight in the early-stopping score).
        max_train_samples / max_eval_samples: use the first N rows after a seeded shuffle (0/None: all).
        type_dimensions: named binary dimensions read from a type-string label column: a preset name
            (``mbti``) or pairs of letters, e.g. ``[[E, I], [S, N], [T, F], [J, P]]``.
        mask_type_names: replace type names (e.g. "INTJ", "ENFPs") in the text by the tokenizer's mask token
            (on by default with ``type_dimensions``, which would otherwise leak the label).
        pos_weight: dimension tasks: ``balanced`` (n_neg / n_pos per dimension) or a list of weights.
        loss: dimension tasks: ``bce`` or ``focal``.
    """

    train: str | None = None
    valid: str | None = None
    test: str | None = None
    format: str = "auto"
    task: str = "auto"
    text_column: str | None = None
    text_columns: list[str] | None = None
    label_column: str | None = None
    id_column: str | None = None
    head: str | None = None
    head_options: dict[str, Any] = field(default_factory=dict)
    pooling: str | None = None
    weight: float = 1.0
    max_train_samples: int | None = None
    max_eval_samples: int | None = None
    type_dimensions: Any = None
    mask_type_names: bool | None = None
    pos_weight: Any = None
    loss: str = "bce"

    def __post_init__(self) -> None:
        self.format = check_choice("tasks.*.format", self.format, TASK_FORMATS)
        if self.weight < 0:
            raise ConfigError(f"task weight must be >= 0, got {self.weight}")
        self.loss = check_choice("tasks.*.loss", self.loss, ("bce", "focal"))
        if isinstance(self.type_dimensions, str):
            key = self.type_dimensions.lower()
            if key not in TYPE_PRESETS:
                raise ConfigError(
                    f"type_dimensions preset '{self.type_dimensions}' is unknown; choose one of: "
                    f"{', '.join(TYPE_PRESETS)} or give pairs of letters"
                )
            self.type_dimensions = [list(p) for p in TYPE_PRESETS[key]]
        if self.type_dimensions is not None:
            dims = [[str(a) for a in pair] for pair in self.type_dimensions]
            if not dims or any(len(p) != 2 for p in dims):
                raise ConfigError(
                    f"type_dimensions needs pairs of letters like [E, I], got {self.type_dimensions}"
                )
            self.type_dimensions = dims
            if self.mask_type_names is None:
                self.mask_type_names = True

    def resolved_format(self) -> str:
        """``table`` or ``ner`` (``auto`` looks at the training file's suffix)."""
        if self.format != "auto":
            return self.format
        from bertkit.tasks.ner import CONLL_SUFFIXES

        suffix = Path(self.train or self.test or "").suffix.lower()
        return "ner" if suffix in CONLL_SUFFIXES and suffix != ".tsv" else "table"


@dataclass
class MultiTaskConfig:
    """A whole multi-task run (the layout of the YAML and of the run folder's ``config.yaml``)."""

    tasks: dict[str, TaskSpec]
    model: ModelOptions = field(default_factory=ModelOptions)
    adapters: AdapterConfig = field(default_factory=AdapterConfig)
    training: MultiTaskTrainingConfig = field(default_factory=MultiTaskTrainingConfig)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model.to_dict(),
            "adapters": self.adapters.to_dict(),
            "training": self.training.to_dict(),
            "tasks": {name: spec.to_dict() for name, spec in self.tasks.items()},
        }

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], base_dir: str | Path | None = None) -> MultiTaskConfig:
        """Validate a config dict; relative data paths are resolved against ``base_dir`` then the CWD."""
        data = dict(data or {})
        sections = ("tasks", "model", "adapters", "training")
        unknown = [k for k in data if k not in sections]
        if unknown:
            close = difflib.get_close_matches(unknown[0], sections, n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(
                f"unknown multi-task section '{unknown[0]}'{hint}; valid: {', '.join(sections)}"
            )
        raw_tasks = data.get("tasks") or {}
        if not isinstance(raw_tasks, dict) or not raw_tasks:
            raise ConfigError("a multi-task config needs a 'tasks' mapping with at least one task")
        tasks: dict[str, TaskSpec] = {}
        for name, spec in raw_tasks.items():
            if not str(name).isidentifier():
                raise ConfigError(f"task name '{name}' must be an identifier (letters, digits, underscores)")
            try:
                task = TaskSpec.from_dict(dict(spec or {}))
            except ConfigError as exc:
                raise ConfigError(f"task '{name}': {exc}") from None
            for key in ("train", "valid", "test"):
                value = getattr(task, key)
                if value is not None:
                    setattr(task, key, str(resolve_data_path(value, base_dir)))
            tasks[str(name)] = task
        return cls(
            tasks=tasks,
            model=ModelOptions.from_dict(data.get("model") or {}),
            adapters=AdapterConfig.from_dict(data.get("adapters") or {}),
            training=MultiTaskTrainingConfig.from_dict(data.get("training") or {}),
        )


def resolve_data_path(value: str | Path, base_dir: str | Path | None) -> Path:
    """An absolute path as is; a relative one under ``base_dir`` when it exists there, else under the CWD."""
    path = Path(value).expanduser()
    if path.is_absolute():
        return path
    if base_dir is not None and (Path(base_dir) / path).exists():
        return (Path(base_dir) / path).resolve()
    return path.resolve()


def load_multitask_config(path: str | Path, overrides: dict[str, Any] | None = None) -> MultiTaskConfig:
    """Read a multi-task YAML (``overrides`` are deep-merged on top, e.g. ``{"training": {"steps": 50}}``)."""
    from bertkit.runconfig import deep_update, read_yaml

    path = Path(path)
    data = deep_update(read_yaml(path), overrides or {})
    return MultiTaskConfig.from_dict(data, base_dir=path.parent)


def is_multitask_yaml(path: Path) -> bool:
    """True for a ``.yaml``/``.yml`` file whose top level has a ``tasks`` mapping."""
    if path.suffix.lower() not in (".yaml", ".yml") or not path.is_file():
        return False
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError, OSError):
        return False
    return isinstance(data, dict) and isinstance(data.get("tasks"), dict)
