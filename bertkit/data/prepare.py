"""Turn a DataFrame plus a :class:`~bertkit.data.analyze.DatasetProfile` into texts and numeric targets."""

from __future__ import annotations

import math
import re
import string
import warnings
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from bertkit.data.readers import read_table
from bertkit.errors import ConfigError, DataError

if TYPE_CHECKING:
    from bertkit.data.analyze import DatasetProfile

__all__ = [
    "PreparedData",
    "prepare_frame",
    "serialize_rows",
    "label_to_str",
    "sort_label_names",
    "is_missing",
]


def label_to_str(value: Any) -> str:
    """Canonical string of a label value, so that 1, 1.0, "1" and " 1 " all compare equal ("1")."""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        f = float(value)
        return str(int(f)) if f.is_integer() else repr(f)
    text = str(value).strip()
    if re.fullmatch(r"[+-]?\d+\.0*", text):
        return str(int(float(text)))
    return text


def _sort_key(name: str) -> tuple[int, float, str]:
    try:
        num = float(name)
    except ValueError:
        return (1, 0.0, name)
    return (0, num, name) if math.isfinite(num) else (1, 0.0, name)


def sort_label_names(values: Any) -> list[str]:
    """Unique label strings, numbers first in numeric order ("2" < "10"), then strings alphabetically."""
    return sorted({label_to_str(v) for v in values}, key=_sort_key)


def is_missing(value: Any) -> bool:
    """True for None, NaN/NA and empty or whitespace-only strings."""
    if value is None or value is pd.NA or value is pd.NaT:
        return True
    if isinstance(value, float | np.floating):
        return bool(np.isnan(value))
    return isinstance(value, str) and not value.strip()


@dataclass
class PreparedData:
    """Model-ready texts and targets of the kept rows.

    Attributes:
        texts_a: First (or only) text of each kept row.
        texts_b: Second text for pair tasks, else None.
        targets: int64 [N] class indices into ``profile.label_names`` (binary/multiclass/ordinal),
            float32 [N, L] (multilabel), float32 [N] or [N, K] (regression); None without labels.
        ids: Values of the id column for the kept rows, or None when there is no id column.
        row_index: int64 [N] positions (0..len(df)-1) of the kept rows in the input frame.
    """

    texts_a: list[str]
    texts_b: list[str] | None
    targets: np.ndarray | None
    ids: list | None
    row_index: np.ndarray

    def __len__(self) -> int:
        return len(self.texts_a)


def _fmt_value(value: Any) -> str:
    if is_missing(value):
        return ""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    return str(value)


def _columns_error(df: pd.DataFrame, missing: list[str], what: str) -> DataError:
    return DataError(
        f"{what} {', '.join(map(repr, missing))} not found in the data; available columns: "
        f"{', '.join(map(repr, df.columns))}"
    )


def serialize_rows(
    df: pd.DataFrame, template: str, columns: list[str] | None = None, sep_token: str = "[SEP]"
) -> list[str]:
    """Serialise several columns of each row into one text (for tabular competition files).

    Args:
        df: The rows.
        template: ``"auto"`` writes ``"col1: value [SEP] col2: value ..."`` over ``columns`` (missing
            values become empty strings). Any other string is a ``str.format`` template such as
            ``"{title} [SEP] {body}"`` applied with ``format_map`` to each row; a literal ``[SEP]`` in it is
            replaced by ``sep_token``; missing values become ``""`` and integer-valued floats print as ints.
        columns: Columns for ``"auto"`` (default: all columns).
        sep_token: The tokenizer's separator token (e.g. ``"</s>"`` for RoBERTa).

    Returns:
        One string per row.

    Raises:
        DataError: A column named by ``columns`` or the template does not exist, or formatting fails.
    """
    if template == "auto":
        cols = list(df.columns) if columns is None else list(columns)
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise _columns_error(df, missing, "template column")
        parts = [[f"{c}: {_fmt_value(v)}" for v in df[c].tolist()] for c in cols]
        joiner = f" {sep_token} "
        return [joiner.join(row) for row in zip(*parts)] if parts else [""] * len(df)
    try:
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ConfigError(f"template {template!r} is not a valid format string ({exc})") from None
    roots = list(dict.fromkeys(f.split(".")[0].split("[")[0] for f in fields))
    if not roots or any(not r or r.isdigit() for r in roots):
        raise ConfigError(f"template {template!r} must name columns, like '{{title}} [SEP] {{body}}'")
    missing = [r for r in roots if r not in df.columns]
    if missing:
        raise _columns_error(df, missing, "template column")
    if sep_token != "[SEP]":
        template = template.replace("[SEP]", sep_token)
    values = [[_template_value(v) for v in df[r].tolist()] for r in roots]
    out: list[str] = []
    for row in zip(*values):
        try:
            out.append(template.format_map(dict(zip(roots, row))))
        except (ValueError, KeyError, IndexError, AttributeError, TypeError) as exc:
            raise DataError(
                f"template {template!r} failed on row {len(out)} ({type(exc).__name__}: {exc}); "
                f"remove format specs or fix the values"
            ) from None
    return out


def _template_value(value: Any) -> Any:
    if is_missing(value):
        return ""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return int(value)
    return value


def _unseen_error(counts: Counter, known: list[str]) -> DataError:
    shown = ", ".join(f"{k!r} ({v})" for k, v in counts.most_common(10))
    more = f" and {len(counts) - 10} more" if len(counts) > 10 else ""
    known_txt = ", ".join(known[:30]) + (" ..." if len(known) > 30 else "")
    return DataError(
        f"{sum(counts.values())} rows have labels unseen at training time: {shown}{more}; "
        f"known labels: {known_txt}"
    )


def prepare_frame(
    df: pd.DataFrame,
    profile: DatasetProfile,
    *,
    require_labels: bool = True,
    strict: bool = False,
    sep_token: str = "[SEP]",
) -> PreparedData:
    """Build texts and targets for training (``require_labels=True``) or prediction.

    Rows with an empty text (NaN/empty/whitespace; either side of a pair; all template columns) or a missing
    label are dropped with one ``UserWarning`` giving the counts, or rejected with ``DataError`` when
    ``strict``. For delimited multilabel columns an empty label means "no label" (kept, all zeros).

    Args:
        df: The data (a path is also accepted and read with ``read_table``).
        profile: The training profile (columns, task, label names, template).
        require_labels: False for prediction: no targets, no dropping for labels, label columns optional.
        strict: Raise instead of dropping rows.
        sep_token: Separator used by template serialisation.

    Returns:
        :class:`PreparedData`; ``row_index`` maps kept rows back to input positions.

    Raises:
        DataError: Missing columns, unusable rows in strict mode, no usable rows, labels unseen in
            ``profile.label_names``, non-numeric regression targets or non-0/1 multilabel columns.
    """
    df = read_table(df)
    n = len(df)
    missing_cols = [c for c in profile.text_columns if c not in df.columns]
    if missing_cols:
        raise _columns_error(df, missing_cols, "text column")
    if not profile.text_columns:
        raise ConfigError("profile has no text columns; re-run `bertkit analyze`")
    texts_b: list[str] | None = None
    if profile.template is not None:
        empty = np.logical_and.reduce([df[c].map(is_missing).to_numpy(bool) for c in profile.text_columns])
        texts_a = serialize_rows(df, profile.template, profile.text_columns, sep_token=sep_token)
    else:
        col_a = df[profile.text_columns[0]]
        empty = col_a.map(is_missing).to_numpy(bool)
        texts_a = [_fmt_text(v) for v in col_a.tolist()]
        if profile.is_pair:
            col_b = df[profile.text_columns[1]]
            empty = empty | col_b.map(is_missing).to_numpy(bool)
            texts_b = [_fmt_text(v) for v in col_b.tolist()]
    no_label = np.zeros(n, dtype=bool)
    if require_labels:
        missing_cols = [c for c in profile.label_columns if c not in df.columns]
        if missing_cols or not profile.label_columns:
            raise _columns_error(df, missing_cols or ["(none in profile)"], "label column")
        if not (profile.task == "multilabel" and profile.multilabel_delimiter):
            for c in profile.label_columns:
                no_label |= df[c].map(is_missing).to_numpy(bool)
    drop_text, drop_label = int(empty.sum()), int((no_label & ~empty).sum())
    keep = ~(empty | no_label)
    if drop_text or drop_label:
        parts = [f"{drop_text} empty text"] if drop_text else []
        parts += [f"{drop_label} missing label"] if drop_label else []
        reasons = ", ".join(parts)
        bad = drop_text + drop_label
        if strict:
            raise DataError(f"{bad} of {n} rows are unusable: {reasons}; fix or remove them (strict mode)")
        if not keep.any():
            raise DataError(f"no usable rows: all {n} rows have {reasons}; check the text/label columns")
        warnings.warn(
            f"dropped {bad} of {n} rows: {reasons}; use --strict to reject", UserWarning, stacklevel=2
        )
    row_index = np.flatnonzero(keep).astype(np.int64)  # [N]
    kept = df.iloc[row_index]
    texts_a = [texts_a[i] for i in row_index]
    if texts_b is not None:
        texts_b = [texts_b[i] for i in row_index]
    targets = _targets(kept, profile) if require_labels else None
    ids = None
    if profile.id_column is not None and profile.id_column in df.columns:
        ids = kept[profile.id_column].tolist()
    return PreparedData(texts_a=texts_a, texts_b=texts_b, targets=targets, ids=ids, row_index=row_index)


def _fmt_text(value: Any) -> str:
    return "" if is_missing(value) else str(value)


def _targets(df: pd.DataFrame, profile: DatasetProfile) -> np.ndarray:
    task = profile.task
    if task in ("binary", "multiclass", "ordinal"):
        index = {name: i for i, name in enumerate(profile.label_names)}
        labels = [label_to_str(v) for v in df[profile.label_columns[0]].tolist()]
        unseen = Counter(lab for lab in labels if lab not in index)
        if unseen:
            raise _unseen_error(unseen, profile.label_names)
        return np.array([index[lab] for lab in labels], dtype=np.int64)  # [N]
    if task == "multilabel":
        if profile.multilabel_delimiter:
            return _split_multilabel(df[profile.label_columns[0]], profile)
        out = np.zeros((len(df), len(profile.label_columns)), dtype=np.float32)  # [N, L]
        for j, c in enumerate(profile.label_columns):
            vals = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float)
            bad = ~np.isin(vals, [0.0, 1.0])
            if bad.any():
                example = df[c].iloc[int(np.flatnonzero(bad)[0])]
                raise DataError(
                    f"multilabel column '{c}' must hold 0/1 values; {int(bad.sum())} rows have others "
                    f"(e.g. {example!r})"
                )
            out[:, j] = vals
        return out
    if task == "regression":
        cols = []
        for c in profile.label_columns:
            vals = pd.to_numeric(df[c], errors="coerce")
            bad = vals.isna().to_numpy()
            if bad.any():
                example = df[c].iloc[int(np.flatnonzero(bad)[0])]
                raise DataError(
                    f"regression label column '{c}' has {int(bad.sum())} non-numeric values (e.g. {example!r}); "
                    f"fix or remove them"
                )
            cols.append(vals.to_numpy(dtype=np.float32))
        return cols[0] if len(cols) == 1 else np.stack(cols, axis=1)  # [N] or [N, K]
    raise ConfigError(f"profile has unknown task {task!r}")


def _split_multilabel(series: pd.Series, profile: DatasetProfile) -> np.ndarray:
    delim = profile.multilabel_delimiter or ";"
    index = {name: j for j, name in enumerate(profile.label_names)}
    out = np.zeros((len(series), len(index)), dtype=np.float32)  # [N, L]
    unseen: Counter = Counter()
    for i, value in enumerate(series.tolist()):
        if is_missing(value):
            continue
        for tok in str(value).split(delim):
            tok = tok.strip()
            if not tok:
                continue
            if tok in index:
                out[i, index[tok]] = 1.0
            else:
                unseen[tok] += 1
    if unseen:
        raise _unseen_error(unseen, profile.label_names)
    return out
