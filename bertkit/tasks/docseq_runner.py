"""The document-sequence runner: time-ordered texts grouped by an id, for the sequence (time-series) heads.

``bertkit train posts.csv --group-column user --time-column date -o runs/users`` (any table format) picks this
runner whenever a time column is given (or ``--task timeseries|timeseries_classification|timeseries_regression``).
Each group's rows are sorted by time; every document is encoded once by the backbone, pooled
(``extra.document_pooling``: mean | cls) and the ``[B, S, H]`` document sequence goes through the head's RNN.

* **classification** (``timeseries_classification``): one example per group, labelled with the label of the
  group's latest row (a warning counts groups whose label changes over time); the latest ``max_documents``
  documents are read. Metrics: accuracy, macro-F1.
* **regression** (``timeseries_regression``): forecasting. The label column is a value observed with each
  document; for every time ``t`` the documents before ``t`` (at most ``max_documents``) predict the next
  ``horizon`` values (rolling origin, step ``window_stride``). With ``history: true`` (or ``decomposition``)
  the past values are also read. ``predict`` forecasts the ``horizon`` values after each group's last row.
  Metrics: RMSE, MAE, MAPE, sMAPE, directional accuracy.

Options (``--set model.head_options.extra.X=...``): ``max_documents`` (16), ``horizon`` (1), ``history``,
``decomposition``, ``window_stride`` (1), ``document_pooling``, and the RNN options of the heads.
Train/validation splits and ``cv`` folds are by group, so no group is on both sides.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bertkit.errors import ConfigError, DataError
from bertkit.fileio import write_with_atomic
from bertkit.runners import register_runner
from bertkit.tasks.common import TaskDataset, TaskPipeline, TaskProfile, length_stats, recommend_max_length
from bertkit.tasks.driver import create_task_model, make_runner

if TYPE_CHECKING:
    from bertkit.runconfig import RunConfig

KINDS = ("classification", "regression")
_COLUMNS = ("group_column", "time_column", "text_column", "label_column")


@dataclass
class DocSequence:
    """One group's documents in time order (``values``: the label column per document, None when absent)."""

    group: str
    times: list[Any]
    texts: list[str]
    values: list[Any] | None
    rows: list[int]
    source: str
    meta: dict[str, Any] = field(default_factory=dict)


def _sort_key(series: Any) -> Any:
    """Sortable time keys: numbers as they are, else parsed dates, else the strings."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(series):
        return series
    parsed = pd.to_datetime(series, errors="coerce", utc=True)
    return parsed if parsed.notna().all() else series.astype(str)


def _text_column(frame: Any, taken: set[str]) -> str:
    """The string column with the longest mean length among those not already used."""
    import pandas as pd

    candidates = [
        c
        for c in frame.columns
        if c not in taken and (frame[c].dtype == object or pd.api.types.is_string_dtype(frame[c]))
    ]
    if not candidates:
        raise DataError(
            f"no text column found; columns: {', '.join(map(str, frame.columns))} (--text-column)"
        )
    return str(max(candidates, key=lambda c: frame[c].fillna("").astype(str).str.len().mean()))


class DocSequencePipeline(TaskPipeline):
    """Groups of time-ordered documents with the ``timeseries_classification`` / ``_regression`` heads."""

    runner = "docseq"
    label_keys = ("labels",)

    @classmethod
    def from_config(cls, cfg: RunConfig) -> DocSequencePipeline:
        extra = dict(cfg.model.head_options.get("extra") or {})
        for key in _COLUMNS:
            if getattr(cfg.data, key, None) is not None:
                extra[key] = getattr(cfg.data, key)
        if cfg.data.task in ("timeseries_classification", "timeseries_regression"):
            extra["kind"] = cfg.data.task.split("_", 1)[1]
        return cls(extra, cfg.training.max_length)

    @property
    def best_metric(self) -> str | None:  # type: ignore[override]
        return "rmse" if self.settings.get("kind") == "regression" else "accuracy"

    @property
    def max_documents(self) -> int:
        return int(self.settings.get("max_documents", 16))

    @property
    def horizon(self) -> int:
        return int(self.settings.get("horizon", 1))

    @property
    def uses_history(self) -> bool:
        return bool(self.settings.get("history") or self.settings.get("decomposition"))

    # reading ---------------------------------------------------------------------------------------------
    def read(self, path: str | Path) -> list[Any]:
        from bertkit.data import read_table

        frame = read_table(path)
        group, time = self.settings.get("group_column"), self.settings.get("time_column")
        if not group or not time:
            raise ConfigError("document sequences need --group-column and --time-column")
        missing = [c for c in (group, time) if c not in frame.columns]
        if missing:
            raise DataError(
                f"{path} lacks the column(s) {missing}; columns: {', '.join(map(str, frame.columns))}"
            )
        label = self.settings.get("label_column")
        if label is None:
            guess = [c for c in ("label", "target", "value", "y") if c in frame.columns]
            label = self.settings["label_column"] = guess[0] if guess else None
        text = self.settings.get("text_column") or _text_column(frame, {group, time, label})
        self.settings["text_column"] = text
        if text not in frame.columns:
            raise DataError(
                f"{path} lacks the text column '{text}'; columns: {', '.join(map(str, frame.columns))}"
            )
        if frame[group].isna().any() or frame[time].isna().any():
            raise DataError(
                f"{path}: {int(frame[group].isna().sum())} rows have no {group} and "
                f"{int(frame[time].isna().sum())} no {time}; fill or drop them"
            )
        frame = frame.assign(_key=_sort_key(frame[time]), _row=np.arange(len(frame)))
        frame = frame.sort_values(["_key", "_row"], kind="stable")
        has_labels = label is not None and label in frame.columns and frame[label].notna().all()
        items = []
        order = {g: i for i, g in enumerate(dict.fromkeys(frame.sort_values("_row")[group].astype(str)))}
        for g, part in sorted(
            frame.groupby(frame[group].astype(str), sort=False), key=lambda kv: order[kv[0]]
        ):
            items.append(
                DocSequence(
                    group=str(g),
                    times=part[time].tolist(),
                    texts=part[text].fillna("").astype(str).tolist(),
                    values=part[label].tolist() if has_labels else None,
                    rows=part["_row"].tolist(),
                    source=str(path),
                    meta={group: str(g)},
                )
            )
        if not items:
            raise DataError(f"{path} has no rows")
        return items

    def is_labelled(self, items: Sequence[Any]) -> bool:
        return bool(items) and all(it.values is not None for it in items)

    def group_of(self, item: Any, column: str) -> str:
        return str(item.group)

    def default_groups(self, items: Sequence[Any]) -> list[str] | None:
        return [str(it.group) for it in items]

    def output_suffix(self, source: str | Path) -> str:
        return ".csv"

    # model -----------------------------------------------------------------------------------------------
    def _kind(self, items: Sequence[Any]) -> str:
        kind = self.settings.get("kind")
        if kind is not None:
            if kind not in KINDS:
                raise ConfigError(f"kind='{kind}' is not valid; choose one of: {', '.join(KINDS)}")
            return str(kind)
        values = [v for it in items for v in (it.values or [])]
        numeric = all(isinstance(v, int | float | np.number) and not isinstance(v, bool) for v in values)
        fractional = numeric and any(float(v) != int(v) for v in values)
        return "regression" if numeric and (fractional or len(set(values)) > 20) else "classification"

    def build_model(self, cfg: Any, tokenizer: Any, train: Sequence[Any], valid: Sequence[Any]) -> Any:
        from bertkit.config import check_choice

        kind = self.settings["kind"] = self._kind([*train, *valid])
        pooling = check_choice(
            "document_pooling", self.settings.get("document_pooling", "mean"), ("mean", "cls")
        )
        extra = {**self.settings, "max_documents": self.max_documents, "document_pooling": pooling}
        if kind == "classification":
            names = sorted({str(it.values[-1]) for it in [*train, *valid]})
            if len(names) < 2:
                raise DataError(f"sequence classification needs at least 2 labels; the data has only {names}")
            changing = sum(len({str(v) for v in it.values}) > 1 for it in train)
            if changing:
                warnings.warn(
                    f"{changing} of {len(train)} groups change label over time; each group is labelled with "
                    "its latest row's label",
                    stacklevel=2,
                )
            return create_task_model(
                cfg, tokenizer, "timeseries_classification", names, extra, self.metadata()
            )
        extra["horizon"] = self.horizon
        names = [f"step_{h + 1}" for h in range(self.horizon)]
        return create_task_model(cfg, tokenizer, "timeseries_regression", names, extra, self.metadata())

    # rows ------------------------------------------------------------------------------------------------
    def dataset(self, model: Any, items: Sequence[Any], labelled: bool) -> TaskDataset:
        tok = model.tokenizer
        texts = [t for it in items for t in it.texts]
        ids = (
            tok(texts, truncation=True, max_length=self.max_length, verbose=False)["input_ids"]
            if texts
            else []
        )
        rows: list[dict[str, Any]] = []
        start, W = 0, self.max_documents
        regression = self.settings.get("kind") == "regression"
        names = {n: i for i, n in enumerate(model.head.label_names())}
        for index, it in enumerate(items):
            docs = ids[start : start + len(it.texts)]
            start += len(it.texts)
            if not regression:
                row: dict[str, Any] = {"doc_ids": docs[-W:], "item": index, "t": len(docs)}
                if labelled:
                    if str(it.values[-1]) not in names:
                        raise DataError(
                            f"label '{it.values[-1]}' of group {it.group} was not seen in training; "
                            f"the model knows {list(names)[:8]}"
                        )
                    row["labels"] = names[str(it.values[-1])]
                rows.append(row)
                continue
            values = None if it.values is None else np.asarray(it.values, dtype=np.float64)
            if self.uses_history and values is None:
                raise DataError(
                    f"this model reads past values (history): {it.source} needs the "
                    f"'{self.settings.get('label_column')}' column"
                )
            origins = (
                range(1, len(docs) - self.horizon + 1, int(self.settings.get("window_stride", 1)))
                if labelled
                else [len(docs)]
            )
            for t in origins:
                lo = max(0, t - W)
                row = {"doc_ids": docs[lo:t], "item": index, "t": t}
                if values is not None and self.uses_history:
                    row["target_history"] = values[lo:t].tolist()
                if labelled and values is not None:
                    row["labels"] = values[t : t + self.horizon].tolist()
                rows.append(row)
        if labelled and not rows:
            raise DataError(f"no group has more than horizon={self.horizon} rows: nothing to forecast")
        return DocSequenceDataset(rows, items, labelled, self.label_keys)

    def collator(self, pad_token_id: int) -> Any:
        return DocumentCollator(pad_token_id)

    # outputs ---------------------------------------------------------------------------------------------
    def decode(self, model: Any, ds: TaskDataset, outputs: dict[str, np.ndarray]) -> list[Any]:
        """Classification: ``{"label", "probabilities", "names"}`` per group; regression: per group the list
        of ``(t, forecast [horizon])`` (``t``: index of the first forecast row)."""
        if self.settings.get("kind") != "regression":
            names = model.head.label_names()
            proba = np.asarray(outputs["probabilities"], dtype=float)
            return [{"label": names[int(p.argmax())], "probabilities": p, "names": names} for p in proba]
        pred = np.asarray(outputs["predictions"], dtype=float).reshape(len(ds), -1)
        per: list[list[tuple[int, np.ndarray]]] = [[] for _ in ds.items]
        for row, p in zip(ds.rows, pred):
            per[row["item"]].append((int(row["t"]), p))
        return [{"forecasts": f} for f in per]

    def score(self, model: Any, items: Sequence[Any], preds: Sequence[Any]) -> dict[str, float]:
        from sklearn.metrics import f1_score

        from bertkit.metrics import timeseries_metrics

        if self.settings.get("kind") != "regression":
            gold = [str(it.values[-1]) for it in items]
            guess = [p["label"] for p in preds]
            return {
                "accuracy": float(np.mean([g == p for g, p in zip(gold, guess)])),
                "macro_f1": float(f1_score(gold, guess, average="macro", zero_division=0)),
            }
        true, pred, last = [], [], []
        for it, p in zip(items, preds):
            values = np.asarray(it.values, dtype=np.float64)
            for t, forecast in p["forecasts"]:
                if t + self.horizon <= len(values) and t > 0:
                    true.append(values[t : t + self.horizon])
                    pred.append(forecast)
                    last.append(values[t - 1])
        if not true:
            return {}
        return timeseries_metrics(np.asarray(true), np.asarray(pred), last_value=np.asarray(last))

    def write(
        self, path: Path, items: Sequence[Any], preds: Sequence[Any], proba: bool = False
    ) -> list[Path]:
        """CSV: one row per group (classification, and forecasts after the last row) or per forecast origin."""
        import pandas as pd

        group = str(self.settings.get("group_column", "group"))
        records = []
        for it, p in zip(items, preds):
            if "label" in p:
                rec = {group: it.group, "prediction": p["label"], "documents": len(it.texts)}
                if proba:
                    rec.update(
                        {f"proba_{n}": round(float(v), 6) for n, v in zip(p["names"], p["probabilities"])}
                    )
                records.append(rec)
                continue
            for t, forecast in p["forecasts"]:
                rec = {group: it.group, "origin": it.times[t - 1] if t > 0 else None}
                rec.update({f"prediction_{h + 1}": float(v) for h, v in enumerate(forecast)})
                if it.values is not None and t + self.horizon <= len(it.values):
                    rec.update({f"true_{h + 1}": float(it.values[t + h]) for h in range(self.horizon)})
                records.append(rec)
        frame = pd.DataFrame(records)
        write_with_atomic(path, lambda p: frame.to_csv(p, index=False))
        return [path]

    def combine(self, model: Any, fold_preds: list[list[Any]]) -> list[Any]:
        """Mean probabilities (classification) or mean forecasts per origin (regression) over the folds."""
        out = []
        for per in zip(*fold_preds):
            if "label" in per[0]:
                p = np.mean([q["probabilities"] for q in per], axis=0)
                names = per[0]["names"]
                out.append({"label": names[int(p.argmax())], "probabilities": p, "names": names})
            else:
                merged = [
                    (t, np.mean([q["forecasts"][i][1] for q in per], axis=0))
                    for i, (t, _) in enumerate(per[0]["forecasts"])
                ]
                out.append({"forecasts": merged})
        return out

    def profile(self, items: Sequence[Any], tokenizer: Any, source: str) -> TaskProfile:
        texts = [t for it in items for t in it.texts]
        lengths = [len(x) for x in tokenizer(texts, verbose=False)["input_ids"]] if texts else []
        kind = self._kind(items) if self.is_labelled(items) else "unlabelled"
        stats: dict[str, Any] = {
            "groups": len(items),
            "documents": len(texts),
            "kind": kind,
            "documents_per_group": length_stats([len(it.texts) for it in items]),
            "tokens_per_document": length_stats(lengths),
            "recommended_max_length": recommend_max_length(lengths),
        }
        notes = [
            f"each group's documents are sorted by {self.settings.get('time_column')} and encoded one by one; "
            f"the latest max_documents={self.max_documents} feed the sequence head"
        ]
        if kind == "classification":
            stats["labels"] = dict(sorted(Counter(str(it.values[-1]) for it in items).items()))
        elif kind == "regression":
            values = np.asarray([v for it in items for v in it.values], dtype=float)
            stats["values"] = {"mean": round(float(values.mean()), 4), "std": round(float(values.std()), 4)}
            notes.append(f"forecasting horizon={self.horizon} step(s) from the documents before each time")
        return TaskProfile(f"timeseries_{kind}" if kind in KINDS else "timeseries", source, stats, notes)

    def metadata(self) -> dict[str, Any]:
        return {**super().metadata(), "task_kind": self.settings.get("kind")}


class DocSequenceDataset(TaskDataset):
    """Rows of document sequences: ``lengths`` are total tokens; ``targets`` the real labels/values."""

    def __init__(self, rows: list[dict[str, Any]], items: Sequence[Any], labelled: bool, keys: tuple) -> None:
        self.rows = rows
        self.items = list(items)
        self.labelled = labelled
        self.label_keys = keys
        self.lengths = [sum(len(d) for d in r["doc_ids"]) for r in rows]
        self.targets = np.asarray([r["labels"] for r in rows]) if labelled else None  # type: ignore[assignment]


class DocumentCollator:
    """Pads document sequences to ``input_ids [B, S, T]`` (+ ``attention_mask``; an all-zero document row is
    padding), ``labels`` (``[B]`` class ids or ``[B, horizon]`` values) and ``target_history [B, L]``
    (left-padded with each row's first value)."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = int(pad_token_id)

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        S = max(1, max(len(it["doc_ids"]) for it in items))
        T = max(1, max((len(d) for it in items for d in it["doc_ids"]), default=1))
        ids = np.full((len(items), S, T), self.pad_token_id, dtype=np.int64)
        mask = np.zeros((len(items), S, T), dtype=np.int64)
        for b, it in enumerate(items):
            for s, doc in enumerate(it["doc_ids"]):
                ids[b, s, : len(doc)] = doc
                mask[b, s, : len(doc)] = 1
        batch: dict[str, Any] = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        if "target_history" in items[0]:
            L = max(len(it["target_history"]) for it in items)
            hist = np.asarray(
                [
                    [it["target_history"][0]] * (L - len(it["target_history"])) + it["target_history"]
                    for it in items
                ],
                dtype=np.float32,
            )
            batch["target_history"] = torch.from_numpy(hist)
        if "labels" in items[0]:
            labels = [it["labels"] for it in items]
            kind = torch.float32 if isinstance(labels[0], list) else torch.long
            batch["labels"] = torch.tensor(labels, dtype=kind)
        return batch


def _never(path: Path) -> bool:
    return False  # chosen by --time-column or --task, never by sniffing a table


DOCSEQ_RUNNER = register_runner(
    make_runner(
        "docseq",
        ("timeseries", "timeseries_classification", "timeseries_regression"),
        DocSequencePipeline,
        _never,
        5,
    )
)
