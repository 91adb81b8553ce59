"""Data layer of the pair tasks (similarity, contrastive, ranking): profile, checks, datasets and collator.

* :func:`analyze_pairs` finds the two (or three, with a hard negative) text columns, the label column, the
  query/group column of ranking data and their statistics, and proposes a head and a loss.
* :func:`prepare_pairs` checks a frame (empty second texts, missing or out-of-range scores, queries without a
  positive — always reported with counts) and tokenizes it: each text separately for bi-encoders, or
  ``[CLS] a [SEP] b [SEP]`` pairs with ``token_type_ids`` for the cross-encoder reranker.
* The datasets and the collator live in :mod:`bertkit.tasks.pair_datasets` (re-exported here).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bertkit.data.analyze import LABEL_NAMES, PAIR_NAMES
from bertkit.data.prepare import is_missing, label_to_str, sort_label_names
from bertkit.data.readers import check_columns, guess_group_column, guess_id_column, read_table
from bertkit.data.tokenize import tokenize_texts
from bertkit.errors import ConfigError, DataError
from bertkit.tasks.pair_datasets import GroupedDataset, PairCollator, PairDataset

PAIR_TASKS = ("similarity", "contrastive", "ranking")
#: heads each pair task accepts (the first is the default)
TASK_HEADS = {
    "similarity": ("text_similarity",),
    "contrastive": ("contrastive",),
    "ranking": ("ranking", "ranking_bi_encoder"),
}
CONTRASTIVE_NAMES = [
    ("anchor", "positive"),
    ("query", "positive"),
    ("sentence", "positive"),
    ("text", "positive"),
]
NEGATIVE_NAMES = ("negative", "hard_negative", "neg")


@dataclass
class PairProfile:
    """What :func:`analyze_pairs` found in a pair / ranking data file (saved in the model folder).

    ``group_column`` None with task ranking means rows are grouped by identical first texts.
    """

    source: str
    num_rows: int
    task: str
    text_columns: list[str]
    label_column: str | None = None
    group_column: str | None = None
    id_column: str | None = None
    label_kind: str = "none"  # "score" | "binary" | "class" | "none"
    label_names: list[str] = field(default_factory=list)
    score_range: list[float] | None = None
    empty_texts: dict[str, int] = field(default_factory=dict)
    group_stats: dict[str, float] = field(default_factory=dict)
    token_length_percentiles: dict[str, int] = field(default_factory=dict)
    recommended_max_length: int = 128
    recommended_head: str = ""
    recommended_loss: str = ""
    notes: list[str] = field(default_factory=list)

    @property
    def label_columns(self) -> list[str]:
        """The label column as a list (the sequence profile's spelling)."""
        return [self.label_column] if self.label_column else []

    def to_dict(self) -> dict[str, Any]:
        """JSON-able dict of every field."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PairProfile:
        """Rebuild from :meth:`to_dict` (unknown keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def summary(self) -> str:
        """Readable table for ``bertkit analyze``."""
        rows = [
            ("source", self.source),
            ("rows", f"{self.num_rows:,}"),
            ("task", f"{self.task} (text pairs)"),
            ("text columns", ", ".join(self.text_columns)),
            ("label column", f"{self.label_column or '-'} ({self.label_kind})"),
            ("group column", self.group_column or ("(first text)" if self.task == "ranking" else "-")),
            ("id column", self.id_column or "-"),
        ]
        if self.score_range:
            rows.append(("score range", f"{self.score_range[0]:g} .. {self.score_range[1]:g}"))
        if self.label_names:
            rows.append(("labels", ", ".join(self.label_names[:20])))
        if self.group_stats:
            rows.append(("groups", ", ".join(f"{k}={v:g}" for k, v in self.group_stats.items())))
        if any(self.empty_texts.values()):
            rows.append(("empty texts", ", ".join(f"{k}={v}" for k, v in self.empty_texts.items())))
        if self.token_length_percentiles:
            rows.append(
                ("token lengths", ", ".join(f"{k}={v}" for k, v in self.token_length_percentiles.items()))
            )
        rows += [
            ("max_length", str(self.recommended_max_length)),
            ("head", self.recommended_head),
            ("loss", self.recommended_loss),
        ]
        width = max(len(k) for k, _ in rows)
        lines = [f"{k.ljust(width)} : {v}" for k, v in rows]
        return "\n".join(lines + (["", "why:"] + [f"  - {n}" for n in self.notes] if self.notes else []))


def _lower(df: pd.DataFrame) -> dict[str, str]:
    return {str(c).lower(): c for c in df.columns}


def find_text_columns(df: pd.DataFrame, text_columns: list[str] | None = None) -> list[str]:
    """The two (or three, with a hard negative) text columns: given ones, or by conventional names."""
    if text_columns is not None:
        if len(text_columns) not in (2, 3):
            raise DataError(
                f"a pair task needs two text columns (a third for hard negatives), got {text_columns}; "
                "pass --text-columns first,second"
            )
        missing = [c for c in text_columns if c not in df.columns]
        if missing:
            which = "second text column" if missing == text_columns[1:2] else "text column(s)"
            raise DataError(
                f"{which} {', '.join(map(repr, missing))} not found in the data ({len(df):,} rows); "
                f"available columns: {', '.join(map(repr, df.columns))}"
            )
        return list(text_columns)
    low = _lower(df)
    for a, b in PAIR_NAMES + CONTRASTIVE_NAMES:
        if a in low and b in low:
            cols = [low[a], low[b]]
            neg = next((low[n] for n in NEGATIVE_NAMES if n in low), None)
            return cols + ([neg] if neg else [])
    raise DataError(
        f"no second text column: a pair task needs two text columns (e.g. text_a,text_b or anchor,positive); "
        f"pass --text-columns first,second; available columns: {', '.join(map(repr, df.columns))}"
    )


def _label_column(df: pd.DataFrame, label_column: str | None, exclude: set) -> str | None:
    if label_column is not None:
        check_columns(df, [label_column], "label column")
        return label_column
    low = _lower(df)
    return next((low[n] for n in LABEL_NAMES if n in low and low[n] not in exclude), None)


def _label_kind(values: pd.Series) -> tuple[str, list[str], list[float] | None]:
    vals = values[~values.map(is_missing)]
    num = pd.to_numeric(vals, errors="coerce")
    if len(vals) and num.notna().all():
        arr = num.to_numpy(dtype=float)
        lo, hi = float(arr.min()), float(arr.max())
        kind = "binary" if set(np.unique(arr)) <= {0.0, 1.0} else "score"
        return kind, sort_label_names(vals) if kind == "binary" else [], [lo, hi]
    return "class", sort_label_names(vals), None


def group_keys(df: pd.DataFrame, profile: PairProfile) -> pd.Series:
    """Query key of every row: the group column, or the first text when there is none."""
    col = profile.group_column or profile.text_columns[0]
    return df[col].astype(str)


def _group_stats(keys: pd.Series, rel: np.ndarray | None) -> dict[str, float]:
    sizes = keys.value_counts()
    stats = {
        "queries": float(len(sizes)),
        "min_size": float(sizes.min()),
        "mean_size": round(float(sizes.mean()), 2),
        "max_size": float(sizes.max()),
    }
    if rel is not None:
        pos = pd.Series(rel > 0).groupby(keys.to_numpy()).any()
        stats["without_positive"] = float((~pos).sum())
    return stats


def analyze_pairs(
    source: str | Path | pd.DataFrame,
    tokenizer: Any = None,
    *,
    task: str = "auto",
    text_columns: list[str] | None = None,
    label_column: str | None = None,
    group_column: str | None = None,
    id_column: str | None = None,
) -> PairProfile:
    """Profile a pair / ranking data file and propose a head and a loss.

    Task ``auto``: ranking when a query/group column groups several candidates, contrastive when there is no
    label column, similarity otherwise.
    """
    df = read_table(source)
    src = "<DataFrame>" if isinstance(source, pd.DataFrame) else str(source)
    notes: list[str] = []
    texts = find_text_columns(df, text_columns)
    notes.append(f"text columns {texts}" + (" (third = hard negatives)" if len(texts) == 3 else ""))
    label = _label_column(df, label_column, set(texts))
    if group_column is not None:
        check_columns(df, [group_column], "group column")
    group = group_column or guess_group_column(df, notes, exclude=set(texts) | {label})
    ident = id_column or guess_id_column(df, notes, exclude={group})
    if task == "auto":
        task = "ranking" if group and label else ("similarity" if label else "contrastive")
        why = {"ranking": "group column + labels", "similarity": "labelled pairs"}.get(
            task, "no label column"
        )
        notes.append(f"task '{task}' ({why})")
    if task not in PAIR_TASKS:
        raise ConfigError(f"task='{task}' is not a pair task; choose one of: {', '.join(PAIR_TASKS)}")
    if task in ("similarity", "ranking") and label is None:
        raise DataError(
            f"task '{task}' needs a label column (looked for {', '.join(LABEL_NAMES)}); pass --label-column; "
            f"available columns: {', '.join(map(repr, df.columns))}"
        )
    prof = PairProfile(
        src, len(df), task, texts, label, group if task == "ranking" else None, ident, notes=notes
    )
    prof.empty_texts = {c: int(df[c].map(is_missing).sum()) for c in texts}
    if label is not None:
        prof.label_kind, prof.label_names, prof.score_range = _label_kind(df[label])
    if task == "ranking":
        if prof.label_kind == "class":
            raise DataError(
                f"ranking labels must be numeric relevance (0 = not relevant); '{label}' holds text"
            )
        if group is None:
            notes.append(f"no query/group column: rows with the same '{texts[0]}' form one query")
        rel = pd.to_numeric(df[label], errors="coerce").fillna(0).to_numpy()
        prof.group_stats = _group_stats(group_keys(df, prof), rel)
        if prof.group_stats.get("without_positive"):
            notes.append(
                f"{int(prof.group_stats['without_positive']):,} of {int(prof.group_stats['queries']):,} queries "
                "have no positive candidate: they are left out of training and skipped by MRR/MAP"
            )
    _recommend(prof)
    _lengths(df, prof, tokenizer)
    return prof


def _recommend(prof: PairProfile) -> None:
    if prof.task == "ranking":
        prof.recommended_head, prof.recommended_loss = "ranking", "listwise"
        prof.notes.append(
            "ranking → cross-encoder reranker 'ranking' (listwise); bi-encoder retriever: "
            "--head ranking_bi_encoder; objectives: pointwise, ranknet, margin, listwise"
        )
    elif prof.task == "contrastive":
        prof.recommended_head, prof.recommended_loss = "contrastive", "infonce"
        prof.notes.append("positive pairs → 'contrastive' (in-batch negatives InfoNCE, temperature 0.05)")
    else:
        loss = "softmax" if prof.label_kind == "class" else "cosent"
        prof.recommended_head, prof.recommended_loss = "text_similarity", loss
        prof.notes.append(
            f"{prof.label_kind} labels → bi-encoder 'text_similarity' with loss '{loss}' "
            "(a cross-encoder: --task regression/binary with the sequence heads)"
        )


def _lengths(df: pd.DataFrame, prof: PairProfile, tokenizer: Any) -> None:
    if tokenizer is None:
        return
    sample = df.sample(n=min(len(df), 2000), random_state=0) if len(df) > 2000 else df
    a = [str(v) if not is_missing(v) else "" for v in sample[prof.text_columns[0]]]
    b = [str(v) if not is_missing(v) else "" for v in sample[prof.text_columns[1]]]
    if prof.recommended_head == "ranking":  # cross-encoder: the pair is one input
        lengths = [len(x) for x in tokenizer(a, b, verbose=False)["input_ids"]]
    else:
        enc_a, enc_b = tokenizer(a, verbose=False)["input_ids"], tokenizer(b, verbose=False)["input_ids"]
        lengths = [max(len(x), len(y)) for x, y in zip(enc_a, enc_b)]
    pct = np.percentile(lengths, [50, 90, 95, 99, 100]) if lengths else np.zeros(5)
    prof.token_length_percentiles = {
        k: int(math.ceil(v)) for k, v in zip(("p50", "p90", "p95", "p99", "max"), pct)
    }
    prof.recommended_max_length = int(min(max(32, math.ceil(pct[2] / 32) * 32), 512))


# ------------------------------------------------------------------------------------------------ preparation
@dataclass
class PreparedPairs:
    """Tokenized kept rows: ``dataset``, their input positions ``row_index`` [N] and query ``keys`` (ranking)."""

    dataset: PairDataset
    row_index: np.ndarray
    keys: list[str] | None
    report: dict[str, int]


def _texts(series: pd.Series) -> list[str]:
    return ["" if is_missing(v) else str(v) for v in series.tolist()]


def check_frame(
    df: pd.DataFrame,
    profile: PairProfile,
    require_labels: bool,
    strict: bool,
    declared_range: list[float] | None = None,
) -> tuple[np.ndarray, dict[str, int]]:
    """Rows to keep, and counts of every problem; bad inputs raise or warn naming the counts."""
    n, report = len(df), {}
    missing = [c for c in profile.text_columns[:2] if c not in df.columns]
    if missing:
        which = "second text column" if missing == profile.text_columns[1:2] else "text column(s)"
        raise DataError(
            f"{which} {', '.join(map(repr, missing))} missing from the data ({n:,} rows); "
            f"available columns: {', '.join(map(repr, df.columns))}"
        )
    keep = np.ones(n, dtype=bool)
    for name, col in zip(("first", "second"), profile.text_columns[:2]):
        empty = df[col].map(is_missing).to_numpy(bool)
        report[f"empty_{name}_text"] = int(empty.sum())
        keep &= ~empty
    if require_labels and profile.label_column:
        col = profile.label_column
        if col not in df.columns:
            raise DataError(
                f"label column '{col}' missing; available columns: {', '.join(map(repr, df.columns))}"
            )
        no_label = df[col].map(is_missing).to_numpy(bool)
        report["missing_label"] = int((no_label & keep).sum())
        keep &= ~no_label
        if profile.label_kind in ("score", "binary"):
            num = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
            bad = keep & np.isnan(num)
            if bad.any():
                raise DataError(
                    f"{int(bad.sum())} of {n:,} rows have non-numeric scores in '{col}' "
                    f"(e.g. {df[col][bad].iloc[0]!r}); fix or remove them"
                )
            low = keep & (num < 0) if profile.task == "ranking" else np.zeros(n, bool)
            if low.any():
                raise DataError(
                    f"{int(low.sum())} of {n:,} rows have negative relevance in '{col}'; use 0 for "
                    "'not relevant'"
                )
            if declared_range is not None:
                lo, hi = float(declared_range[0]), float(declared_range[1])
                out = keep & ((num < lo) | (num > hi))
                if out.any():
                    raise DataError(
                        f"{int(out.sum())} of {n:,} rows have scores outside the declared range "
                        f"[{lo:g}, {hi:g}] (min {np.nanmin(num):g}, max {np.nanmax(num):g}) in '{col}'"
                    )
    dropped = int((~keep).sum())
    if dropped:
        reasons = ", ".join(f"{v} {k.replace('_', ' ')}" for k, v in report.items() if v)
        if strict:
            raise DataError(
                f"{dropped} of {n:,} rows are unusable: {reasons}; fix or remove them (strict mode)"
            )
        if not keep.any():
            raise DataError(f"no usable rows: all {n:,} rows have {reasons}")
        warnings.warn(
            f"dropped {dropped} of {n:,} rows: {reasons}; use --strict to reject", UserWarning, stacklevel=3
        )
    return keep, report


def prepare_pairs(
    df: pd.DataFrame,
    profile: PairProfile,
    tokenizer: Any,
    *,
    max_length: int,
    cross_encoder: bool,
    require_labels: bool = True,
    strict: bool = False,
    declared_range: list[float] | None = None,
) -> PreparedPairs:
    """Check and tokenize a frame for the pair heads (rows keep their input positions in ``row_index``)."""
    keep, report = check_frame(df, profile, require_labels, strict, declared_range)
    if profile.task == "contrastive" and profile.label_kind == "binary" and require_labels:
        positive = pd.to_numeric(df[profile.label_column], errors="coerce").to_numpy() == 1
        report["non_positive_pairs"] = int((keep & ~positive).sum())  # not training pairs: skipped
        keep &= positive
    rows = np.flatnonzero(keep).astype(np.int64)  # [N]
    kept = df.iloc[rows]
    a, b = _texts(kept[profile.text_columns[0]]), _texts(kept[profile.text_columns[1]])
    if cross_encoder:
        parts = {"": tokenize_texts(tokenizer, a, b, max_length=max_length)}
    else:
        parts = {
            "": tokenize_texts(tokenizer, a, max_length=max_length),
            "_b": tokenize_texts(tokenizer, b, max_length=max_length),
        }
        neg_col = profile.text_columns[2] if len(profile.text_columns) > 2 else None
        if neg_col is not None and neg_col in kept.columns and profile.task == "contrastive":
            parts["_neg"] = tokenize_texts(tokenizer, _texts(kept[neg_col]), max_length=max_length)
    keys = group_keys(kept, profile).tolist() if profile.task == "ranking" else None
    targets = _targets(kept, profile, a) if require_labels or profile.task == "contrastive" else None
    group_ids = pd.factorize(pd.Series(keys))[0].astype(np.int64) if keys is not None else None
    return PreparedPairs(PairDataset(parts, targets, group_ids), rows, keys, report)


def _targets(kept: pd.DataFrame, profile: PairProfile, texts_a: list[str]) -> np.ndarray | None:
    if profile.task == "contrastive":  # an id per anchor: duplicates of one anchor are not its negatives
        return pd.factorize(pd.Series(texts_a))[0].astype(np.int64)
    col = kept[profile.label_column]
    if profile.label_kind == "class":
        index = {n: i for i, n in enumerate(profile.label_names)}
        labels = [label_to_str(v) for v in col]
        unseen = sorted({v for v in labels if v not in index})
        if unseen:
            raise DataError(
                f"{sum(v not in index for v in labels)} rows have labels unseen in training: {unseen[:10]}"
            )
        return np.array([index[v] for v in labels], dtype=np.int64)
    return pd.to_numeric(col).to_numpy(dtype=np.float32)  # [N]


def positive_groups(prepared: PreparedPairs) -> np.ndarray:
    """Mask [N] of rows whose query has at least one positive candidate."""
    ds = prepared.dataset
    assert ds.group_ids is not None and ds.targets is not None
    has_pos = pd.Series(np.asarray(ds.targets) > 0).groupby(ds.group_ids).transform("any")
    return has_pos.to_numpy(bool)


__all__ = [
    "PAIR_TASKS",
    "TASK_HEADS",
    "GroupedDataset",
    "PairCollator",
    "PairDataset",
    "PairProfile",
    "PreparedPairs",
    "analyze_pairs",
    "check_frame",
    "find_text_columns",
    "group_keys",
    "positive_groups",
    "prepare_pairs",
]
