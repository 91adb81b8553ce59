"""Per-task data for multi-task runs: tables (sequence heads), NER files (token heads) and type strings
(named binary dimensions such as MBTI), each tokenized with the shared tokenizer; evaluation and prediction.

A task's ``info`` dict (kind, columns, labels, max_length...) is saved in the model folder so that
``bertkit predict RUN_DIR data --task NAME`` reads new data exactly as the training data was read.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from bertkit.data import TokenizedDataset, read_table, tokenize_texts
from bertkit.data.tokenize import Collator
from bertkit.errors import DataError
from bertkit.inference.batched import predict_outputs
from bertkit.multitask.config import TaskSpec

IGNORE_INDEX = -100


@dataclass
class TaskData:
    """Everything the trainer and the runner need about one task."""

    name: str
    kind: str  # "table" | "ner" | "dimensions"
    head_config: dict[str, Any]
    info: dict[str, Any]
    train: Any = None
    valid: Any = None
    test: Any = None
    weight: float = 1.0
    extras: dict[str, Any] = field(default_factory=dict)  # docs/windows of NER splits, baselines


class RowsDataset(torch.utils.data.Dataset):
    """Pre-tokenized windows (NER) with ``lengths`` for bucketed batching; ``targets`` is truthy when labelled."""

    def __init__(self, rows: list[dict[str, Any]], labelled: bool) -> None:
        keys = ("input_ids", "token_type_ids", "word_mask") + (("labels",) if labelled else ())
        self.rows = [{k: r[k] for k in keys if k in r} for r in rows]
        self.lengths = [len(r["input_ids"]) for r in rows]
        self.targets: list[bool] | None = [True] * len(rows) if labelled else None

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.rows[index]


class TokenCollator:
    """Right-pads token rows: ``input_ids``, ``attention_mask``, ``token_type_ids``, ``word_mask`` (0), ``labels`` (-100)."""

    def __init__(self, pad_token_id: int) -> None:
        self.pad_token_id = int(pad_token_id)

    @staticmethod
    def _pad(rows: list[list[int]], value: int) -> torch.Tensor:
        out = np.full((len(rows), max(1, max(len(r) for r in rows))), value, dtype=np.int64)  # [B, T]
        for i, r in enumerate(rows):
            out[i, : len(r)] = r
        return torch.from_numpy(out)

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        batch = {
            "input_ids": self._pad([it["input_ids"] for it in items], self.pad_token_id),
            "attention_mask": self._pad([[1] * len(it["input_ids"]) for it in items], 0),
            "word_mask": self._pad([it["word_mask"] for it in items], 0),
        }
        if "token_type_ids" in items[0]:
            batch["token_type_ids"] = self._pad([it["token_type_ids"] for it in items], 0)
        if "labels" in items[0]:
            batch["labels"] = self._pad([it["labels"] for it in items], IGNORE_INDEX)
        return batch


def collator_for(kind: str, tokenizer: Any) -> Any:
    """The batch builder of a task kind."""
    if kind == "ner":
        return TokenCollator(tokenizer.pad_token_id or 0)
    return Collator.from_tokenizer(tokenizer, padding_side="right")


def shuffled_head(n: int, k: int | None, seed: int) -> np.ndarray:
    order = np.random.default_rng(seed).permutation(n)
    return order if not k or k >= n else order[:k]


# ------------------------------------------------------------------------------------------ type strings
def type_mask_pattern(dimensions: list[list[str]]) -> re.Pattern[str]:
    """Regex of every type string of ``dimensions`` (letters or ``x``, optional plural ``s``), any case."""
    classes = "".join(f"[{re.escape(a)}{re.escape(b)}x]" for a, b in dimensions)
    return re.compile(rf"\b{classes}s?\b", re.IGNORECASE)


def mask_type_names(texts: list[str], dimensions: list[list[str]], mask: str) -> list[str]:
    """Replace type names such as "INTJ", "enfps" or "INxJ" by ``mask`` (they would leak the label)."""
    pattern = type_mask_pattern(dimensions)
    return [pattern.sub(mask, t) for t in texts]


def split_types(values: pd.Series, dimensions: list[list[str]], where: str) -> np.ndarray:
    """``"INTJ"`` → ``[1, 1, 0, 0]`` (1 = the second letter of each pair); float32 ``[N, D]``."""
    out = np.zeros((len(values), len(dimensions)), dtype=np.float32)
    for i, raw in enumerate(values.astype(str).str.strip().str.upper().tolist()):
        if len(raw) != len(dimensions):
            raise DataError(f"{where}: row {i}: type '{raw}' should have {len(dimensions)} letters")
        for j, (a, b) in enumerate(dimensions):
            if raw[j] not in (a.upper(), b.upper()):
                raise DataError(f"{where}: row {i}: letter {j + 1} of '{raw}' is neither {a} nor {b}")
            out[i, j] = float(raw[j] == b.upper())
    return out


def compose_types(predictions: np.ndarray, dimensions: list[list[str]]) -> list[str]:
    """``[[1, 1, 0, 0]]`` → ``["INTJ"]``."""
    return ["".join(dimensions[j][int(v)] for j, v in enumerate(row)) for row in predictions]


def dimension_metrics(
    proba: np.ndarray, targets: np.ndarray, dimensions: list[list[str]]
) -> dict[str, float]:
    """Per-dimension accuracy, their mean, and all-dimensions-correct accuracy (threshold 0.5)."""
    pred = (proba >= 0.5).astype(int)
    y = targets.astype(int)
    out = {f"accuracy_{a}{b}": float((pred[:, j] == y[:, j]).mean()) for j, (a, b) in enumerate(dimensions)}
    out["mean_dimension_accuracy"] = float(np.mean(list(out.values())))
    out["all_dimensions_accuracy"] = float((pred == y).all(axis=1).mean())
    return out


def majority_baseline(train_targets: np.ndarray, targets: np.ndarray, dimensions: list[list[str]]) -> dict:
    """Accuracies of always predicting each dimension's majority letter (from the training targets)."""
    majority = (train_targets.mean(0) >= 0.5).astype(np.float32)  # [D]
    proba = np.broadcast_to(majority, targets.shape).astype(np.float32)
    out = dimension_metrics(proba, targets, dimensions)
    out["majority_type"] = compose_types(majority[None, :], dimensions)[0]
    return out


# ---------------------------------------------------------------------------------------------- loading
def _text_and_type_columns(df: pd.DataFrame, spec: TaskSpec, where: str) -> tuple[str, str]:
    from bertkit.data.readers import is_texty

    type_col = spec.label_column or ("type" if "type" in df.columns else None)
    if type_col is None:
        pattern = type_mask_pattern(spec.type_dimensions)
        for col in df.columns:
            vals = df[col].dropna().astype(str).head(50)
            if len(vals) and vals.map(lambda v: bool(pattern.fullmatch(v.strip()))).all():
                type_col = str(col)
                break
    text_col = spec.text_column or next(
        (str(c) for c in df.columns if c != type_col and is_texty(df[c])), None
    )
    if type_col is None or type_col not in df.columns or text_col is None or text_col not in df.columns:
        raise DataError(
            f"{where}: cannot find the text and type columns (columns: {', '.join(map(str, df.columns))}); "
            "set text_column and label_column"
        )
    return text_col, type_col


def dimension_split(path: str, info: dict, tokenizer: Any, n: int | None, seed: int) -> TokenizedDataset:
    df = read_table(path)
    df = df.iloc[np.sort(shuffled_head(len(df), n, seed))]
    return TokenizedDataset(*_dimension_frame(df, info, tokenizer))


def load_dimension_task(
    name: str, spec: TaskSpec, tokenizer: Any, max_length: int, truncation: str, seed: int
) -> TaskData:
    """A type-string task (e.g. MBTI): split the type column into 0/1 targets, mask type names."""
    df = read_table(spec.train)
    text_col, type_col = _text_and_type_columns(df, spec, str(spec.train))
    dims = spec.type_dimensions
    info = {
        "kind": "dimensions",
        "text_column": text_col,
        "label_column": type_col,
        "dimensions": dims,
        "mask_type_names": bool(spec.mask_type_names),
        "mask_token": tokenizer.mask_token or "[MASK]",
        "max_length": max_length,
        "truncation": truncation,
    }
    order = shuffled_head(len(df), None, seed)
    n_valid = 0 if spec.valid else max(1, int(round(0.1 * len(df))))
    train_rows = order[n_valid:]
    if spec.max_train_samples:
        train_rows = train_rows[: spec.max_train_samples]
    sub = df.iloc[np.sort(train_rows)]
    tmp_train = TokenizedDataset(*_dimension_frame(sub, info, tokenizer))
    if spec.valid:
        valid = dimension_split(spec.valid, info, tokenizer, spec.max_eval_samples, seed)
    else:
        valid = TokenizedDataset(*_dimension_frame(df.iloc[np.sort(order[:n_valid])], info, tokenizer))
    train_y = np.asarray(tmp_train.targets)
    pos_weight = spec.pos_weight
    if pos_weight == "balanced":
        pos = train_y.mean(0).clip(1e-3, 1 - 1e-3)
        pos_weight = ((1 - pos) / pos).round(4).tolist()
    head = {
        "head_type": "multilabel_classification",
        "num_labels": len(dims),
        "label_names": [f"{a}{b}" for a, b in dims],
        "pooling_type": "cls",
        "dropout_prob": 0.1,
        "loss_type": spec.loss,
        "extra": {"dimensions": dims, "fixed_thresholds": True},
    }
    if isinstance(pos_weight, list):
        head["extra"]["pos_weights"] = [float(w) for w in pos_weight]
    head = _merge_head_options(head, spec)
    data = TaskData(name, "dimensions", head, info, train=tmp_train, valid=valid, weight=spec.weight)
    data.extras["train_targets"] = train_y
    if spec.test:
        data.test = dimension_split(spec.test, info, tokenizer, spec.max_eval_samples, seed)
    return data


def _dimension_frame(df: pd.DataFrame, info: dict, tokenizer: Any) -> tuple[dict, np.ndarray]:
    texts = df[info["text_column"]].fillna("").astype(str).tolist()
    if info["mask_type_names"]:
        texts = mask_type_names(texts, info["dimensions"], info["mask_token"])
    targets = split_types(df[info["label_column"]], info["dimensions"], info["label_column"])
    feats = tokenize_texts(
        tokenizer, texts, None, max_length=info["max_length"], truncation=info["truncation"]
    )
    return feats, targets


def _merge_head_options(head: dict[str, Any], spec: TaskSpec) -> dict[str, Any]:
    opts = dict(spec.head_options)
    extra = {**head.get("extra", {}), **opts.pop("extra", {})}
    out = {**head, **opts, "extra": extra}
    if spec.pooling:
        out["pooling_type"] = spec.pooling
    return out


def load_table_task(
    name: str, spec: TaskSpec, tokenizer: Any, max_length: int, truncation: str, seed: int
) -> TaskData:
    """A sequence task from a table, read with bertkit's analyzer (columns, labels, recommended head)."""
    from bertkit.data.analyze import TASKS
    from bertkit.runconfig import RunConfig
    from bertkit.training.run import make_dataset, profile_for, select_rows

    rc = RunConfig.from_dict(
        {
            "data": {
                "task": spec.task if spec.task in TASKS else "auto",
                "text_column": spec.text_column,
                "text_columns": spec.text_columns,
                "label_column": spec.label_column,
                "id_column": spec.id_column,
                "max_train_samples": spec.max_train_samples,
            },
            "training": {"max_length": max_length, "truncation": truncation, "seed": seed},
        }
    )
    df = read_table(spec.train)
    profile = profile_for(df, rc, tokenizer, str(spec.train))
    train_df, valid_df = select_rows(df, rc, profile, has_valid=spec.valid is not None)
    if spec.valid:
        valid_df = read_table(spec.valid)
    head_type = spec.head or profile.recommended_head
    if profile.task == "regression":
        labels: list[str] = list(profile.label_columns)
        num_labels = max(1, len(labels))
    else:
        labels, num_labels = list(profile.label_names), len(profile.label_names)
    head: dict[str, Any] = {"head_type": head_type, "num_labels": num_labels, "label_names": labels}
    if not spec.head:
        head["pooling_type"] = profile.recommended_pooling
    head = _merge_head_options(head, spec)
    info = {"kind": "table", "profile": profile.to_dict(), "max_length": max_length, "truncation": truncation}
    data = TaskData(name, "table", head, info, weight=spec.weight)
    data.train = make_dataset(train_df, profile, tokenizer, rc)[0]
    if valid_df is not None and len(valid_df):
        valid_df = valid_df.iloc[shuffled_head(len(valid_df), spec.max_eval_samples, seed)]
        data.valid = make_dataset(valid_df, profile, tokenizer, rc)[0]
    if spec.test:
        test_df = read_table(spec.test)
        test_df = test_df.iloc[shuffled_head(len(test_df), spec.max_eval_samples, seed)]
        labelled = all(c in test_df.columns for c in profile.label_columns)
        data.test = make_dataset(test_df, profile, tokenizer, rc, require_labels=labelled)[0]
    return data


def ner_windows(docs: list[Any], tokenizer: Any, info: dict, labelled: bool) -> list[dict[str, Any]]:
    """Sub-token windows of NER documents (labels aligned to first sub-tokens)."""
    from bertkit.tasks.ner import align_labels

    label2id = {t: i for i, t in enumerate(info["label_names"])}
    return align_labels(
        tokenizer,
        [d.tokens for d in docs],
        [d.tags for d in docs] if labelled else None,
        label2id=label2id if labelled else None,
        max_length=info["max_length"],
        stride=info["stride"],
        scheme=info["scheme"],
    )


def load_ner_task(name: str, spec: TaskSpec, tokenizer: Any, max_length: int, seed: int) -> TaskData:
    """A token task from CoNLL / NER-JSONL files (word tags aligned to the first sub-token)."""
    from bertkit.tasks.ner import read_ner
    from bertkit.tasks.tags import label_list

    scheme = str(spec.head_options.get("extra", {}).get("scheme", "BIO")).upper()
    docs = [d for d in read_ner(spec.train, scheme) if d.tags is not None and d.tokens]
    if not docs:
        raise DataError(f"{spec.train}: no labelled sentences")
    order = shuffled_head(len(docs), None, seed)
    n_valid = 0 if spec.valid else max(1, int(round(0.1 * len(docs))))
    train_idx = order[n_valid:][: spec.max_train_samples or None]
    train_docs = [docs[i] for i in train_idx]
    valid_docs = [docs[i] for i in order[:n_valid]]
    if spec.valid:
        vd = [d for d in read_ner(spec.valid, scheme) if d.tokens]
        valid_docs = [vd[i] for i in shuffled_head(len(vd), spec.max_eval_samples, seed)]
    labels = label_list([d.tags for d in docs], scheme)
    info = {
        "kind": "ner",
        "label_names": labels,
        "scheme": scheme,
        "max_length": max_length,
        "stride": min(128, max(0, (max_length - 2) // 4)),
    }
    head = _merge_head_options(
        {
            "head_type": spec.head or "token_classification",
            "num_labels": len(labels),
            "label_names": labels,
            "pooling_type": "none",
        },
        spec,
    )
    data = TaskData(name, "ner", head, info, weight=spec.weight)
    data.train = RowsDataset(ner_windows(train_docs, tokenizer, info, True), True)
    for split, split_docs in (("valid", valid_docs), ("test", None)):
        if split == "test":
            if not spec.test:
                continue
            td = [d for d in read_ner(spec.test, scheme) if d.tokens]
            split_docs = [td[i] for i in np.sort(shuffled_head(len(td), spec.max_eval_samples, seed))]
        labelled = all(d.tags is not None for d in split_docs)
        windows = ner_windows(split_docs, tokenizer, info, labelled)
        setattr(data, split, RowsDataset(windows, labelled))
        data.extras[split] = (split_docs, windows)
    return data


def load_task(
    name: str, spec: TaskSpec, tokenizer: Any, max_length: int, truncation: str, seed: int
) -> TaskData:
    """Load one task of a multi-task config (tables, NER files or type strings)."""
    if spec.train is None:
        raise DataError(f"task '{name}' has no train file")
    if spec.type_dimensions is not None:
        return load_dimension_task(name, spec, tokenizer, max_length, truncation, seed)
    if spec.resolved_format() == "ner":
        return load_ner_task(name, spec, tokenizer, max_length, seed)
    return load_table_task(name, spec, tokenizer, max_length, truncation, seed)


# ------------------------------------------------------------------------------------ evaluate / predict
class TaskView(nn.Module):
    """A single-task view of a multi-task model (``forward(**batch)`` runs ``task``), for batched inference."""

    def __init__(self, model: nn.Module, task: str) -> None:
        super().__init__()
        self.model = model
        self.task = task
        self.train(model.training)  # predict_outputs restores this mode afterwards

    def forward(self, **batch: Any) -> dict[str, Any]:
        return self.model(task_name=self.task, **batch)


def run_outputs(
    model: nn.Module,
    task: str,
    dataset: Any,
    collator: Any,
    batch_size: int,
    device: Any = None,
    autocast: Any = None,
) -> dict[str, np.ndarray]:
    """Outputs of one task over a dataset, in dataset order (+ mean ``loss`` when labelled).

    ``device`` defaults to where the model's trainable parameters are (a 4-bit base may sit elsewhere).
    """
    if device is None:
        params = [p for p in model.parameters() if p.requires_grad] or list(model.parameters())
        device = params[0].device if params else "cpu"
    return predict_outputs(TaskView(model, task), dataset, collator, batch_size, device, autocast)


def ner_word_tags(outputs: dict[str, np.ndarray], docs: list[Any], windows: list[dict], info: dict) -> list:
    """Word-level tags per document from window predictions."""
    from bertkit.tasks.ner import merge_window_predictions

    return merge_window_predictions(
        windows,
        outputs["predictions"],
        [len(d.tokens) for d in docs],
        info["label_names"],
        scheme=info["scheme"],
    )


def task_metrics(model: Any, data: TaskData, split: str, outputs: dict[str, np.ndarray]) -> dict[str, float]:
    """Metrics of one task on a labelled split (word-level entity F1 for NER)."""
    from bertkit.metrics import entity_metrics

    dataset = getattr(data, split)
    metrics = {"loss": float(outputs["loss"])} if "loss" in outputs else {}
    if data.kind == "ner":
        docs, windows = data.extras[split]
        pred = ner_word_tags(outputs, docs, windows, data.info)
        res = entity_metrics([list(d.tags) for d in docs], pred)
        metrics.update({k: float(res[k]) for k in ("f1", "precision", "recall")})
        return metrics
    targets = np.asarray(dataset.targets)
    metrics.update(model.get_head(data.name).compute_metrics(outputs, targets))
    if data.kind == "dimensions":
        dims = data.info["dimensions"]
        metrics.update(dimension_metrics(outputs["probabilities"], targets, dims))
        if "train_targets" in data.extras:
            base = majority_baseline(data.extras["train_targets"], targets, dims)
            metrics.update({f"baseline_{k}": v for k, v in base.items() if isinstance(v, float)})
    return metrics


def primary_metric(model: Any, data: TaskData) -> tuple[str, str]:
    """(metric, "max" | "min") a task is early-stopped and compared on."""
    if data.kind == "ner":
        return "f1", "max"
    if data.kind == "dimensions":
        return "mean_dimension_accuracy", "max"
    return model.get_head(data.name).primary_metric()


def predict_texts(
    model: Any,
    texts: list[str],
    task: str,
    return_probabilities: bool = False,
    batch_size: int = 64,
    max_length: int | None = None,
) -> list[Any]:
    """Decoded predictions of ``task`` for raw strings (token tasks: whitespace-split words → tags).

    Dimension tasks give the composed type string (``"INTJ"``); with ``return_probabilities`` every item is
    ``{"prediction": ..., "probabilities": {...}}`` (dimension tasks: the probability of every letter).
    """
    info = model.metadata.get("tasks", {}).get(task, {})
    max_length = int(max_length or info.get("max_length", 128))
    tok = model.tokenizer
    head = model.get_head(task)
    device = next(model.parameters()).device
    if head.level == "token":
        from bertkit.tasks.ner import NerDocument

        docs = [NerDocument(t.split(), None, t, []) for t in texts]
        ner_info = {
            "label_names": head.label_names(),
            "scheme": info.get("scheme", "BIO"),
            "max_length": max_length,
            "stride": info.get("stride", 32),
        }
        windows = ner_windows(docs, tok, ner_info, labelled=False)
        out = run_outputs(
            model, task, RowsDataset(windows, False), TokenCollator(tok.pad_token_id or 0), batch_size, device
        )
        return ner_word_tags(out, docs, windows, ner_info)
    if info.get("mask_type_names"):
        texts = mask_type_names(list(texts), info["dimensions"], info.get("mask_token", "[MASK]"))
    feats = tokenize_texts(
        tok, list(texts), None, max_length=max_length, truncation=info.get("truncation", "head")
    )
    out = run_outputs(model, task, TokenizedDataset(feats), collator_for("table", tok), batch_size, device)
    dims = head.config.extra.get("dimensions")
    if dims:
        preds: list[Any] = compose_types(out["predictions"], dims)
        probs = [
            {
                **{a: float(1 - p[j]) for j, (a, _) in enumerate(dims)},
                **{b: float(p[j]) for j, (_, b) in enumerate(dims)},
            }
            for p in out["probabilities"]
        ]
    else:
        preds = list(head.format_predictions(out).get("prediction", out.get("predictions", [])))
        names = head.label_names()
        probs = [{n: float(v) for n, v in zip(names, np.atleast_1d(p))} for p in out.get("probabilities", [])]
    if not return_probabilities:
        return preds
    return [{"prediction": p, "probabilities": probs[i] if probs else None} for i, p in enumerate(preds)]
