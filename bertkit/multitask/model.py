"""Multi-task models: named heads on one shared encoder (optionally behind LoRA adapter strategies).

* :class:`MultiTaskHead` holds one registered head per task (and an optional residual projection per task);
  ``head(states, task_name="ner")`` runs one, ``head(states)`` runs all and returns ``{task: outputs}``.
* :class:`MultiTaskModel` = :class:`~bertkit.encoder.BertCore` + :class:`MultiTaskHead` (+ an
  :class:`~bertkit.multitask.adapters.AdapterStrategy`); ``model(**batch, task_name="sentiment")`` runs one
  task (adds ``"loss"`` when ``labels`` are given), ``model(**batch)`` runs every task.
* :func:`create_multi_task_model` and :func:`create_multi_task_nlp_head` build them.

Task configs are :class:`~bertkit.config.HeadConfig` objects, their dict form (``head_type`` may be an alias
such as ``binary``, ``multiclass`` or ``ner``), or :class:`~bertkit.heads.NLPTaskConfig` (dicts with a
``task_type`` key): any registered head can be a task.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bertkit.config import HeadConfig
from bertkit.encoder import BertCore, BertOutput
from bertkit.errors import ConfigError
from bertkit.heads import BaseHead, create_head, get_head_class
from bertkit.heads.nlp_head import NLPTaskConfig, nlp_head_config
from bertkit.multitask.adapters import AdapterStrategy
from bertkit.multitask.config import AdapterConfig

_HEAD_ALIASES = {
    "ner": "token_classification",
    "token": "token_classification",
    "tagging": "token_classification",
}
_NLP_FIELDS = ("task_type", "num_classes", "dropout_rate", "use_crf", "label_names")


def head_config_for(name: str, spec: Any, input_dim: int) -> HeadConfig:
    """Normalise one task config (HeadConfig, dict or NLPTaskConfig) into a HeadConfig of width ``input_dim``."""
    if isinstance(spec, NLPTaskConfig):
        return nlp_head_config(spec, input_dim)
    if isinstance(spec, HeadConfig):
        data = spec.to_dict()
    elif isinstance(spec, dict):
        data = dict(spec)
    else:
        raise ConfigError(f"task '{name}': a task config must be a HeadConfig, a dict or an NLPTaskConfig")
    if "task_type" in data:
        nlp = NLPTaskConfig(name=name, **{k: data.pop(k) for k in _NLP_FIELDS if k in data})
        return nlp_head_config(nlp, input_dim, **data)
    if "head" in data:
        data["head_type"] = data.pop("head")
    from bertkit.factory import _normalise_head_type

    raw = data.get("head_type")
    raw = _HEAD_ALIASES.get(str(raw).lower(), raw) if raw is not None else None
    labels = data.get("label_names") or []
    if labels and "num_labels" not in data:
        data["num_labels"] = len(labels)
    data["head_type"] = _normalise_head_type(raw, int(data.get("num_labels", 2)))
    data["input_size"] = int(input_dim)
    data.setdefault("pooling_type", get_head_class(data["head_type"]).default_pooling)
    return HeadConfig.from_dict(data)


class TaskProjection(nn.Module):
    """A residual task-specific projection ``h + dropout(gelu(W h))`` (W starts at 0: identity at first)."""

    def __init__(self, dim: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.linear = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        """``[..., D]`` → ``[..., D]``."""
        return hidden + self.dropout(nn.functional.gelu(self.linear(hidden)))


class TaskBranch(nn.Module):
    """One task's modules on top of the shared features: optional projection, then the head."""

    def __init__(self, head: BaseHead, projection: TaskProjection | None) -> None:
        super().__init__()
        self.projection = projection
        self.head = head

    def project(self, features: Any) -> Any:
        """Apply the projection to a BertOutput or a tensor (identity without one)."""
        if self.projection is None:
            return features
        if isinstance(features, BertOutput):
            pooler = features.pooler_output
            return BertOutput(
                last_hidden_state=self.projection(features.last_hidden_state),  # [B, T, D]
                attention_mask=features.attention_mask,
                pooler_output=self.projection(pooler) if pooler is not None else None,
            )
        if isinstance(features, torch.Tensor):
            return self.projection(features)
        raise ConfigError("task projections need a BertOutput or a [B, T, D] / [B, D] tensor")

    def forward(self, features: Any, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> dict:
        return self.head(self.project(features), attention_mask, **kwargs)


class MultiTaskHead(nn.Module):
    """Named heads over shared features, with the head contract (``forward``, ``compute_loss``, metrics).

    Args:
        task_configs: task name → HeadConfig / dict / NLPTaskConfig.
        input_dim: feature width, one int for every task or a dict task → width.
        use_task_specific_projections: add a residual ``D → D`` projection before each head.
        projection_dropout: dropout of those projections.
    """

    def __init__(
        self,
        task_configs: dict[str, Any],
        input_dim: int | dict[str, int],
        use_task_specific_projections: bool = True,
        projection_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if not task_configs:
            raise ConfigError("a multi-task head needs at least one task")
        self.use_task_specific_projections = bool(use_task_specific_projections)
        self.branches = nn.ModuleDict()
        for name, spec in task_configs.items():
            if not str(name).isidentifier():
                raise ConfigError(f"task name '{name}' must be an identifier (letters, digits, underscores)")
            dim = int(input_dim[name] if isinstance(input_dim, dict) else input_dim)
            head = create_head(head_config_for(name, spec, dim))
            if head.level == "bi_encoder":
                raise ConfigError(
                    f"task '{name}': bi-encoder heads cannot share one encoder pass; use a pair head"
                )
            proj = TaskProjection(dim, projection_dropout) if self.use_task_specific_projections else None
            self.branches[name] = TaskBranch(head, proj)

    @property
    def task_names(self) -> list[str]:
        """Task names in definition order."""
        return list(self.branches.keys())

    def head(self, task_name: str) -> BaseHead:
        """The head of one task."""
        return self._branch(task_name).head

    def _branch(self, task_name: str) -> TaskBranch:
        if task_name not in self.branches:
            raise ConfigError(f"unknown task '{task_name}'; tasks: {', '.join(self.task_names)}")
        return self.branches[task_name]  # type: ignore[return-value]

    def forward(
        self,
        hidden_states: Any,
        attention_mask: torch.Tensor | None = None,
        task_name: str | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """One task's outputs, or ``{task: outputs}`` for every task.

        ``hidden_states`` is what a head accepts (BertOutput, ``[B, T, H]``, dict) or, for all tasks, a dict
        task → such features (tasks behind different adapters see different features).
        """
        if task_name is not None:
            feats = hidden_states[task_name] if _per_task(hidden_states, self.task_names) else hidden_states
            return self._branch(task_name)(feats, attention_mask, **kwargs)
        per_task = _per_task(hidden_states, self.task_names)
        return {
            t: self._branch(t)(hidden_states[t] if per_task else hidden_states, attention_mask, **kwargs)
            for t in self.task_names
        }

    def compute_loss(self, outputs: dict[str, torch.Tensor], targets: Any, task_name: str) -> torch.Tensor:
        """The task head's loss."""
        return self.head(task_name).compute_loss(outputs, targets)

    def compute_metrics(self, outputs: dict[str, Any], targets: Any, task_name: str) -> dict[str, float]:
        """The task head's metrics over a dataset (numpy arrays)."""
        return self.head(task_name).compute_metrics(outputs, targets)


def _per_task(features: Any, tasks: list[str]) -> bool:
    return isinstance(features, dict) and bool(features) and set(features) <= set(tasks)


def _detach(out: BertOutput) -> BertOutput:
    return BertOutput(
        last_hidden_state=out.last_hidden_state.detach(),
        attention_mask=out.attention_mask,
        pooler_output=None if out.pooler_output is None else out.pooler_output.detach(),
    )


class MultiTaskModel(nn.Module):
    """A shared encoder, an optional adapter strategy, and a :class:`MultiTaskHead`.

    Args:
        bert: the shared encoder (already wrapped by ``strategy.attach`` when a strategy is given).
        head: the named heads.
        strategy: adapter routing/fusion (None: every task reads the plain encoder output).
        adapter_config: the adapter configuration (saved with the model).
        tokenizer: kept with the model and saved in its folder.
        metadata: JSON facts saved in ``model_metadata.json`` (per-task data info, load plan...).
    """

    def __init__(
        self,
        bert: BertCore,
        head: MultiTaskHead,
        strategy: AdapterStrategy | None = None,
        adapter_config: AdapterConfig | None = None,
        tokenizer: Any | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.bert = bert
        self.head = head
        self.strategy = strategy
        self.adapter_config = adapter_config or (strategy.config if strategy is not None else AdapterConfig())
        self.tokenizer = tokenizer
        self.metadata: dict[str, Any] = dict(metadata or {})
        if tokenizer is not None and bert.decoder_only:
            tokenizer.padding_side = "left"

    # ------------------------------------------------------------------ access
    @property
    def task_names(self) -> list[str]:
        """Task names in definition order."""
        return self.head.task_names

    def get_head(self, task_name: str) -> BaseHead:
        """The head of one task."""
        return self.head.head(task_name)

    def get_bert(self) -> BertCore:
        """The shared encoder."""
        return self.bert

    def to_device(self, device: torch.device | str) -> MultiTaskModel:
        """Move the model; a 4-bit base stays where bitsandbytes put it (only the rest moves)."""
        if not (self.metadata.get("load_plan") or {}).get("quantize_4bit"):
            return self.to(device)
        for name, child in self.bert.named_children():
            if name not in ("model", "_layers"):
                child.to(device)
        self.head.to(device)
        if self.strategy is not None:
            self.strategy.to(device)
        return self

    def set_stage(self, stage: int) -> None:
        """S4 stage switch (no-op for other strategies)."""
        if self.strategy is not None:
            self.strategy.set_stage(stage)

    # ---------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        task_name: str | None = None,
        labels: Any | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        """Run one task (``task_name``; ``"loss"`` added with ``labels``) or every task (``{task: outputs}``).

        Encoder passes are shared between tasks that read the same adapter combination.
        """
        cache: dict[tuple[tuple[str, ...], bool], BertOutput] = {}

        def encode(adapters: tuple[str, ...], need_grad: bool) -> BertOutput:
            if (adapters, True) in cache:
                out = cache[(adapters, True)]
                return out if need_grad else _detach(out)
            if (adapters, need_grad) not in cache:
                if self.strategy is not None:
                    self.strategy.activate(adapters)
                with torch.set_grad_enabled(need_grad and torch.is_grad_enabled()):
                    cache[(adapters, need_grad)] = self.bert(input_ids, attention_mask, token_type_ids)
            return cache[(adapters, need_grad)]

        if task_name is None:
            if labels is not None:
                raise ConfigError("labels need a task_name (each task has its own targets)")
            return {t: self._run_task(t, encode, input_ids, None, kwargs) for t in self.task_names}
        return self._run_task(task_name, encode, input_ids, labels, kwargs)

    def _run_task(self, task: str, encode: Any, input_ids: torch.Tensor, labels: Any, kwargs: dict) -> dict:
        if task not in self.task_names:
            raise ConfigError(f"unknown task '{task}'; tasks: {', '.join(self.task_names)}")
        feats = self.strategy.features(task, encode) if self.strategy is not None else encode((), True)
        outputs = self.head(feats, feats.attention_mask, task_name=task, input_ids=input_ids, **kwargs)
        if labels is not None:
            outputs["loss"] = self.head.compute_loss(outputs, labels, task)
        return outputs

    # --------------------------------------------------------- parameter roles
    def task_parameters(self) -> tuple[list[nn.Parameter], dict[str, list[nn.Parameter]]]:
        """(shared trainable parameters, task → its own trainable parameters) — PCGrad's split."""
        owned: dict[int, str] = {}
        for t in self.task_names:
            modules: list[nn.Module] = [self.head.branches[t]]
            if self.strategy is not None:
                modules += self.strategy.task_modules(t)
            for m in modules:
                for p in m.parameters():
                    owned[id(p)] = t
        if self.strategy is not None:
            for p, adapter in self.strategy._lora_params:
                task = self.strategy.task_of_adapter(adapter)
                if task is not None:
                    owned[id(p)] = task
        shared: list[nn.Parameter] = []
        per_task: dict[str, list[nn.Parameter]] = {t: [] for t in self.task_names}
        seen: set[int] = set()
        for p in self.parameters():
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            (per_task[owned[id(p)]] if id(p) in owned else shared).append(p)
        return shared, per_task

    # ------------------------------------------------------------- persistence
    def save_pretrained(self, folder: str | os.PathLike[str]) -> Path:
        """Write the model folder (encoder reference or weights, adapters, fusion modules, heads, tokenizer)."""
        from bertkit.multitask.saving import save_multitask_model

        return save_multitask_model(self, folder)

    @classmethod
    def from_pretrained(
        cls, folder: str | os.PathLike[str], load_tokenizer_files: bool = True
    ) -> MultiTaskModel:
        """Load a folder written by :meth:`save_pretrained` (or a run folder holding ``model/``)."""
        from bertkit.multitask.saving import load_multitask_model

        return load_multitask_model(folder, load_tokenizer_files=load_tokenizer_files)

    # -------------------------------------------------------------- inference
    def predict(
        self,
        texts: list[str],
        task_name: str,
        return_probabilities: bool = False,
        batch_size: int = 64,
        max_length: int | None = None,
    ) -> list[Any]:
        """Decoded predictions of one task for raw strings (see :func:`bertkit.multitask.data.predict_texts`)."""
        from bertkit.multitask.data import predict_texts

        return predict_texts(self, texts, task_name, return_probabilities, batch_size, max_length)


def create_multi_task_nlp_head(
    task_configs: dict[str, Any], input_dim: int, use_task_specific_projections: bool = True, **kwargs: Any
) -> MultiTaskHead:
    """Named heads for an encoder the user already has (width ``input_dim``).

    Example:
        >>> head = create_multi_task_nlp_head(
        ...     {"sentiment": {"head_type": "binary", "num_labels": 2},
        ...      "ner": {"task_type": "named_entity_recognition", "num_classes": 9}}, input_dim=384)
        >>> out = head(bert_output, task_name="ner")      # one task; head(bert_output) → {task: outputs}
    """
    return MultiTaskHead(task_configs, input_dim, use_task_specific_projections, **kwargs)


def create_multi_task_model(
    task_configs: dict[str, Any],
    bert_name: str | None = "minilm",
    use_task_specific_projections: bool = True,
    adapters: AdapterConfig | dict[str, Any] | str | None = None,
    bert_config: dict[str, Any] | None = None,
    tokenizer: Any | None = None,
    metadata: dict[str, Any] | None = None,
    quantization: str = "none",
    gradient_checkpointing: Any = False,
    attn_implementation: str = "sdpa",
) -> MultiTaskModel:
    """Build a shared encoder, the adapter strategy and one head per task.

    Example:
        >>> model = create_multi_task_model(
        ...     {"sentiment": {"head_type": "binary_classification", "num_labels": 2},
        ...      "topic": {"head_type": "multiclass", "label_names": ["a", "b", "c"]},
        ...      "ner": {"head_type": "ner", "label_names": ["O", "B-PER", "I-PER"]}},
        ...     bert_name="minilm", adapters={"strategy": "s3a", "fusion": "attention"})
        >>> out = model(**batch, task_name="sentiment")     # model(**batch) → {task: outputs}

    Args:
        task_configs: task → HeadConfig / dict / NLPTaskConfig.
        bert_name: ``"minilm"``, a local folder or a hub id (None with ``bert_config``: from scratch).
        use_task_specific_projections: residual ``H → H`` projection per task before its head.
        adapters: an :class:`AdapterConfig`, its dict, a strategy name, or None (full fine-tuning).
        bert_config: further :class:`~bertkit.config.BertConfig` fields.
        tokenizer: kept with the model (default: the backbone's or the bundled one).
        metadata: JSON facts saved with the model.
        quantization / gradient_checkpointing / attn_implementation: see :func:`bertkit.multitask.loader.plan_loading`
            (``"auto"`` decides from the parameter count and free GPU memory).
    """
    from bertkit.factory import _bert_config
    from bertkit.model import load_tokenizer
    from bertkit.multitask.loader import load_encoder, plan_loading

    if isinstance(adapters, str):
        adapters = AdapterConfig(strategy=adapters)
    elif isinstance(adapters, dict):
        adapters = AdapterConfig.from_dict(adapters)
    adapter_cfg = adapters or AdapterConfig()
    cfg = _bert_config(bert_name, bert_config, {})
    plan = plan_loading(cfg, quantization, gradient_checkpointing, attn_implementation)
    if plan.quantize_4bit and not adapter_cfg.uses_lora:
        raise ConfigError(
            "a 4-bit quantized base can only train adapters; choose an adapter strategy (s1-s4)"
        )
    bert = load_encoder(cfg, plan)
    model = assemble(bert, task_configs, adapter_cfg, use_task_specific_projections, attach=True)
    model.tokenizer = tokenizer if tokenizer is not None else load_tokenizer(bert.config.model_name_or_path)
    model.metadata.update({**(metadata or {}), "load_plan": plan.to_dict()})
    return model


def task_levels(task_configs: dict[str, Any], adapter_cfg: AdapterConfig, hidden: int) -> dict[str, int]:
    """S3b level per task: configured, else 1 for token-level heads and 2 for the rest."""
    levels: dict[str, int] = {}
    for name, spec in task_configs.items():
        if name in adapter_cfg.levels:
            levels[name] = int(adapter_cfg.levels[name])
            continue
        level = get_head_class(head_config_for(name, spec, hidden).head_type).level
        levels[name] = 1 if level == "token" else 2
    unknown = set(adapter_cfg.levels) - set(task_configs)
    if unknown:
        raise ConfigError(
            f"adapters.levels names unknown task(s) {sorted(unknown)}; tasks: {list(task_configs)}"
        )
    return levels


def assemble(
    bert: BertCore,
    task_configs: dict[str, Any],
    adapter_cfg: AdapterConfig,
    use_task_specific_projections: bool,
    attach: bool = True,
) -> MultiTaskModel:
    """Strategy (PEFT adapters attached when ``attach``) + heads sized to each task's features."""
    hidden = bert.hidden_size
    strategy = None
    dims: dict[str, int] = dict.fromkeys(task_configs, hidden)
    if adapter_cfg.uses_lora:
        strategy = AdapterStrategy(adapter_cfg, task_levels(task_configs, adapter_cfg, hidden), hidden)
        if attach:
            strategy.attach(bert)
        dims = {t: strategy.feature_dim(t) for t in task_configs}
    head = MultiTaskHead(task_configs, dims, use_task_specific_projections)
    return MultiTaskModel(bert, head, strategy, adapter_cfg)
