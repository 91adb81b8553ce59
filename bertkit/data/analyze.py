"""Guess the task, columns and sensible defaults of a dataset (``bertkit analyze``).

Every guess is recorded in :attr:`DatasetProfile.notes` with its reason and can be overridden by a keyword
of :func:`analyze_dataset`; ``task=`` overrides every task heuristic.
"""

from __future__ import annotations

import dataclasses
import math
import re
import string
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bertkit.data.prepare import is_missing, label_to_str, serialize_rows, sort_label_names
from bertkit.data.readers import (
    as_numeric,
    check_columns,
    detect_delimiter,
    guess_group_column,
    guess_id_column,
    is_binary01,
    is_id_like,
    is_texty,
    is_unnamed,
    mean_length,
    name_tokens,
    read_table,
)
from bertkit.errors import ConfigError, DataError

__all__ = [
    "TASKS",
    "HEAD_FOR_TASK",
    "LOSS_FOR_TASK",
    "DatasetProfile",
    "analyze_dataset",
    "label_to_str",
    "sort_label_names",
]

TASKS = ("binary", "multiclass", "multilabel", "regression", "ordinal")
HEAD_FOR_TASK = {"binary": "binary_classification", "multiclass": "multiclass_classification",
                 "multilabel": "multilabel_classification", "regression": "regression",
                 "ordinal": "ordinal_regression"}  # fmt: skip
# loss_type names understood by the heads in bertkit.heads
LOSS_FOR_TASK = {
    "binary": "bce",
    "multiclass": "ce",
    "multilabel": "bce",
    "regression": "mse",
    "ordinal": "coral",
}
LABEL_NAMES = ("label", "labels", "target", "y", "class", "score", "rating", "stars", "targets", "sentiment")
TEXT_HINTS = {"text", "sentence", "review", "comment", "content", "body", "question", "excerpt", "document",
              "tweet", "message", "abstract", "essay", "description", "title", "passage", "query", "answer"}  # fmt: skip
PAIR_NAMES = [("text_a", "text_b"), ("sentence1", "sentence2"), ("question", "answer"),
              ("premise", "hypothesis"), ("query", "passage"), ("text1", "text2"), ("sentence_a", "sentence_b"),
              ("question1", "question2"), ("query", "document"), ("text_1", "text_2")]  # fmt: skip
ORDINAL_NAME_HINTS = ("star", "rating", "score", "grade", "level", "rank")
ORDINAL_SOURCE_HINTS = ("star", "rating", "review")
SHORT_TEXT_CHARS = 20


@dataclass
class DatasetProfile:
    """What :func:`analyze_dataset` found out about a dataset, and what it recommends.

    When ``template`` is set (``"auto"`` or a ``str.format`` template), ``text_columns`` lists the columns
    the template serialises into one text, and ``is_pair`` is False.
    """

    source: str
    num_rows: int
    task: str
    text_columns: list[str]
    label_columns: list[str]
    label_names: list[str] = field(default_factory=list)
    multilabel_delimiter: str | None = None
    id_column: str | None = None
    group_column: str | None = None
    is_pair: bool = False
    template: str | None = None
    label_distribution: dict[str, int] = field(default_factory=dict)
    imbalance_ratio: float = 1.0
    target_stats: dict = field(default_factory=dict)
    token_length_percentiles: dict[str, int] = field(default_factory=dict)
    recommended_max_length: int = 128
    recommended_head: str = ""
    recommended_pooling: str = "cls"
    recommended_loss: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def num_labels(self) -> int:
        """Number of classes (classification/ordinal), labels (multilabel) or targets (regression)."""
        return len(self.label_columns) if self.task == "regression" else len(self.label_names)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-serialisable dict of all fields."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DatasetProfile:
        """Rebuild a profile from :meth:`to_dict` output (unknown keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [
            n for n in ("source", "num_rows", "task", "text_columns", "label_columns") if n not in data
        ]
        if missing:
            raise ConfigError(f"dataset profile is missing keys {missing}; re-run `bertkit analyze`")
        if data["task"] not in TASKS:
            raise ConfigError(f"dataset profile has unknown task {data['task']!r}; valid: {', '.join(TASKS)}")
        return cls(**{k: v for k, v in data.items() if k in names})

    def summary(self) -> str:
        """A readable multi-line table for the CLI."""
        rows: list[tuple[str, str]] = [
            ("source", self.source),
            ("rows", f"{self.num_rows:,}"),
            ("task", self.task + (" (text pairs)" if self.is_pair else "")),
            ("text columns", ", ".join(self.text_columns)),
            ("label columns", _clip(", ".join(self.label_columns))),
        ]
        if self.template:
            rows.append(("template", self.template))
        if self.label_names:
            rows.append((f"labels ({len(self.label_names)})", _clip(", ".join(self.label_names))))
        if self.multilabel_delimiter:
            rows.append(("label delimiter", repr(self.multilabel_delimiter)))
        rows += [("id column", self.id_column or "-"), ("group column", self.group_column or "-")]
        if self.label_distribution:
            dist = ", ".join(f"{k}={v:,}" for k, v in self.label_distribution.items())
            rows += [("label counts", _clip(dist)), ("imbalance", f"{self.imbalance_ratio:.1f}:1")]
        if self.target_stats:
            rows.append(("target stats", _clip(_fmt_stats(self.target_stats))))
        if self.token_length_percentiles:
            rows.append(
                ("token lengths", ", ".join(f"{k}={v}" for k, v in self.token_length_percentiles.items()))
            )
        rows += [
            ("max_length", str(self.recommended_max_length)),
            ("head", self.recommended_head),
            ("pooling", self.recommended_pooling),
            ("loss", self.recommended_loss),
        ]
        width = max(len(k) for k, _ in rows)
        lines = [f"{k.ljust(width)} : {v}" for k, v in rows]
        if self.notes:
            lines += ["", "why:"] + [f"  - {n}" for n in self.notes]
        return "\n".join(lines)


def _clip(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _fmt_stats(stats: dict) -> str:
    if all(isinstance(v, dict) for v in stats.values()):
        return "; ".join(f"{k}: {_fmt_stats(v)}" for k, v in stats.items())
    return ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in stats.items())


# --------------------------------------------------------------------------------------------- analysis
def analyze_dataset(
    source: str | Path | pd.DataFrame,
    tokenizer: Any = None,
    *,
    text_column: str | None = None,
    text_columns: list[str] | None = None,
    label_column: str | None = None,
    label_columns: list[str] | None = None,
    id_column: str | None = None,
    group_column: str | None = None,
    task: str | None = None,
    template: str | None = None,
    multilabel_delimiter: str | None = None,
) -> DatasetProfile:
    """Profile a dataset: task, text/label/id/group columns, label names, lengths and recommendations.

    Args:
        source: Data file path or DataFrame (read with :func:`~bertkit.data.readers.read_table`).
        tokenizer: Optional Hugging Face tokenizer for token-length percentiles (≤ 2,000 sampled rows);
            without one, lengths are estimated as 1.3 tokens per whitespace word.
        text_column: Single text column override.
        text_columns: One, two (pair) or more (serialised with ``template="auto"``) text columns.
        label_column: Label column override.
        label_columns: Several label columns (0/1 columns → multilabel, numeric → multi-target regression).
        id_column: Id column override.
        group_column: Group column override (for grouped CV / ranking).
        task: One of :data:`TASKS`; overrides every task heuristic.
        template: ``"auto"`` or a ``str.format`` template such as ``"{title} [SEP] {body}"``.
        multilabel_delimiter: Delimiter of a multilabel string column (implies ``task="multilabel"``).

    Returns:
        The :class:`DatasetProfile`.

    Raises:
        DataError: Unreadable data, an override naming a missing column, no usable text or label column.
        ConfigError: Unknown task or contradictory overrides.
    """
    df = read_table(source)
    src = "<DataFrame>" if isinstance(source, pd.DataFrame) else str(source)
    if task is not None and task not in TASKS:
        raise ConfigError(f"unknown task {task!r}; valid tasks: {', '.join(TASKS)}")
    if text_column is not None and text_columns is not None:
        raise ConfigError("pass either text_column or text_columns, not both")
    if label_column is not None and label_columns is not None:
        raise ConfigError("pass either label_column or label_columns, not both")
    texts = [text_column] if text_column is not None else (list(text_columns) if text_columns else None)
    labels = [label_column] if label_column is not None else (list(label_columns) if label_columns else None)
    for names, what in ((texts, "text column"), (labels, "label column")):
        check_columns(df, names or [], what)
    check_columns(df, [c for c in (id_column, group_column) if c is not None], "id/group column")
    notes: list[str] = []
    prof = DatasetProfile(source=src, num_rows=len(df), task="binary", text_columns=[], label_columns=[])
    prof.id_column = id_column or guess_id_column(df, notes, exclude={group_column})
    prof.group_column = group_column or guess_group_column(df, notes, exclude={prof.id_column})

    # ---- labels (candidate first: text detection must not pick it)
    if multilabel_delimiter is not None and task not in (None, "multilabel"):
        raise ConfigError(f"multilabel_delimiter implies task='multilabel', but task={task!r} was given")
    lower = {c.lower(): c for c in df.columns}
    candidate = labels[0] if labels else next((lower[n] for n in LABEL_NAMES if n in lower), None)
    reserved = {prof.id_column, prof.group_column, candidate} | set(texts or [])
    binary_cols = [
        c
        for c in df.columns
        if c not in reserved and not is_id_like(c) and not is_unnamed(c) and is_binary01(df[c])
    ]
    if labels is None:
        if candidate is not None:
            delim = multilabel_delimiter or (
                detect_delimiter(df[candidate]) if task in (None, "multilabel") else None
            )
            if delim and len(binary_cols) >= 2:
                toks = {t.strip() for v in df[candidate].dropna().astype(str) for t in v.split(delim)}
                matched = [c for c in binary_cols if c in toks]
                labels = matched if len(matched) >= 2 else binary_cols
                notes.append(
                    f"'{candidate}' holds {delim!r}-delimited labels and {len(labels)} 0/1 columns exist "
                    f"→ multilabel from the 0/1 columns"
                )
            else:
                labels = [candidate]
                prof.multilabel_delimiter = delim
        elif len(binary_cols) >= 2:
            labels = binary_cols
            notes.append(f"no label column by name; {len(labels)} 0/1 columns → multilabel")
        else:
            raise DataError(
                f"no label column found (looked for {', '.join(LABEL_NAMES)} or several 0/1 columns); pass "
                f"label_column=...; available columns: {', '.join(map(repr, df.columns))}"
            )
    elif len(labels) == 1 and task in (None, "multilabel"):
        prof.multilabel_delimiter = multilabel_delimiter or detect_delimiter(df[labels[0]])
    prof.label_columns = labels

    # ---- text columns
    excluded = set(labels) | {candidate, prof.id_column, prof.group_column}
    _choose_text(df, prof, texts, template, excluded, notes)
    _infer_task(df, prof, task, notes)
    _label_stats(df, prof, notes)
    _lengths(df, prof, tokenizer, notes)
    prof.recommended_head, prof.recommended_loss = HEAD_FOR_TASK[prof.task], LOSS_FOR_TASK[prof.task]
    prof.recommended_pooling = "mean" if prof.task in ("regression", "ordinal") else "cls"
    notes.append(
        f"{prof.task} → head '{prof.recommended_head}', {prof.recommended_pooling} pooling, "
        f"loss '{prof.recommended_loss}'"
    )
    prof.notes = notes
    return prof


def _choose_text(
    df: pd.DataFrame,
    prof: DatasetProfile,
    texts: list[str] | None,
    template: str | None,
    excluded: set,
    notes: list[str],
) -> None:
    features = [
        c
        for c in df.columns
        if c not in excluded and not is_unnamed(c) and not is_id_like(c) and df[c].notna().any()
    ]
    if template is not None and template != "auto":
        fields = [
            re.split(r"[.\[!:]", f)[0] for _, f, _, _ in string.Formatter().parse(template) if f is not None
        ]
        if not fields or any(not f or f.isdigit() for f in fields):
            raise ConfigError(f"template {template!r} must name columns like '{{title}} [SEP] {{body}}'")
        check_columns(df, fields, "template column")
        prof.template, prof.text_columns = template, list(dict.fromkeys(fields))
        notes.append(f"user template over columns {prof.text_columns}")
        return
    if template == "auto" or (texts is not None and len(texts) > 2):
        prof.template, prof.text_columns = "auto", texts or features
        if not prof.text_columns:
            raise DataError("template 'auto' has no columns to serialise; pass text_columns=[...]")
        notes.append(f"serialising columns {prof.text_columns} as 'column: value [SEP] ...' (template auto)")
        return
    if texts is not None:
        prof.text_columns, prof.is_pair = texts, len(texts) == 2
        notes.append(f"text column(s) {texts} given")
        return
    cand = [
        c
        for c in features
        if is_texty(df[c])
        and not {"label", "labels", "target"} & set(name_tokens(c))
        and c.lower() not in LABEL_NAMES
    ]
    low = {c.lower(): c for c in cand}
    for a, b in PAIR_NAMES:
        if a in low and b in low:
            prof.text_columns, prof.is_pair = [low[a], low[b]], True
            notes.append(f"text pair columns '{low[a]}' + '{low[b]}' (pair names)")
            return
    lengths = {c: mean_length(df[c]) for c in cand}
    hinted = [c for c in cand if TEXT_HINTS & set(name_tokens(c))]
    best = max(hinted, key=lengths.__getitem__) if hinted else None
    reason = "name hint, longest"
    if best is None or lengths[best] < SHORT_TEXT_CHARS:
        best, reason = (max(cand, key=lengths.__getitem__) if cand else None), "longest mean length"
    if best is not None and (lengths[best] >= SHORT_TEXT_CHARS or len(features) < 2):
        prof.text_columns = [best]
        notes.append(f"text column '{best}' ({reason}: {lengths[best]:.0f} chars on average)")
        return
    if not features:
        raise DataError(
            f"no text column found besides the label/id columns; pass text_column=...; available columns: "
            f"{', '.join(map(repr, df.columns))}"
        )
    prof.template, prof.text_columns = "auto", features
    notes.append(
        f"no long text column (longest mean < {SHORT_TEXT_CHARS} chars) → template 'auto' serialising "
        f"{features} as 'column: value [SEP] ...'"
    )


def _infer_task(df: pd.DataFrame, prof: DatasetProfile, task: str | None, notes: list[str]) -> None:
    cols = prof.label_columns
    if len(cols) > 1:
        if task in ("binary", "multiclass", "ordinal"):
            raise ConfigError(f"task {task!r} needs one label column, got {cols}")
        if task in (None, "multilabel") and all(is_binary01(df[c]) for c in cols):
            prof.task, prof.label_names = "multilabel", list(cols)
            return
        bad = [c for c in cols if as_numeric(df[c].dropna()) is None]
        if task == "multilabel" or bad:
            raise DataError(
                f"label columns {bad or cols} are not all numeric 0/1 (multilabel) or numeric (regression); "
                f"fix the values or pass one label_column"
            )
        prof.task = "regression"
        notes.append(f"{len(cols)} numeric label columns → multi-target regression")
        return
    col = cols[0]
    series = df[col]
    vals = series[~series.map(is_missing)]
    if len(vals) == 0:
        raise DataError(f"label column '{col}' has no values; pick the labelled file or pass label_column=")
    if prof.multilabel_delimiter is not None or task == "multilabel":
        delim = prof.multilabel_delimiter or detect_delimiter(series) or ";"
        prof.task, prof.multilabel_delimiter = "multilabel", delim
        prof.label_names = sorted({t.strip() for v in vals.astype(str) for t in v.split(delim) if t.strip()})
        notes.append(f"label column '{col}' holds {delim!r}-delimited labels → multilabel")
        return
    num = as_numeric(vals)
    uniq = sort_label_names(vals)
    kind = "numeric" if num is not None else "string"
    if task == "regression" or (task is None and num is not None and not np.all(np.mod(num, 1) == 0)):
        if num is None:
            bad = next(v for v in vals if as_numeric(pd.Series([v], dtype=object)) is None)
            raise DataError(f"regression needs numeric labels; column '{col}' has values like {bad!r}")
        prof.task = "regression"
        why = "non-integer numeric values" if task is None else "numeric values and task 'regression' given"
        notes.append(f"label column '{col}' has {why} → regression")
        return
    if task is not None:
        if task == "binary" and len(uniq) > 2:
            raise DataError(
                f"task 'binary' but label column '{col}' has {len(uniq)} values: {_clip(str(uniq))}"
            )
        prof.task, prof.label_names = task, uniq
        notes.append(f"task {task!r} given; label column '{col}' has {len(uniq)} {kind} values")
        return
    if len(uniq) <= 2:
        prof.task, prof.label_names = "binary", uniq
        extra = " (only ONE class present: check the file)" if len(uniq) == 1 else ""
        notes.append(f"label column '{col}' has {len(uniq)} {kind} values → binary{extra}")
        return
    prof.label_names = uniq
    if num is not None:
        ints = sorted({int(v) for v in num})
        consecutive = ints[0] in (0, 1) and 3 <= len(ints) <= 10 and ints[-1] - ints[0] + 1 == len(ints)
        name_hint = any(h in col.lower() for h in ORDINAL_NAME_HINTS)
        tail = "/".join(Path(prof.source).parts[-2:]).lower()
        source_hint = any(h in tail for h in ORDINAL_SOURCE_HINTS) and len(vals) >= 1000
        if consecutive and (name_hint or source_hint):
            why = f"column name '{col}' hints at an order" if name_hint else "source name hints at ratings"
            prof.task = "ordinal"
            notes.append(
                f"label column '{col}' is the consecutive integer range {ints[0]}..{ints[-1]} and {why} → "
                f"ordinal (rule: 3-10 consecutive ints from 0/1 AND a name hint star/rating/score/grade/level "
                f"OR ≥1000 rows with star/rating/review in the file name; task= overrides)"
            )
            return
        if len(uniq) > 100:
            prof.task, prof.label_names = "regression", []
            notes.append(f"label column '{col}' has {len(uniq)} distinct integers → regression")
            return
        if consecutive:
            notes.append(
                f"integer range {ints[0]}..{ints[-1]} without an order hint → multiclass (pass task='ordinal' "
                f"if the classes are ordered)"
            )
    prof.task = "multiclass"
    notes.append(f"label column '{col}' has {len(uniq)} {kind} values → multiclass")
    if len(uniq) > 100 and len(uniq) > 0.5 * len(vals):
        notes.append(
            f"WARNING: {len(uniq)} distinct labels in {len(vals)} rows; is '{col}' really the label?"
        )


def _label_stats(df: pd.DataFrame, prof: DatasetProfile, notes: list[str]) -> None:
    if prof.task == "multilabel":
        if prof.multilabel_delimiter:
            counts = Counter(
                t.strip()
                for v in df[prof.label_columns[0]].dropna().astype(str)
                for t in v.split(prof.multilabel_delimiter)
                if t.strip()
            )
            dist = {n: int(counts.get(n, 0)) for n in prof.label_names}
        else:
            dist = {c: int(df[c].astype(float).sum()) for c in prof.label_columns}
    elif prof.task == "regression":
        stats = {}
        for c in prof.label_columns:
            v = pd.to_numeric(df[c], errors="coerce").dropna().to_numpy(dtype=float)
            stats[c] = _describe(v)
            if not np.isfinite(v).all():
                notes.append(f"WARNING: label column '{c}' contains infinite values")
        prof.target_stats = stats[prof.label_columns[0]] if len(stats) == 1 else stats
        return
    else:
        counts = Counter(label_to_str(v) for v in df[prof.label_columns[0]] if not is_missing(v))
        dist = {n: int(counts.get(n, 0)) for n in prof.label_names}
        if prof.task == "ordinal":
            num = pd.to_numeric(df[prof.label_columns[0]], errors="coerce").dropna().to_numpy(dtype=float)
            prof.target_stats = _describe(num) if len(num) else {}
    prof.label_distribution = dist
    positive = [v for v in dist.values() if v > 0]
    if positive:
        prof.imbalance_ratio = float(max(positive)) / float(min(positive))
    if len(positive) < len(dist):
        empty = [k for k, v in dist.items() if v == 0]
        notes.append(f"WARNING: labels {_clip(str(empty))} never occur (imbalance ignores them)")
    if prof.imbalance_ratio >= 10:
        notes.append(f"imbalance {prof.imbalance_ratio:.1f}:1 → consider class weights or stratified CV")


def _describe(v: np.ndarray) -> dict[str, float]:
    v = np.nan_to_num(v[~np.isnan(v)])  # [N]; inf → large finite, so the JSON stays valid
    if not len(v):
        return {}
    return {"mean": float(v.mean()), "std": float(v.std()), "min": float(v.min()), "max": float(v.max())}


def _lengths(df: pd.DataFrame, prof: DatasetProfile, tokenizer: Any, notes: list[str]) -> None:
    sample = df.sample(n=min(len(df), 2000), random_state=0) if len(df) > 2000 else df
    if prof.template is not None:
        sep = getattr(tokenizer, "sep_token", None) or "[SEP]"
        cols_a, texts_b = serialize_rows(sample, prof.template, prof.text_columns, sep_token=sep), None
    else:
        cols_a = [_as_text(v) for v in sample[prof.text_columns[0]]]
        texts_b = [_as_text(v) for v in sample[prof.text_columns[1]]] if prof.is_pair else None
    cap = 512
    if tokenizer is not None:
        enc = tokenizer(cols_a, texts_b, truncation=False, padding=False, verbose=False)
        lengths = np.array([len(x) for x in enc["input_ids"]], dtype=float)
        model_max = getattr(tokenizer, "model_max_length", 512) or 512
        cap = int(min(512, model_max)) if model_max >= 32 else 512
        how = "tokenizer"
    else:
        words = [len(t.split()) for t in cols_a]
        if texts_b is not None:
            words = [w + len(t.split()) + 1 for w, t in zip(words, texts_b)]
        lengths = np.ceil(np.array(words, dtype=float) * 1.3) + 2
        how = "estimated as 1.3 tokens per word (no tokenizer given)"
    pct = np.percentile(lengths, [50, 90, 95, 99, 100]) if len(lengths) else np.zeros(5)
    prof.token_length_percentiles = {
        k: int(math.ceil(v)) for k, v in zip(("p50", "p90", "p95", "p99", "max"), pct)
    }
    p95 = prof.token_length_percentiles["p95"]
    prof.recommended_max_length = int(min(max(32, math.ceil(p95 / 32) * 32), cap))
    notes.append(
        f"token lengths on {len(lengths):,} rows ({how}): p95={p95} → max_length {prof.recommended_max_length}"
    )
    if prof.token_length_percentiles["p90"] > 512:
        notes.append("many texts exceed 512 tokens → consider truncation='head_tail'")


def _as_text(value: Any) -> str:
    return "" if is_missing(value) else str(value)
