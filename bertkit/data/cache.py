"""On-disk token cache: tokenize a data file once, in parallel, and read it lazily (memory-mapped) after.

A cache entry is a folder ``cache_dir/<key>/`` holding flat binary arrays::

    input_ids.int32       all token ids, one text after the other            [total_tokens]
    token_type_ids.int8   the same layout (when the tokenizer returns them)  [total_tokens]
    offsets.int64         start of text i is offsets[i], end offsets[i + 1]  [N + 1]
    lengths.int32         tokens per text (length-bucketed sampling)         [N]
    row_index.int64       position of each kept row in the data file         [N]
    targets.bin           targets (dtype and shape in meta.json), when labelled
    meta.json             key parts, counts, dtypes; written last (its presence marks a complete entry)

The key is the sha256 of the data file's bytes (or of the texts and targets for in-memory data), the
tokenizer's fingerprint (class, name, full vocabulary/normalizer/pre-tokenizer state), ``max_length``,
``truncation`` and the column/label settings, so any change builds a new entry and a rerun hits the old one.
Large CSVs are read with pandas ``chunksize`` and tokenized by a process pool while the main process
appends finished chunks, so the memory needed stays that of a few chunks whatever the row count.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import warnings
from collections import deque
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor, Future, ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from torch.utils.data import Dataset

from bertkit.errors import DataError

__all__ = [
    "CACHE_VERSION",
    "CachedTokenDataset",
    "TokenSubset",
    "cache_key",
    "cached_dataset_from_file",
    "cached_dataset_from_texts",
    "file_sha256",
    "tokenizer_fingerprint",
]

CACHE_VERSION = 1
DEFAULT_CHUNKSIZE = 20_000
_META = "meta.json"


# ---------------------------------------------------------------------------------------------- keys
def file_sha256(path: str | os.PathLike[str], block: int = 1 << 20) -> str:
    """sha256 of a file's bytes, read in ``block``-sized pieces."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for piece in iter(lambda: fh.read(block), b""):
            digest.update(piece)
    return digest.hexdigest()


def tokenizer_fingerprint(tokenizer: Any) -> str:
    """Hash of everything that changes token ids: class, name, vocabulary, normalizer, added tokens."""
    digest = hashlib.sha256(type(tokenizer).__name__.encode())
    digest.update(str(getattr(tokenizer, "name_or_path", "")).encode())
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if (
        backend is not None
    ):  # truncation/padding are per-call settings the tokenizer leaves behind: not identity
        state = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
        digest.update(json.dumps(state, sort_keys=True).encode())
    else:
        digest.update(json.dumps(sorted(tokenizer.get_vocab().items())).encode())
    digest.update(json.dumps(sorted(map(str, getattr(tokenizer, "all_special_tokens", [])))).encode())
    return digest.hexdigest()[:16]


def cache_key(
    data_hash: str, tokenizer: Any, max_length: int, truncation: str, extra: dict[str, Any] | None = None
) -> str:
    """The cache entry name for data + tokenizer + tokenization settings (+ column/label settings)."""
    parts = {
        "v": CACHE_VERSION,
        "data": data_hash,
        "tokenizer": tokenizer_fingerprint(tokenizer),
        "max_length": int(max_length),
        "truncation": truncation,
        "extra": extra or {},
    }
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


# ------------------------------------------------------------------------------------------- dataset
class CachedTokenDataset(Dataset):
    """A cache entry read lazily: ``__getitem__`` slices memory-mapped arrays; nothing is loaded up front.

    Compatible with :class:`~bertkit.data.tokenize.TokenizedDataset` where the Trainer and the Predictor
    need it: ``len``, ``lengths``, ``targets``, and items ``{"input_ids", "token_type_ids"?, "labels"?}``.

    Args:
        folder: a complete cache entry.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        meta_path = self.folder / _META
        if not meta_path.is_file():
            raise DataError(
                f"{self.folder} is not a complete token cache entry (no {_META}); delete it and rebuild"
            )
        self.meta: dict[str, Any] = json.loads(meta_path.read_text(encoding="utf-8"))
        n = int(self.meta["rows"])
        self.offsets = _memmap(self.folder / "offsets.int64", np.int64, (n + 1,))
        self.lengths = _memmap(self.folder / "lengths.int32", np.int32, (n,))
        self.row_index = _memmap(self.folder / "row_index.int64", np.int64, (n,))
        total = int(self.meta["tokens"])
        self.input_ids = _memmap(self.folder / "input_ids.int32", np.int32, (total,))
        self.token_type_ids = (
            _memmap(self.folder / "token_type_ids.int8", np.int8, (total,))
            if self.meta["token_type_ids"]
            else None
        )
        self.targets: np.ndarray | None = None
        if self.meta.get("targets"):
            spec = self.meta["targets"]
            self.targets = _memmap(self.folder / "targets.bin", np.dtype(spec["dtype"]), tuple(spec["shape"]))

    def __len__(self) -> int:
        return int(self.meta["rows"])

    @property
    def key(self) -> str:
        return self.folder.name

    def __getitem__(self, index: int) -> dict[str, Any]:
        start, end = int(self.offsets[index]), int(self.offsets[index + 1])
        item: dict[str, Any] = {"input_ids": np.asarray(self.input_ids[start:end])}
        if self.token_type_ids is not None:
            item["token_type_ids"] = np.asarray(self.token_type_ids[start:end])
        if self.targets is not None:
            item["labels"] = np.asarray(self.targets[index])
        return item

    def subset(self, indices: Sequence[int] | np.ndarray) -> TokenSubset:
        """A view on some rows (e.g. a train/validation split) without copying tokens."""
        return TokenSubset(self, indices)

    def features(self, index: int) -> dict[str, list[int]]:
        """Token lists of one text (``TokenizedDataset.features`` layout, for debugging and tests)."""
        return {k: v.tolist() for k, v in self[index].items() if k != "labels"}


class TokenSubset(Dataset):
    """Rows ``indices`` of a :class:`CachedTokenDataset` (lengths and targets gathered, tokens still lazy)."""

    def __init__(self, base: CachedTokenDataset, indices: Sequence[int] | np.ndarray) -> None:
        self.base = base
        self.indices = np.asarray(indices, dtype=np.int64)
        self.lengths = np.asarray(base.lengths[self.indices])
        self.targets = None if base.targets is None else np.asarray(base.targets[self.indices])

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return self.base[int(self.indices[index])]


def _memmap(path: Path, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
    if int(np.prod(shape)) == 0:  # numpy cannot map an empty file
        return np.zeros(shape, dtype=dtype)
    return np.memmap(path, dtype=dtype, mode="r", shape=shape)


# ------------------------------------------------------------------------------------------- writing
_WORKER_TOKENIZER: Any = None


def _init_worker(tokenizer: Any) -> None:
    global _WORKER_TOKENIZER
    _WORKER_TOKENIZER = tokenizer


def _tokenize_chunk(
    texts_a: list[str], texts_b: list[str] | None, max_length: int, truncation: str, tokenizer: Any = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(flat int32 ids, int32 lengths, flat int8 type ids or None) of one chunk of texts."""
    from bertkit.data.tokenize import tokenize_texts

    tok = tokenizer if tokenizer is not None else _WORKER_TOKENIZER
    features = tokenize_texts(
        tok, texts_a, texts_b, max_length=max_length, truncation=truncation if texts_b is None else "head"
    )
    ids = features["input_ids"]
    lengths = np.fromiter((len(x) for x in ids), dtype=np.int32, count=len(ids))
    flat = np.fromiter((t for x in ids for t in x), dtype=np.int32, count=int(lengths.sum()))
    types = None
    if "token_type_ids" in features:
        types = np.fromiter(
            (t for x in features["token_type_ids"] for t in x), dtype=np.int8, count=len(flat)
        )
    return flat, lengths, types


_FLAT_FILES = ("input_ids.int32", "token_type_ids.int8", "lengths.int32", "row_index.int64", "targets.bin")


class _Writer:
    """Appends tokenized chunks to the flat files of a new cache entry (a temporary folder)."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.files = {name: open(folder / name, "wb") for name in _FLAT_FILES}  # noqa: SIM115 (see close)
        self.rows = 0
        self.tokens = 0
        self.has_types: bool | None = None
        self.target_spec: tuple[str, tuple[int, ...]] | None = None
        self.offsets_file = open(folder / "offsets.int64", "wb")  # noqa: SIM115
        np.zeros(1, np.int64).tofile(self.offsets_file)

    def append(
        self,
        flat: np.ndarray,
        lengths: np.ndarray,
        types: np.ndarray | None,
        targets: np.ndarray | None,
        row_index: np.ndarray,
    ) -> None:
        flat.astype(np.int32, copy=False).tofile(self.files["input_ids.int32"])
        self.has_types = types is not None if self.has_types is None else self.has_types
        if self.has_types and types is not None:
            types.astype(np.int8, copy=False).tofile(self.files["token_type_ids.int8"])
        lengths.astype(np.int32, copy=False).tofile(self.files["lengths.int32"])
        (self.tokens + np.cumsum(lengths, dtype=np.int64)).tofile(self.offsets_file)
        np.asarray(row_index, dtype=np.int64).tofile(self.files["row_index.int64"])
        if targets is not None:
            arr = np.ascontiguousarray(targets)
            if arr.dtype.kind == "f":
                arr = arr.astype(np.float32, copy=False)
            elif arr.dtype.kind in "iub":
                arr = arr.astype(np.int64, copy=False)
            if self.target_spec is None:
                self.target_spec = (arr.dtype.str, tuple(arr.shape[1:]))
            elif self.target_spec != (arr.dtype.str, tuple(arr.shape[1:])):
                raise DataError("targets change dtype or width between chunks; check the label column")
            arr.tofile(self.files["targets.bin"])
        self.rows += len(lengths)
        self.tokens += int(lengths.sum())

    def close(self) -> None:
        for fh in (*self.files.values(), self.offsets_file):
            fh.close()

    def finish(self, meta: dict[str, Any]) -> None:
        self.close()
        targets = None
        if self.target_spec is not None:
            targets = {"dtype": self.target_spec[0], "shape": [self.rows, *self.target_spec[1]]}
        meta = {
            **meta,
            "version": CACHE_VERSION,
            "rows": self.rows,
            "tokens": self.tokens,
            "token_type_ids": bool(self.has_types),
            "targets": targets,
        }
        (self.folder / _META).write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")


Chunk = tuple[list[str], list[str] | None, np.ndarray | None, np.ndarray]


def build_cache(
    chunks: Iterator[Chunk],
    tokenizer: Any,
    folder: str | os.PathLike[str],
    max_length: int,
    truncation: str = "head",
    num_workers: int | None = None,
    meta: dict[str, Any] | None = None,
) -> CachedTokenDataset:
    """Tokenize ``(texts_a, texts_b, targets, row_index)`` chunks into the cache entry ``folder``.

    Chunks are tokenized by ``num_workers`` processes (default: the usable cores; 1 tokenizes in-process),
    at most ``num_workers + 1`` in flight, and written in order; the entry appears atomically when complete.
    """
    target = Path(folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    workers = _usable_cores() if num_workers is None else max(1, int(num_workers))
    pool: Executor | None = None
    writer = _Writer(tmp)
    try:
        if workers > 1:
            import multiprocessing as mp

            method = "fork" if "fork" in mp.get_all_start_methods() else "spawn"
            pool = ProcessPoolExecutor(
                workers, mp_context=mp.get_context(method), initializer=_init_worker, initargs=(tokenizer,)
            )
        pending: deque[tuple[Future[Any] | tuple[Any, ...], Any, np.ndarray]] = deque()
        for texts_a, texts_b, targets, rows in chunks:
            if pool is not None:
                pending.append(
                    (pool.submit(_tokenize_chunk, texts_a, texts_b, max_length, truncation), targets, rows)
                )
            else:
                pending.append(
                    (_tokenize_chunk(texts_a, texts_b, max_length, truncation, tokenizer), targets, rows)
                )
            while len(pending) > workers:
                _drain_one(pending, writer)
        while pending:
            _drain_one(pending, writer)
        writer.finish({**(meta or {}), "max_length": max_length, "truncation": truncation})
        try:
            os.replace(tmp, target)
        except (
            OSError
        ):  # another process (another DDP rank or node) finished the same entry first: keep theirs
            if not (target / _META).is_file():
                raise
    finally:
        writer.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return CachedTokenDataset(target)


def _drain_one(pending: deque[Any], writer: _Writer) -> None:
    job, targets, rows = pending.popleft()
    flat, lengths, types = job.result() if isinstance(job, Future) else job
    writer.append(flat, lengths, types, targets, rows)


def _usable_cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return max(1, os.cpu_count() or 1)


# ------------------------------------------------------------------------------------------- sources
def cached_dataset_from_texts(
    texts_a: Sequence[str],
    texts_b: Sequence[str] | None,
    targets: np.ndarray | None,
    tokenizer: Any,
    cache_dir: str | os.PathLike[str],
    max_length: int = 128,
    truncation: str = "head",
    num_workers: int | None = None,
    chunksize: int = DEFAULT_CHUNKSIZE,
) -> CachedTokenDataset:
    """Token cache of in-memory texts (keyed by the texts' and targets' hash); a rerun hits the cache."""
    digest = hashlib.sha256()
    for seq in (texts_a, texts_b or ()):
        for t in seq:
            digest.update(str(t).encode("utf-8", "surrogatepass") + b"\x00")
        digest.update(b"\x01")
    if targets is not None:
        arr = np.ascontiguousarray(targets)
        digest.update(f"{arr.dtype.str}{arr.shape}".encode() + arr.tobytes())
    key = cache_key(digest.hexdigest(), tokenizer, max_length, truncation, {"pairs": texts_b is not None})
    folder = Path(cache_dir) / key
    if (folder / _META).is_file():
        return CachedTokenDataset(folder)
    n = len(texts_a)
    if n < 2 * chunksize:
        num_workers = 1  # a process pool costs more than it saves on small data

    def chunks() -> Iterator[Chunk]:
        for s in range(0, n, chunksize):
            sl = slice(s, min(n, s + chunksize))
            yield (
                list(texts_a[sl]),
                None if texts_b is None else list(texts_b[sl]),
                None if targets is None else np.asarray(targets[sl]),
                np.arange(sl.start, sl.stop),
            )

    return build_cache(
        chunks(),
        tokenizer,
        folder,
        max_length,
        truncation,
        num_workers,
        meta={"source": "<texts>", "texts": n},
    )


def cached_dataset_from_file(
    path: str | os.PathLike[str],
    profile: Any,
    tokenizer: Any,
    cache_dir: str | os.PathLike[str],
    max_length: int = 128,
    truncation: str = "head",
    require_labels: bool = True,
    strict: bool = False,
    chunksize: int = DEFAULT_CHUNKSIZE,
    num_workers: int | None = None,
) -> CachedTokenDataset:
    """Token cache of a data file prepared with ``profile`` (columns, template, labels), streamed in chunks.

    CSV/TSV files are read ``chunksize`` rows at a time (other formats are read whole, then chunked). Rows
    that ``prepare_frame`` drops (empty text, missing label) are left out; ``row_index`` keeps file positions.
    """
    from bertkit.data.prepare import prepare_frame

    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist")
    spec = {
        k: getattr(profile, k, None)
        for k in ("task", "text_columns", "label_columns", "label_names", "template", "multilabel_delimiter")
    }
    extra = {"profile": spec, "require_labels": require_labels, "strict": strict}
    key = cache_key(file_sha256(path), tokenizer, max_length, truncation, extra)
    folder = Path(cache_dir) / key
    if (folder / _META).is_file():
        return CachedTokenDataset(folder)
    sep_token = tokenizer.sep_token or "[SEP]"
    dropped = [0]

    def chunks() -> Iterator[Chunk]:
        start = 0
        for frame in _read_chunks(path, chunksize):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                prep = prepare_frame(
                    frame, profile, require_labels=require_labels, strict=strict, sep_token=sep_token
                )
            dropped[0] += len(frame) - len(prep)
            yield prep.texts_a, prep.texts_b, prep.targets, prep.row_index + start
            start += len(frame)

    dataset = build_cache(
        chunks(),
        tokenizer,
        folder,
        max_length,
        truncation,
        num_workers,
        meta={"source": str(path), "key_parts": extra},
    )
    if dropped[0]:
        warnings.warn(f"{dropped[0]} rows of {path} were dropped (empty text or missing label)", stacklevel=2)
    return dataset


def _read_chunks(path: Path, chunksize: int) -> Iterator[pd.DataFrame]:
    """DataFrames of at most ``chunksize`` rows: pandas chunks for CSV/TSV, slices of the table otherwise."""
    from bertkit.data import readers

    if readers._detect_kind(path) != "csv" or readers._suffixes(path)[1] is not None:
        df = readers.read_table(path)
        for s in range(0, len(df), chunksize):
            yield df.iloc[s : s + chunksize].reset_index(drop=True)
        return
    raw = readers._head_bytes(path)
    encoding = readers._choose_encoding(raw, str(path))
    fmt, _ = readers._suffixes(path)
    sep = readers._sniff_separator(
        raw.decode(encoding, errors="ignore"),
        "\t" if fmt in (".tsv", ".tab") else None,
        len(raw) >= readers._SAMPLE_BYTES,
    )
    try:
        reader = pd.read_csv(path, sep=sep, encoding=encoding, chunksize=chunksize, on_bad_lines="error")
        for frame in reader:
            frame.columns = [str(c).strip() for c in frame.columns]
            yield frame.reset_index(drop=True)
    except pd.errors.ParserError as exc:
        raise DataError(f"{path}: malformed CSV ({readers._one_line(exc)}); fix that row") from None
