"""Read a user's data file (CSV/TSV/TXT, Parquet, JSON Lines, JSON) into a DataFrame, loudly and clearly.

Every failure is a one-line :class:`~bertkit.errors.DataError` that names the file, the line when the
parser reports one, and the fix; no pandas/pyarrow traceback reaches the user.
"""

from __future__ import annotations

import bz2
import csv
import gzip
import io
import json
import lzma
import re
import warnings
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from bertkit.errors import DataError

__all__ = ["read_table", "SUPPORTED_SUFFIXES"]

_CSV_SUFFIXES = {".csv", ".tsv", ".tab", ".txt"}
_PARQUET_SUFFIXES = {".parquet", ".pq"}
_JSONL_SUFFIXES = {".jsonl", ".ndjson"}
_JSON_SUFFIXES = {".json"}
_COMPRESSION_SUFFIXES = {".gz", ".bz2", ".xz", ".zip"}
SUPPORTED_SUFFIXES = sorted(_CSV_SUFFIXES | _PARQUET_SUFFIXES | _JSONL_SUFFIXES | _JSON_SUFFIXES)
_SEPARATORS = [",", "\t", ";", "|"]
_SAMPLE_BYTES = 256 * 1024
_SEP_NAMES = {",": "comma", "\t": "tab", ";": "semicolon", "|": "pipe"}


def read_table(source: str | Path | pd.DataFrame) -> pd.DataFrame:
    """Read a data file (or copy a DataFrame) into a DataFrame with whitespace-stripped column names.

    Supported: ``.csv``/``.tsv``/``.tab``/``.txt`` (separator sniffed among comma, tab, semicolon and pipe;
    UTF-8 with or without BOM, UTF-16 with BOM, Latin-1 fallback with a warning), ``.parquet``/``.pq``,
    ``.jsonl``/``.ndjson`` (one JSON object per line), ``.json`` (a list of records or a dict of columns).
    ``.gz``/``.bz2``/``.xz``/``.zip`` compression of the text formats is handled. Files with another
    suffix are sniffed from their first bytes.

    Args:
        source: A path or a DataFrame (returned as a copy).

    Returns:
        The table; column names are strings stripped of surrounding whitespace.

    Raises:
        DataError: Missing/empty/binary/malformed file, duplicate column names, zero rows or zero columns.
    """
    if isinstance(source, pd.DataFrame):
        return _finish(source.copy(), "<DataFrame>")
    if not isinstance(source, str | Path):
        raise DataError(
            f"cannot read data from a {type(source).__name__}; pass a file path or a pandas DataFrame"
        )
    path = Path(source).expanduser()
    name = str(source)
    if not path.exists():
        raise DataError(f"data file {name} does not exist; check the path (cwd is {Path.cwd()})")
    if path.is_dir():
        raise DataError(f"{name} is a folder, not a data file; pass the CSV/Parquet/JSONL file inside it")
    if path.stat().st_size == 0:
        raise DataError(f"data file {name} is empty (0 bytes); re-export it with a header row and data rows")
    kind = _detect_kind(path)
    if kind == "parquet":
        df = _read_parquet(path, name)
    elif kind == "jsonl":
        df = _read_jsonl(path, name)
    elif kind == "json":
        df = _read_json(path, name)
    else:
        df = _read_csv(path, name)
    return _finish(df, name)


# --------------------------------------------------------------------------------------------- helpers
def _suffixes(path: Path) -> tuple[str, str | None]:
    """Return (format suffix, compression suffix or None), lower-cased."""
    sfx = [s.lower() for s in path.suffixes]
    if sfx and sfx[-1] in _COMPRESSION_SUFFIXES:
        return (sfx[-2] if len(sfx) > 1 else ""), sfx[-1]
    return (sfx[-1] if sfx else ""), None


def _open_binary(path: Path) -> io.BufferedIOBase:
    _, comp = _suffixes(path)
    if comp == ".gz":
        return gzip.open(path, "rb")  # type: ignore[return-value]
    if comp == ".bz2":
        return bz2.open(path, "rb")  # type: ignore[return-value]
    if comp == ".xz":
        return lzma.open(path, "rb")  # type: ignore[return-value]
    if comp == ".zip":
        zf = zipfile.ZipFile(path)
        members = [m for m in zf.namelist() if not m.endswith("/")]
        if len(members) != 1:
            raise DataError(f"{path} must contain exactly one file (found {len(members)}); unzip it first")
        return zf.open(members[0])  # type: ignore[return-value]
    return open(path, "rb")


def _head_bytes(path: Path, n: int = _SAMPLE_BYTES) -> bytes:
    try:
        with _open_binary(path) as fh:
            return fh.read(n)
    except DataError:
        raise
    except Exception as exc:  # corrupt gzip/zip...
        raise DataError(f"cannot open {path}: {_one_line(exc)}; check that the file is not corrupt") from None


def _detect_kind(path: Path) -> str:
    fmt, comp = _suffixes(path)
    if fmt in _PARQUET_SUFFIXES and comp is None:
        return "parquet"
    if fmt in _JSONL_SUFFIXES:
        return "jsonl"
    if fmt in _JSON_SUFFIXES:
        return "json"
    if fmt in _CSV_SUFFIXES:
        return "csv"
    head = _head_bytes(path, 4096)
    if head.startswith(b"PAR1"):
        return "parquet"
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n")
    if stripped.startswith(b"["):
        return "json"
    if stripped.startswith(b"{"):
        return "jsonl"
    return "csv"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:300] + "...") if len(text) > 300 else (text or type(exc).__name__)


def _looks_binary(raw: bytes) -> bool:
    if b"\x00" in raw:
        return True
    if not raw:
        return False
    control = sum(1 for b in raw if b < 9 or 13 < b < 32)
    return control / len(raw) > 0.01


def _choose_encoding(raw: bytes, name: str) -> str:
    """Pick the text encoding of a file from its first bytes (raises DataError for binary data)."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "utf-16"
    if _looks_binary(raw):
        raise DataError(
            f"{name} looks like binary data, not text; export it as UTF-8 CSV/TSV, Parquet or JSON Lines"
        )
    try:
        raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        if exc.start < len(raw) - 4 or len(raw) < _SAMPLE_BYTES:  # not just a character cut at the end
            warnings.warn(
                f"{name} is not valid UTF-8; reading it as Latin-1 (re-save it as UTF-8 to be sure)",
                stacklevel=3,
            )
            return "latin-1"
    return "utf-8-sig"


def _sniff_separator(text: str, prefer: str | None, truncated: bool) -> str:
    """Choose the separator whose split gives a multi-column header and the most consistent row widths."""
    best: tuple[float, int, int] | None = None
    best_sep = prefer or ","
    order = ([prefer] if prefer else []) + [s for s in _SEPARATORS if s != prefer]
    for rank, sep in enumerate(order):
        try:
            rows = [r for r in csv.reader(io.StringIO(text), delimiter=sep) if r][:500]
        except csv.Error:
            continue
        if truncated and len(rows) > 1:
            rows = rows[:-1]
        if not rows or len(rows[0]) < 2:
            continue
        width = len(rows[0])
        consistency = sum(len(r) == width for r in rows) / len(rows)
        score = (round(consistency, 2), -rank, width)
        if best is None or score > best:
            best, best_sep = score, sep
    return best_sep


def _read_csv(path: Path, name: str) -> pd.DataFrame:
    raw = _head_bytes(path)
    encoding = _choose_encoding(raw, name)
    truncated = len(raw) >= _SAMPLE_BYTES
    text = raw.decode(encoding, errors="ignore")
    if not text.strip():
        raise DataError(f"data file {name} contains only whitespace; add a header row and data rows")
    fmt, _ = _suffixes(path)
    prefer = "\t" if fmt in (".tsv", ".tab") else None
    sep = _sniff_separator(text, prefer, truncated)
    try:
        header = next(csv.reader(io.StringIO(text.lstrip("\ufeff")), delimiter=sep), [])
    except csv.Error:
        header = []
    dupes = sorted(c for c, n in Counter(h.strip() for h in header).items() if n > 1 and c)
    if dupes:
        raise DataError(
            f"{name} has duplicate column names {dupes} in its header; rename them so each column is unique"
        )
    try:
        df = pd.read_csv(path, sep=sep, encoding=encoding, low_memory=False, on_bad_lines="error")
    except pd.errors.EmptyDataError:
        raise DataError(f"data file {name} has no columns (empty or blank); add a header row") from None
    except pd.errors.ParserError as exc:
        msg = _one_line(exc)
        where = re.search(r"(line|row) (\d+)", msg)
        loc = f" at {where.group(1)} {where.group(2)}" if where else ""
        detail = re.sub(r"^Error tokenizing data\. C error: ", "", msg)
        raise DataError(
            f"{name}: malformed {_SEP_NAMES[sep]}-separated file{loc} ({detail}); quote fields containing "
            f"the separator, quotes or newlines, or fix that row"
        ) from None
    except UnicodeDecodeError as exc:
        raise DataError(
            f"{name} is not valid {encoding} text (byte {exc.start}); re-save it as UTF-8"
        ) from None
    except (ValueError, OSError, csv.Error, OverflowError, MemoryError) as exc:
        raise DataError(f"cannot read {name} as CSV: {_one_line(exc)}; check the file format") from None
    return df


def _read_parquet(path: Path, name: str) -> pd.DataFrame:
    with open(path, "rb") as fh:
        head = fh.read(4)
        fh.seek(-4 if path.stat().st_size >= 8 else 0, 2)
        tail = fh.read(4)
    if head != b"PAR1" or tail != b"PAR1":
        raise DataError(
            f"{name} is not a valid Parquet file (missing PAR1 magic bytes; truncated or another format); "
            f"re-export it with DataFrame.to_parquet or rename it to its real extension"
        )
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises many types (ArrowInvalid, OSError, ...)
        raise DataError(f"cannot read Parquet file {name}: {_one_line(exc)}; re-export it") from None


def _read_text(path: Path, name: str) -> str:
    raw = _head_bytes(path, -1)
    encoding = _choose_encoding(raw[:_SAMPLE_BYTES], name)
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError as exc:
        raise DataError(f"{name} is not valid UTF-8 text (byte {exc.start}); re-save it as UTF-8") from None


def _records_frame(records: list[dict], name: str) -> pd.DataFrame:
    try:
        return pd.DataFrame.from_records(records)
    except Exception as exc:
        raise DataError(f"cannot build a table from {name}: {_one_line(exc)}") from None


def _read_jsonl(path: Path, name: str, text: str | None = None) -> pd.DataFrame:
    text = _read_text(path, name) if text is None else text
    records: list[dict] = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line:
            continue
        try:
            obj = json.loads(line)
        except (json.JSONDecodeError, RecursionError) as exc:
            msg = exc.msg if isinstance(exc, json.JSONDecodeError) else "nested too deeply"
            raise DataError(
                f"{name}: line {lineno} is not valid JSON ({msg}); JSON Lines needs one complete object "
                f"per line"
            ) from None
        if not isinstance(obj, dict):
            raise DataError(
                f"{name}: line {lineno} is a JSON {type(obj).__name__}, not an object; write one "
                f'{{"column": value, ...}} object per line'
            )
        records.append(obj)
    if not records:
        raise DataError(f"{name} has no JSON records (only blank lines); add one JSON object per line")
    return _records_frame(records, name)


def _read_json(path: Path, name: str) -> pd.DataFrame:
    text = _read_text(path, name)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        if exc.msg == "Extra data":  # several top-level values: it is JSON Lines
            return _read_jsonl(path, name, text)
        raise DataError(
            f"{name}: invalid JSON at line {exc.lineno} column {exc.colno} ({exc.msg}); fix the file or "
            f"export it as JSON Lines"
        ) from None
    except RecursionError:
        raise DataError(f"{name}: JSON nested too deeply; export a flat list of records") from None
    if isinstance(obj, dict):
        lists = [v for v in obj.values() if isinstance(v, list)]
        if len(obj) == 1 and lists and all(isinstance(r, dict) for r in lists[0]):
            obj = lists[0]  # {"data": [records...]}
        elif obj and all(isinstance(v, list) for v in obj.values()):
            if len({len(v) for v in obj.values()}) != 1:
                raise DataError(f"{name}: the column lists have different lengths; make them equal")
            return _records_frame([dict(zip(obj, row)) for row in zip(*obj.values())], name)
    if not isinstance(obj, list) or not all(isinstance(r, dict) for r in obj):
        raise DataError(
            f"{name} must hold a JSON list of records like "
            f'[{{"text": "...", "label": 1}}, ...] (or a dict of equal-length column lists)'
        )
    return _records_frame(obj, name)


def _finish(df: pd.DataFrame, name: str) -> pd.DataFrame:
    """Strip column names and reject tables without columns, without rows or with duplicate names."""
    df.columns = [str(c).strip() for c in df.columns]
    dupes = sorted(c for c, n in Counter(df.columns).items() if n > 1)
    if dupes:
        raise DataError(
            f"{name} has duplicate column names {dupes} (after stripping whitespace); rename them"
        )
    if df.shape[1] == 0:
        raise DataError(f"{name} has no columns; add a header row such as 'text,label'")
    if len(df) == 0:
        raise DataError(
            f"{name} has a header ({', '.join(map(repr, df.columns[:10]))}) but zero data rows; "
            f"add rows or pick the right file"
        )
    return df


_SAMPLE = 5000


# ----------------------------------------------------------------------- column inspection (for analyze)
def name_tokens(name: str) -> list[str]:
    name = re.sub(r"([a-z])([A-Z])", r"\1_\2", name)
    return [t for t in re.split(r"[^a-z0-9]+", name.lower()) if t]


def is_id_like(name: str) -> bool:
    toks, low = name_tokens(name), name.lower()
    return bool(toks) and (
        toks[-1] == "id" or toks[0] == "id" or low in {"uid", "guid", "uuid", "qid", "pid", "idx", "index"}
    )


def is_unnamed(name: str) -> bool:
    return name.startswith("Unnamed:") or not name


def is_texty(s: pd.Series) -> bool:
    if pd.api.types.is_bool_dtype(s) or pd.api.types.is_numeric_dtype(s):
        return False
    if pd.api.types.is_string_dtype(s) and not pd.api.types.is_object_dtype(s):
        return True
    vals = s.dropna().head(_SAMPLE)
    return len(vals) > 0 and float(vals.map(lambda v: isinstance(v, str)).mean()) >= 0.5


def mean_length(s: pd.Series) -> float:
    vals = s.dropna().head(_SAMPLE)
    return float(vals.astype(str).str.len().mean()) if len(vals) else 0.0


def is_binary01(s: pd.Series) -> bool:
    if not (pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s)) or s.isna().any():
        return False
    try:
        return set(np.unique(s.to_numpy().astype(float)).tolist()) <= {0.0, 1.0}
    except (TypeError, ValueError):
        return False


def detect_delimiter(s: pd.Series) -> str | None:
    """Delimiter of a multilabel string column ("anger;joy"), or None when it does not look like one."""
    if not is_texty(s):
        return None
    vals = s.dropna().head(20000).astype(str)
    for delim in (";", "|", ","):
        if len(vals) == 0 or float(vals.str.contains(delim, regex=False).mean()) < 0.1:
            continue
        toks = [t.strip() for v in vals for t in v.split(delim) if t.strip()]
        counts = Counter(toks)
        if not toks or not 2 <= len(counts) <= 1000 or np.mean([len(t) for t in counts]) > 40:
            continue
        if sum(c for c in counts.values() if c >= 2) / len(toks) >= 0.8:
            return delim
    return None


def as_numeric(vals: pd.Series) -> np.ndarray | None:
    """Float values when every value is numeric (bools are not), else None."""
    if pd.api.types.is_bool_dtype(vals):
        return None
    if pd.api.types.is_numeric_dtype(vals):
        return vals.to_numpy(dtype=float)
    if vals.map(lambda v: isinstance(v, bool)).any():
        return None
    try:
        conv = pd.to_numeric(vals.map(lambda v: v.strip() if isinstance(v, str) else v), errors="coerce")
    except (TypeError, ValueError):  # lists/dicts from JSON
        return None
    return conv.to_numpy(dtype=float) if conv.notna().all() else None


def check_columns(df: pd.DataFrame, names: list[str], what: str) -> None:
    missing = [n for n in names if n not in df.columns]
    if missing:
        raise DataError(
            f"{what} {', '.join(map(repr, missing))} not found; available columns: "
            f"{', '.join(map(repr, df.columns))}"
        )


def guess_id_column(df: pd.DataFrame, notes: list[str], exclude: set) -> str | None:
    """An id-named column (``id``, ``*_id``) with unique values, or None; the reason goes to ``notes``."""
    names = [
        c for c in df.columns if c not in exclude and (c.lower() == "id" or name_tokens(c)[-1:] == ["id"])
    ]
    for c in sorted(names, key=lambda c: c.lower() != "id"):
        if df[c].notna().all() and df[c].astype(str).is_unique:
            notes.append(f"id column '{c}' (named like an id, all values unique)")
            return c
    return None


def guess_group_column(df: pd.DataFrame, notes: list[str], exclude: set) -> str | None:
    """A ``*query_id``/``qid``/``*group*`` column with repeated values (several rows each), or None."""
    pattern = re.compile(r"(query_?id|qid|group)", re.IGNORECASE)
    for c in df.columns:
        if c in exclude or not pattern.search(c) or df[c].isna().any():
            continue
        sizes = df[c].astype(str).value_counts()
        if 2 <= len(sizes) < len(df) and sizes.mean() >= 1.5 and sizes.max() >= 2:
            notes.append(
                f"group column '{c}' ({len(sizes):,} groups, {sizes.mean():.1f} rows each) → use grouped CV"
            )
            return c
    return None
