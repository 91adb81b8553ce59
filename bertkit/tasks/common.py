"""Shared pieces of the NER / span / QA / relation runners: the pipeline interface, datasets, a collator, profiles.

A task runner is a :class:`TaskPipeline` subclass (how to read a file, build the model, tokenize, decode the
outputs back to words / answers / labels, score and write predictions in the input's own format) plus the
generic drivers in :mod:`bertkit.tasks.driver` (train, cross-validate, predict, evaluate), which reuse the
sequence pipeline's Trainer, run-folder files and reports. This module imports no torch at import time, so
``bertkit.runners.known_tasks()`` stays cheap.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from bertkit.runconfig import RunConfig

IGNORE_INDEX = -100


# ----------------------------------------------------------------------------------------------- profile
def length_stats(values: Sequence[float]) -> dict[str, float]:
    """``min / mean / p50 / p95 / max`` of a list of lengths (zeros when empty)."""
    if not len(values):
        return {"min": 0, "mean": 0.0, "p50": 0, "p95": 0, "max": 0}
    arr = np.asarray(values, dtype=float)
    return {
        "min": int(arr.min()),
        "mean": round(float(arr.mean()), 2),
        "p50": int(np.percentile(arr, 50)),
        "p95": int(np.percentile(arr, 95)),
        "max": int(arr.max()),
    }


def recommend_max_length(token_lengths: Sequence[int], cap: int = 512) -> int:
    """The 95th-percentile length (special tokens included) rounded up to a multiple of 32, at most ``cap``."""
    if not len(token_lengths):
        return 128
    p95 = float(np.percentile(np.asarray(token_lengths), 95))
    return int(min(cap, max(32, int(np.ceil(p95 / 32.0)) * 32)))


@dataclass
class TaskProfile:
    """What ``bertkit analyze`` prints for a token/QA/relation file (``summary()``) or dumps (``to_dict()``)."""

    task: str
    source: str
    stats: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"task": self.task, "source": self.source, **self.stats, "notes": list(self.notes)}

    def summary(self) -> str:
        """A readable ``key : value`` table; count dicts as ``a=1, b=2`` and length stats as ``min/mean/...``."""
        rows: list[tuple[str, str]] = [("source", self.source), ("task", self.task)]
        for key, value in self.stats.items():
            if isinstance(value, dict) and value and set(value) == {"min", "mean", "p50", "p95", "max"}:
                text = ", ".join(f"{k}={v}" for k, v in value.items())
            elif isinstance(value, dict):
                text = ", ".join(f"{k}={v:,}" if isinstance(v, int) else f"{k}={v}" for k, v in value.items())
            elif isinstance(value, int) and not isinstance(value, bool):
                text = f"{value:,}"
            else:
                text = str(value)
            rows.append((key.replace("_", " "), text if len(text) <= 160 else text[:157] + "..."))
        width = max(len(k) for k, _ in rows)
        lines = [f"{k.ljust(width)} : {v}" for k, v in rows]
        if self.notes:
            lines += ["", "why:"] + [f"  - {n}" for n in self.notes]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------ datasets
class TaskDataset:
    """Model rows (windows / features) of a list of items (documents, questions, sentences).

    The Trainer needs ``lengths``, ``__getitem__`` and ``targets`` (not None when labelled); the pipelines
    need ``rows`` (with bookkeeping keys such as ``word_ids`` or ``offset_mapping``) and ``items``.

    Args:
        rows: One dict per model input row.
        items: The documents/examples the rows come from.
        labelled: Rows carry targets (``label_keys``); when False those keys are dropped from items.
        label_keys: Keys holding targets.
    """

    def __init__(
        self, rows: list[dict[str, Any]], items: Sequence[Any], labelled: bool, label_keys: tuple[str, ...]
    ) -> None:
        self.rows = rows
        self.items = list(items)
        self.labelled = labelled
        self.label_keys = label_keys
        self.lengths = [len(r["input_ids"]) for r in rows]
        self.targets: list[bool] | None = [True] * len(rows) if labelled else None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = self.rows[index]
        if self.labelled:
            return row
        return {k: v for k, v in row.items() if k not in self.label_keys}


class TaskCollator:
    """Dynamic padding for token, span, QA and sequence rows (right padding).

    Modes: ``"token"`` (``labels [B, T]`` padded with -100, ``word_mask``), ``"span"`` (``span_starts``,
    ``span_ends``, ``span_mask [B, S]``; targets ``{"span_labels", "span_groups"}``), ``"qa"`` (targets
    ``{"start_positions", "end_positions"}``) and ``"sequence"`` (one integer label per row).

    Args:
        pad_token_id: Id used to pad ``input_ids``.
        mode: One of the modes above.
    """

    def __init__(self, pad_token_id: int, mode: str) -> None:
        self.pad_token_id = int(pad_token_id)
        self.mode = mode

    @staticmethod
    def _pad(rows: Sequence[Sequence[int]], value: int) -> Any:
        import torch

        width = max(1, max((len(r) for r in rows), default=0))
        out = np.full((len(rows), width), value, dtype=np.int64)
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        return torch.from_numpy(out)

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        from bertkit.heads.span import TargetDict

        batch: dict[str, Any] = {
            "input_ids": self._pad([it["input_ids"] for it in items], self.pad_token_id),
            "attention_mask": self._pad([[1] * len(it["input_ids"]) for it in items], 0),
        }
        if "token_type_ids" in items[0]:
            batch["token_type_ids"] = self._pad([it["token_type_ids"] for it in items], 0)
        labelled = "labels" in items[0] or "span_labels" in items[0] or "start_positions" in items[0]
        if self.mode == "token":
            batch["word_mask"] = self._pad([it["word_mask"] for it in items], 0)
            if labelled:
                batch["labels"] = self._pad([it["labels"] for it in items], IGNORE_INDEX)
        elif self.mode == "span":
            batch["span_starts"] = self._pad([it["span_starts"] for it in items], 0)
            batch["span_ends"] = self._pad([it["span_ends"] for it in items], 0)
            batch["span_mask"] = self._pad([[1] * len(it["span_starts"]) for it in items], 0)
            if labelled:
                batch["labels"] = TargetDict(
                    span_labels=self._pad([it["span_labels"] for it in items], IGNORE_INDEX),
                    span_groups=self._pad([it["span_groups"] for it in items], -1),
                )
        elif self.mode == "qa":
            if labelled:
                batch["labels"] = TargetDict(
                    start_positions=torch.tensor([it["start_positions"] for it in items], dtype=torch.long),
                    end_positions=torch.tensor([it["end_positions"] for it in items], dtype=torch.long),
                )
        elif labelled:
            batch["labels"] = torch.tensor([int(it["labels"]) for it in items], dtype=torch.long)
        return batch


# ------------------------------------------------------------------------------------------ pipeline
class TaskPipeline(ABC):
    """One task family's data handling; the drivers in :mod:`bertkit.tasks.driver` do the rest.

    Subclasses set ``runner`` (saved in ``model_metadata.json``), ``collate_mode``, ``label_keys``,
    ``best_metric`` (validation metric for the best checkpoint when the config names none) and implement the
    methods below. ``settings`` are the task options (from ``model.head_options.extra`` at training time,
    from the saved head config at prediction time).
    """

    runner = ""
    collate_mode = "sequence"
    label_keys: tuple[str, ...] = ("labels",)
    best_metric: str | None = None

    def __init__(self, settings: dict[str, Any], max_length: int) -> None:
        self.settings = dict(settings)
        self.max_length = int(max_length)

    # construction ------------------------------------------------------------------------------------
    @classmethod
    def from_config(cls, cfg: RunConfig) -> TaskPipeline:
        """The pipeline for a training run."""
        extra = dict(cfg.model.head_options.get("extra") or {})
        return cls(extra, cfg.training.max_length)

    @classmethod
    def from_model(cls, model: Any) -> TaskPipeline:
        """The pipeline a saved model was trained with (settings from its head config and metadata)."""
        return cls(dict(model.head.config.extra), int(model.metadata.get("max_length", 128)))

    # to implement ------------------------------------------------------------------------------------
    @abstractmethod
    def read(self, path: str | Path) -> list[Any]:
        """Read a data file into items (raises one-line DataErrors)."""

    @abstractmethod
    def is_labelled(self, items: Sequence[Any]) -> bool:
        """Whether every item has gold annotations."""

    @abstractmethod
    def build_model(self, cfg: RunConfig, tokenizer: Any, train: Sequence[Any], valid: Sequence[Any]) -> Any:
        """The model for these training items (labels from train + valid)."""

    @abstractmethod
    def dataset(self, model: Any, items: Sequence[Any], labelled: bool) -> TaskDataset:
        """Tokenized rows for ``items``."""

    @abstractmethod
    def decode(self, model: Any, ds: TaskDataset, outputs: dict[str, np.ndarray]) -> list[Any]:
        """One prediction per item from the model outputs over ``ds`` rows."""

    @abstractmethod
    def score(self, model: Any, items: Sequence[Any], preds: Sequence[Any]) -> dict[str, float]:
        """Metrics of item-level predictions against the items' gold annotations."""

    @abstractmethod
    def write(
        self, path: Path, items: Sequence[Any], preds: Sequence[Any], proba: bool = False
    ) -> list[Path]:
        """Write predictions in the input's own format; returns the written files."""

    @abstractmethod
    def combine(self, model: Any, fold_preds: list[list[Any]]) -> list[Any]:
        """Merge several models' predictions for the same items (cross-validation test predictions)."""

    @abstractmethod
    def profile(self, items: Sequence[Any], tokenizer: Any, source: str) -> TaskProfile:
        """``bertkit analyze`` statistics."""

    # optional ----------------------------------------------------------------------------------------
    def read_for_analysis(self, path: str | Path) -> list[Any]:
        """Read a file for ``analyze`` (default: :meth:`read`)."""
        return self.read(path)

    def output_suffix(self, source: str | Path) -> str:
        """File suffix of prediction files for a given input (default: the input's own)."""
        return Path(source).suffix or ".txt"

    def collator(self, pad_token_id: int) -> Any:
        """The batch builder for this pipeline's rows (default: :class:`TaskCollator` in ``collate_mode``)."""
        return TaskCollator(pad_token_id, self.collate_mode)

    def group_of(self, item: Any, column: str) -> str:
        """Group key of an item for ``cv --group-column`` (default: a field of the item's ``meta``)."""
        from bertkit.errors import DataError

        meta = getattr(item, "meta", {}) or {}
        if column not in meta:
            raise DataError(f"group column '{column}' is not a field of the records; fields: {sorted(meta)}")
        return str(meta[column])

    def default_groups(self, items: Sequence[Any]) -> list[str] | None:
        """Groups used by ``cv`` when no group column is given (None: plain shuffled KFold)."""
        return None

    def finish(self, model: Any, trainer: Any, valid: TaskDataset | None) -> dict[str, float]:
        """Post-training fitting on validation data (e.g. the SQuAD v2 null threshold); returns a report."""
        return {}

    def metadata(self) -> dict[str, Any]:
        """Facts saved in ``model_metadata.json`` (``runner`` lets ``predict``/``evaluate`` dispatch back)."""
        return {"runner": self.runner, "max_length": self.max_length}


def first_json_record(path: Path) -> Any:
    """The first JSON value of a JSONL file (None when the first non-empty line is not JSON or over 1 MB)."""
    try:
        with path.open(encoding="utf-8") as fh:
            for _ in range(1000):
                line = fh.readline(1 << 20)
                if not line:
                    return None
                if line.strip():
                    return json.loads(line)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    return None


def read_records(path: str | Path) -> tuple[list[str] | None, dict[int, dict[str, Any]]]:
    """Raw records of a CSV/TSV (header columns, {start line: row}) or JSONL ({line: object}) file."""
    import csv
    import io

    path = Path(path)
    raw = path.read_text(encoding="utf-8-sig")
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        return None, {n: json.loads(line) for n, line in enumerate(raw.splitlines(), start=1) if line.strip()}
    reader = csv.DictReader(
        io.StringIO(raw, newline=""), delimiter="\t" if path.suffix.lower() == ".tsv" else ","
    )
    fields = list(reader.fieldnames or [])
    out: dict[int, dict[str, Any]] = {}
    start = reader.line_num + 1
    for rec in reader:
        out[start] = dict(rec)
        start = reader.line_num + 1
    return fields, out
