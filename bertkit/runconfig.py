"""Run configuration: data + model + training sections, presets, YAML files and ``--set key=value``.

A run's ``config.yaml`` holds everything needed to rerun it. Presets (``quick``, ``default``,
``competition``) are YAML files shipped in ``bertkit/presets/``; a user YAML and ``--set`` flags are applied
on top, in that order. Unknown keys and bad values are rejected naming the key and the allowed values.
"""

from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from bertkit.config import ConfigBase, TrainingConfig, check_choice
from bertkit.errors import ConfigError

PRESETS = ("quick", "default", "competition")


@dataclass
class DataConfig(ConfigBase):
    """Which columns hold what, and how rows are chosen (every guess of ``analyze`` can be overridden).

    Attributes:
        task: "auto" or a task served by a registered runner (``bertkit.runners.known_tasks()``).
        text_column / text_columns: the text, or two columns for pairs (several for template serialisation).
        label_column / label_columns: the target, or several 0/1 columns (multilabel).
        id_column: carried into predictions and oof.csv.
        group_column: GroupKFold groups in ``cv``; the query of ranking data; the sequence id of
            document sequences (with ``time_column``).
        time_column: order of each group's documents: selects the document-sequence runner
            (``timeseries_classification`` / ``timeseries_regression`` heads, docs/heads.md).
        template: "auto" or a ``str.format`` template joining several columns into one text.
        multilabel_delimiter: delimiter of a multilabel string column (e.g. ";").
        max_train_samples: train on exactly the first N rows after a seeded shuffle.
        valid_fraction: share of the data used for validation when no validation file is given.
        strict: reject rows with empty text/labels instead of dropping them with a warning.
        cache_dir: tokenize into an on-disk token cache here (memory-mapped, keyed by the data's hash, the
            tokenizer, max_length and truncation; reruns skip tokenization). None: tokenize in memory.
    """

    task: str = "auto"
    text_column: str | None = None
    text_columns: list[str] | None = None
    label_column: str | None = None
    label_columns: list[str] | None = None
    id_column: str | None = None
    group_column: str | None = None
    time_column: str | None = None
    template: str | None = None
    multilabel_delimiter: str | None = None
    max_train_samples: int | None = None
    valid_fraction: float = 0.1
    strict: bool = False
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        from bertkit.runners import known_tasks

        self.task = check_choice("data.task", self.task, known_tasks())
        if self.time_column is not None:
            if self.task == "auto":
                self.task = "timeseries"
            if not self.task.startswith("timeseries"):
                raise ConfigError(
                    f"data.time_column orders document sequences; it does not fit task='{self.task}' "
                    "(use --task timeseries, or drop --time-column)"
                )
            if not self.group_column:
                raise ConfigError(
                    "data.time_column needs data.group_column (--group-column): the sequence id"
                )
        if not 0.0 < self.valid_fraction < 0.9:
            raise ConfigError(f"data.valid_fraction must be in (0, 0.9), got {self.valid_fraction}")
        if self.max_train_samples is not None and self.max_train_samples < 2:
            raise ConfigError(f"data.max_train_samples must be >= 2, got {self.max_train_samples}")

    def analyze_overrides(self) -> dict[str, Any]:
        """Keyword overrides for :func:`bertkit.data.analyze_dataset`."""
        keys = (
            "text_column",
            "text_columns",
            "label_column",
            "label_columns",
            "id_column",
            "group_column",
            "template",
            "multilabel_delimiter",
        )
        out = {k: getattr(self, k) for k in keys if getattr(self, k) is not None}
        if self.task in ("binary", "multiclass", "multilabel", "regression", "ordinal"):
            out["task"] = self.task
        return out


@dataclass
class ModelConfig(ConfigBase):
    """Backbone and head choices.

    Attributes:
        backbone: "minilm" (bundled), a local folder, or a hub id.
        head: registry name of the head (None: chosen from the task).
        pooling: pooling type (None: the head's default, "last" for decoder-only backbones).
        head_options: further :class:`~bertkit.config.HeadConfig` fields (loss_type, dropout_prob, extra...).
        bert_options: further :class:`~bertkit.config.BertConfig` fields (dropout, attn_implementation...).
        freeze_bert_layers: freeze the embeddings and the first k layers for the whole run.
        regression_dropout: for regression tasks only, set the head's and the encoder's dropout to this
            (0.0 is the usual trick: dropout adds noise to real-valued outputs); None leaves them alone.
    """

    backbone: str = "minilm"
    head: str | None = None
    pooling: str | None = None
    head_options: dict[str, Any] = field(default_factory=dict)
    bert_options: dict[str, Any] = field(default_factory=dict)
    freeze_bert_layers: int = 0
    regression_dropout: float | None = None


@dataclass
class RunConfig:
    """A whole run: ``data``, ``model`` and ``training`` sections (the layout of config.yaml)."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)

    def to_dict(self) -> dict[str, Any]:
        return {
            "data": self.data.to_dict(),
            "model": self.model.to_dict(),
            "training": self.training.to_dict(),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RunConfig:
        data = dict(data or {})
        sections: dict[str, type[ConfigBase]] = {
            "data": DataConfig,
            "model": ModelConfig,
            "training": TrainingConfig,
        }
        unknown = [k for k in data if k not in sections]
        if unknown:
            close = difflib.get_close_matches(unknown[0], list(sections), n=1)
            hint = f" (did you mean '{close[0]}'?)" if close else ""
            raise ConfigError(
                f"unknown config section '{unknown[0]}'{hint}; valid sections: data, model, training"
            )
        return cls(**{name: kind.from_dict(data.get(name) or {}) for name, kind in sections.items()})  # type: ignore[arg-type]

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def deep_update(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``update`` into a copy of ``base``."""
    out = copy.deepcopy(base)
    for key, value in (update or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_update(out[key], value)
        else:
            out[key] = value
    return out


def preset_dict(name: str) -> dict[str, Any]:
    """The shipped preset YAML as a dict."""
    name = check_choice("preset", name, PRESETS)
    text = resources.files("bertkit.presets").joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    return yaml.safe_load(text) or {}


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a user YAML config (one-line errors for a missing file or bad YAML)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping with sections data/model/training")
    return data


def parse_set(items: list[str] | None) -> dict[str, Any]:
    """``["training.epochs=2", "model.head_options.extra.clip=[0,5]"]`` → nested dict (values parsed as YAML)."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value (e.g. training.epochs=2), got '{item}'")
        key, raw = item.split("=", 1)
        parts = [p for p in key.strip().split(".") if p]
        if len(parts) < 2:
            raise ConfigError(f"--set key '{key}' needs a section: data.X, model.X or training.X")
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node = out
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return out


def build_run_config(
    preset: str = "default",
    config_file: str | Path | None = None,
    sets: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> RunConfig:
    """Preset → user YAML → explicit overrides (CLI flags) → ``--set`` items, validated into a RunConfig."""
    merged = preset_dict(preset)
    if config_file:
        merged = deep_update(merged, read_yaml(config_file))
    merged = deep_update(merged, overrides or {})
    merged = deep_update(merged, parse_set(sets))
    return RunConfig.from_dict(merged)
