"""NER data: readers and writers for CoNLL column files and JSONL, plus the public NER task API.

Accepted inputs (see docs/token-tasks.md):

* CoNLL columns (``.conll``, ``.txt``, ``.tsv``, ``.bio``): one token per line, the tag in the last column
  (any number of middle columns, e.g. POS/chunk), blank lines between sentences, ``-DOCSTART-`` lines
  between documents. A file with one column holds tokens only (prediction input).
* JSONL with ``tokens`` + ``tags`` (lists of equal length).
* JSONL with raw ``text`` + ``entities``: ``[{"start": 0, "end": 5, "label": "PER"}, ...]`` (character
  offsets, end exclusive; ``[start, end, label]`` lists also work; ``{"label", "fragments": [[s, e], ...]}``
  describes a discontiguous entity). The text is split into words (at entity boundaries too).

Predictions are written back in the input's own format: CoNLL columns with the tag column replaced (or a
column appended), or JSONL with tags / character-span entities. Every bad input raises a one-line
:class:`~bertkit.errors.DataError` naming the file and line.

Alignment of words to sub-tokens and sliding windows live in :mod:`bertkit.tasks.alignment` and are
re-exported here.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertkit.errors import DataError
from bertkit.fileio import write_text_atomic
from bertkit.tasks.alignment import align_labels, merge_window_predictions
from bertkit.tasks.tags import (
    bio_to_bioes,
    bioes_to_bio,
    check_scheme,
    convert_tags,
    label_list,
    normalize_tags,
    spans_to_tags,
    tags_to_spans,
    validate_tags,
)

__all__ = [
    "Entity",
    "NerDocument",
    "align_labels",
    "bio_to_bioes",
    "bioes_to_bio",
    "convert_tags",
    "label_list",
    "merge_window_predictions",
    "normalize_tags",
    "read_conll",
    "read_ner",
    "read_ner_jsonl",
    "spans_to_tags",
    "split_words",
    "tags_to_spans",
    "validate_tags",
    "write_conll",
    "write_ner",
    "write_ner_jsonl",
]

CONLL_SUFFIXES = (".conll", ".txt", ".tsv", ".bio", ".iob", ".conllu")
_WORD_RE = re.compile(r"\w+(?:[-'’]\w+)*|[^\w\s]", re.UNICODE)


@dataclass
class Entity:
    """An entity as character spans of its document's ``text`` (one fragment unless discontiguous)."""

    label: str
    fragments: list[tuple[int, int]]

    @property
    def start(self) -> int:
        return self.fragments[0][0]

    @property
    def end(self) -> int:
        return self.fragments[-1][1]


@dataclass
class NerDocument:
    """One sentence (CoNLL) or one JSONL record.

    Attributes:
        tokens: The words.
        tags: One tag per word (None for unlabelled input, or nested/discontiguous JSONL entities).
        text: The text (CoNLL and ``tokens`` JSONL: the words joined by single spaces).
        offsets: ``(start, end)`` character span of each word in ``text``.
        entities: Entities as character spans (from the tags, or as given in span JSONL).
        source, line: File and first line (1-based), for messages.
        fmt: ``"conll"``, ``"jsonl_tokens"`` or ``"jsonl_spans"`` (the writers use it).
        columns: CoNLL: all columns of each token line (the last one is the tag when ``tags`` is set).
        sep: CoNLL column separator.
        docstart: CoNLL: the ``-DOCSTART-`` line that precedes this sentence, if any.
        meta: JSONL: the record's other fields (``id``...), written back unchanged.
    """

    tokens: list[str]
    tags: list[str] | None
    text: str
    offsets: list[tuple[int, int]]
    entities: list[Entity] = field(default_factory=list)
    source: str = ""
    line: int = 0
    fmt: str = "conll"
    columns: list[list[str]] = field(default_factory=list)
    sep: str = " "
    docstart: str | None = None
    meta: dict[str, Any] = field(default_factory=dict)


def _join(tokens: Sequence[str]) -> tuple[str, list[tuple[int, int]]]:
    offsets, pos = [], 0
    for tok in tokens:
        offsets.append((pos, pos + len(tok)))
        pos += len(tok) + 1
    return " ".join(tokens), offsets


def _entities_from_tags(tags: Sequence[str], offsets: Sequence[tuple[int, int]]) -> list[Entity]:
    return [Entity(t, [(offsets[s][0], offsets[e - 1][1])]) for s, e, t in tags_to_spans(tags)]


def _read_lines(path: Path) -> list[str]:
    if not path.is_file():
        raise DataError(f"data file {path} does not exist; check the path")
    try:
        return path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not valid UTF-8 text (byte {exc.start}); re-save it as UTF-8") from None


# ------------------------------------------------------------------------------------------------- CoNLL
def read_conll(path: str | os.PathLike[str], scheme: str = "BIO") -> list[NerDocument]:
    """Read a CoNLL column file into one :class:`NerDocument` per sentence.

    Args:
        path: The file.
        scheme: Tag scheme the tags must follow (tag *form* is checked; IOB1-style transitions are accepted
            and repaired by :func:`align_labels`).

    Raises:
        DataError: ``file:line``: a line with a different column count than the first token line, or a tag
            that is not a valid tag of ``scheme``.
    """
    path = Path(path)
    scheme = check_scheme(scheme)
    docs: list[NerDocument] = []
    ncols = 0
    sep = "\t"
    rows: list[tuple[int, list[str]]] = []
    docstart: str | None = None

    def flush() -> None:
        nonlocal rows, docstart
        if not rows:
            return
        cols = [c for _, c in rows]
        tokens = [c[0] for c in cols]
        tags = [c[-1] for c in cols] if ncols > 1 else None
        if tags is not None:
            validate_tags(tags, scheme, [f"{path}:{n}" for n, _ in rows])
        text, offsets = _join(tokens)
        ents = _entities_from_tags(tags, offsets) if tags else []
        docs.append(
            NerDocument(
                tokens, tags, text, offsets, ents, str(path), rows[0][0], "conll", cols, sep, docstart
            )
        )
        rows, docstart = [], None

    for n, raw in enumerate(_read_lines(path), start=1):
        if not raw.strip():
            flush()
            continue
        if not ncols:
            sep = "\t" if "\t" in raw else " "
        cols = raw.rstrip("\r\n").split("\t") if sep == "\t" else raw.split()
        if cols[0] == "-DOCSTART-":
            flush()
            docstart = raw
            continue
        if not ncols:
            ncols = len(cols)
        elif len(cols) != ncols:
            raise DataError(
                f"{path}:{n}: expected {ncols} columns (token ... tag) like the first token line, got "
                f"{len(cols)} in {raw.strip()[:60]!r}; fix the line or its separator"
            )
        rows.append((n, cols))
    flush()
    if not docs:
        raise DataError(
            f"{path} has no tokens; expected 'token ... TAG' lines with blank lines between sentences"
        )
    return docs


def write_conll(
    path: str | os.PathLike[str],
    docs: Sequence[NerDocument],
    predictions: Sequence[Sequence[str]] | None = None,
    append_column: bool = False,
) -> None:
    """Write sentences as CoNLL columns (the input layout, ``-DOCSTART-`` lines included).

    Args:
        path: Output file (written atomically).
        docs: Documents from :func:`read_conll` (others are written as ``token tag``).
        predictions: Optional predicted tags per document; they replace the tag column, or are appended as a
            new last column with ``append_column=True`` (conlleval layout: ``token ... gold pred``).
        append_column: See ``predictions``.
    """
    out: list[str] = []
    for i, doc in enumerate(docs):
        if doc.docstart is not None:
            out += [doc.docstart, ""]
        pred = None if predictions is None else list(predictions[i])
        if pred is not None and len(pred) != len(doc.tokens):
            raise DataError(
                f"prediction {i} has {len(pred)} tags for {len(doc.tokens)} tokens ({doc.source}:{doc.line})"
            )
        for k, tok in enumerate(doc.tokens):
            cols = list(doc.columns[k]) if doc.columns else [tok] + ([doc.tags[k]] if doc.tags else [])
            if pred is not None:
                if doc.tags is not None and not append_column:
                    cols[-1] = pred[k]
                else:
                    cols.append(pred[k])
            out.append(doc.sep.join(cols))
        out.append("")
    write_text_atomic(path, "\n".join(out) + "\n")


# ------------------------------------------------------------------------------------------------- JSONL
def split_words(text: str, cuts: Sequence[int] = ()) -> list[tuple[int, int]]:
    """Character spans of the words of ``text`` (runs of word characters, single punctuation marks).

    ``cuts`` are extra character positions where a word must end (entity boundaries).
    """
    bounds = sorted({0, len(text), *[c for c in cuts if 0 < c < len(text)]})
    spans: list[tuple[int, int]] = []
    for a, b in zip(bounds, bounds[1:]):
        spans += [(a + m.start(), a + m.end()) for m in _WORD_RE.finditer(text[a:b])]
    return spans


def _parse_entity(raw: Any, text: str, where: str) -> Entity:
    if isinstance(raw, list | tuple) and len(raw) == 3:
        raw = {"start": raw[0], "end": raw[1], "label": raw[2]}
    if not isinstance(raw, dict) or not ({"start", "end"} <= set(raw) or "fragments" in raw):
        raise DataError(f"{where}: entity {raw!r} needs start, end and label (or fragments and label)")
    label = raw.get("label", raw.get("type"))
    if not isinstance(label, str) or not label:
        raise DataError(f'{where}: entity {raw!r} has no label; add "label": "PER" (for example)')
    frags = raw.get("fragments") or [[raw["start"], raw["end"]]]
    out = []
    for frag in frags:
        try:
            s, e = int(frag[0]), int(frag[1])
        except (TypeError, ValueError, IndexError):
            raise DataError(f"{where}: entity span {frag!r} must be two integer character offsets") from None
        if not 0 <= s < e <= len(text):
            raise DataError(f"{where}: entity [{s}, {e}) is outside the text of {len(text)} characters")
        out.append((s, e))
    if "text" in raw and len(out) == 1 and text[out[0][0] : out[0][1]] != raw["text"]:
        s, e = out[0]
        raise DataError(
            f"{where}: entity text {raw['text']!r} does not match the text at [{s}, {e}): {text[s:e]!r}"
        )
    return Entity(label, sorted(out))


def read_ner_jsonl(
    path: str | os.PathLike[str], scheme: str = "BIO", allow_nested: bool = False
) -> list[NerDocument]:
    """Read NER JSONL: records with ``tokens`` + ``tags``, or raw ``text`` + character-offset ``entities``.

    Args:
        path: The file.
        scheme: Tag scheme of ``tags`` (and of the tags built from ``entities``).
        allow_nested: Accept overlapping or discontiguous entities (for the span head); such documents get
            ``tags=None``. Without it they raise, since one tag per word cannot represent them.
    """
    path = Path(path)
    scheme = check_scheme(scheme)
    docs: list[NerDocument] = []
    for n, raw in enumerate(_read_lines(path), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{n}"
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        if not isinstance(rec, dict):
            raise DataError(f"{where}: each line must be a JSON object with tokens+tags or text+entities")
        if "tokens" in rec:
            docs.append(_tokens_record(rec, where, scheme, str(path), n))
        elif "text" in rec:
            docs.append(_spans_record(rec, where, scheme, allow_nested, str(path), n))
        else:
            raise DataError(f"{where}: record has neither 'tokens' nor 'text'; keys are {sorted(rec)}")
    if not docs:
        raise DataError(f"{path} has no JSON records; write one JSON object per line")
    return docs


def _tokens_record(rec: dict[str, Any], where: str, scheme: str, source: str, n: int) -> NerDocument:
    tokens, tags = rec["tokens"], rec.get("tags", rec.get("ner_tags"))
    if not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens):
        raise DataError(f"{where}: 'tokens' must be a list of strings")
    if tags is not None:
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise DataError(f"{where}: 'tags' must be a list of tag strings like 'B-PER' (not ids)")
        if len(tags) != len(tokens):
            raise DataError(f"{where}: {len(tokens)} tokens but {len(tags)} tags; give one tag per token")
        validate_tags(tags, scheme, where)
    text, offsets = _join(tokens)
    meta = {k: v for k, v in rec.items() if k not in ("tokens", "tags", "ner_tags")}
    ents = _entities_from_tags(tags, offsets) if tags else []
    return NerDocument(tokens, tags, text, offsets, ents, source, n, "jsonl_tokens", meta=meta)


def _spans_record(
    rec: dict[str, Any], where: str, scheme: str, allow_nested: bool, source: str, n: int
) -> NerDocument:
    text = rec["text"]
    if not isinstance(text, str):
        raise DataError(f"{where}: 'text' must be a string")
    raw_ents = rec.get("entities")
    ents = None if raw_ents is None else [_parse_entity(e, text, where) for e in raw_ents]
    cuts = [c for e in ents or [] for f in e.fragments for c in f]
    offsets = split_words(text, cuts)
    tokens = [text[s:e] for s, e in offsets]
    tags: list[str] | None = None
    if ents is not None:
        frags = sorted((f, e.label) for e in ents for f in e.fragments)
        nested = any(len(e.fragments) > 1 for e in ents) or any(
            a[0][1] > b[0][0] for a, b in zip(frags, frags[1:])
        )
        if nested and not allow_nested:
            raise DataError(
                f"{where}: entities overlap or are discontiguous, which one tag per word cannot represent; "
                "use the span_classification head (read with allow_nested=True)"
            )
        if not nested:
            starts = {s: i for i, (s, _) in enumerate(offsets)}
            ends = {e: i for i, (_, e) in enumerate(offsets)}
            spans = []
            for (s, e), label in frags:
                if s not in starts or e not in ends:
                    raise DataError(f"{where}: entity [{s}, {e}) starts or ends inside whitespace; trim it")
                spans.append((starts[s], ends[e] + 1, label))
            tags = spans_to_tags(len(tokens), spans, scheme)
    meta = {k: v for k, v in rec.items() if k not in ("text", "entities")}
    doc = NerDocument(tokens, tags, text, offsets, ents or [], source, n, "jsonl_spans", meta=meta)
    return doc


def write_ner_jsonl(
    path: str | os.PathLike[str],
    docs: Sequence[NerDocument],
    predictions: Sequence[Sequence[str]] | None = None,
) -> None:
    """Write documents as JSONL in their input layout, with predicted tags when given.

    ``tokens`` records get ``tags``; ``text`` records get ``entities`` as character spans
    (``{"start", "end", "label", "text"}``). Other fields of each record are kept.
    """
    lines = []
    for i, doc in enumerate(docs):
        tags = doc.tags if predictions is None else list(predictions[i])
        if tags is not None and len(tags) != len(doc.tokens):
            raise DataError(
                f"prediction {i} has {len(tags)} tags for {len(doc.tokens)} tokens ({doc.source}:{doc.line})"
            )
        if doc.fmt == "jsonl_spans":
            ents = doc.entities if predictions is None else _entities_from_tags(tags or [], doc.offsets)
            rec = {**doc.meta, "text": doc.text, "entities": [_entity_json(e, doc.text) for e in ents]}
        else:
            rec = {**doc.meta, "tokens": doc.tokens, "tags": tags}
        lines.append(json.dumps(rec, ensure_ascii=False))
    write_text_atomic(path, "\n".join(lines) + "\n")


def _entity_json(e: Entity, text: str) -> dict[str, Any]:
    if len(e.fragments) == 1:
        return {"start": e.start, "end": e.end, "label": e.label, "text": text[e.start : e.end]}
    return {"label": e.label, "fragments": [list(f) for f in e.fragments]}


# ---------------------------------------------------------------------------------------------- dispatch
def read_ner(
    path: str | os.PathLike[str], scheme: str = "BIO", allow_nested: bool = False
) -> list[NerDocument]:
    """Read a CoNLL file or NER JSONL by extension (``.jsonl``/``.json`` are JSONL, the rest CoNLL)."""
    if Path(path).suffix.lower() in (".jsonl", ".json", ".ndjson"):
        return read_ner_jsonl(path, scheme, allow_nested)
    return read_conll(path, scheme)


def write_ner(
    path: str | os.PathLike[str],
    docs: Sequence[NerDocument],
    predictions: Sequence[Sequence[str]] | None = None,
) -> None:
    """Write predictions in the format the documents were read from (CoNLL columns or JSONL)."""
    if docs and docs[0].fmt == "conll":
        write_conll(path, docs, predictions)
    else:
        write_ner_jsonl(path, docs, predictions)
