"""Relation extraction data: sentences with two marked entities and a (direction-aware) relation label.

Accepted rows (CSV with a header, or JSONL):

* ``text`` (or ``sentence``) holding ``<e1>...</e1>`` and ``<e2>...</e2>`` (SemEval-2010 Task 8 style),
  and ``label`` (or ``relation``), e.g. ``"Cause-Effect(e2,e1)"``;
* JSONL may instead give unmarked ``text`` with character offsets ``e1_start, e1_end, e2_start, e2_end``;
  the markers are inserted.

A row without both markers raises a one-line :class:`~bertkit.errors.DataError` with file and line.
"""

from __future__ import annotations

import csv
import io
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertkit.errors import ConfigError, DataError
from bertkit.heads.relation import ENTITY_MARKERS
from bertkit.tasks.alignment import special_tokens_around

_DIRECTION = re.compile(r"^(?P<base>.+)\((?P<a>e[12]),(?P<b>e[12])\)$")


@dataclass
class RelationExample:
    """One sentence with markers. ``e1``/``e2`` are the marked strings; ``label`` may be None (inference)."""

    text: str
    label: str | None
    e1: str
    e2: str
    id: str = ""
    source: str = ""
    line: int = 0
    meta: dict[str, Any] = field(default_factory=dict)


def split_direction(label: str) -> tuple[str, str | None]:
    """``"Cause-Effect(e2,e1)" -> ("Cause-Effect", "e2,e1")``; ``"Other" -> ("Other", None)``."""
    m = _DIRECTION.match(label)
    return (m.group("base"), f"{m.group('a')},{m.group('b')}") if m else (label, None)


def flip_direction(label: str) -> str:
    """The same relation with the arguments swapped: ``"X(e1,e2)" <-> "X(e2,e1)"`` (undirected unchanged)."""
    base, direction = split_direction(label)
    if direction is None:
        return label
    a, b = direction.split(",")
    return f"{base}({b},{a})"


def check_markers(text: str, where: str) -> tuple[str, str]:
    """Check ``text`` holds ``<e1>..</e1>`` and ``<e2>..</e2>`` once each, in order; return the two entities."""
    found = {m: text.count(m) for m in ENTITY_MARKERS}
    missing = [m for m, c in found.items() if c == 0]
    if missing:
        raise DataError(
            f"{where}: relation row needs both entity markers <e1>..</e1> and <e2>..</e2>; missing "
            f"{', '.join(missing)} in {text[:60]!r}"
        )
    repeated = [m for m, c in found.items() if c > 1]
    if repeated:
        raise DataError(
            f"{where}: marker {repeated[0]} appears {found[repeated[0]]} times; mark each entity once"
        )
    spans = []
    for open_m, close_m in ((ENTITY_MARKERS[0], ENTITY_MARKERS[1]), (ENTITY_MARKERS[2], ENTITY_MARKERS[3])):
        a, b = text.index(open_m), text.index(close_m)
        if b < a:
            raise DataError(f"{where}: {close_m} comes before {open_m}; write {open_m}entity{close_m}")
        spans.append(text[a + len(open_m) : b])
    return spans[0], spans[1]


def insert_markers(text: str, e1: tuple[int, int], e2: tuple[int, int]) -> str:
    """Insert ``<e1>``/``</e1>``/``<e2>``/``</e2>`` at character spans ``e1`` and ``e2`` (end exclusive)."""
    inserts = sorted(
        [(e1[0], 1, "<e1>"), (e1[1], 0, "</e1>"), (e2[0], 1, "<e2>"), (e2[1], 0, "</e2>")], reverse=True
    )
    for pos, _, tag in inserts:
        text = text[:pos] + tag + text[pos:]
    return text


def _row_to_example(rec: dict[str, Any], where: str, source: str, line: int) -> RelationExample:
    text = rec.get("text", rec.get("sentence"))
    if not isinstance(text, str):
        raise DataError(f"{where}: row has no 'text' (or 'sentence') column with the marked sentence")
    if "<e1>" not in text and all(k in rec for k in ("e1_start", "e1_end", "e2_start", "e2_end")):
        try:
            text = insert_markers(
                text, (int(rec["e1_start"]), int(rec["e1_end"])), (int(rec["e2_start"]), int(rec["e2_end"]))
            )
        except (TypeError, ValueError):
            raise DataError(
                f"{where}: e1_start/e1_end/e2_start/e2_end must be integer character offsets"
            ) from None
    e1, e2 = check_markers(text, where)
    label = rec.get("label", rec.get("relation"))
    label = None if label is None or (isinstance(label, str) and not label.strip()) else str(label).strip()
    skip = ("text", "sentence", "label", "relation")
    meta = {k: v for k, v in rec.items() if k not in skip}
    return RelationExample(text, label, e1, e2, str(rec.get("id", line)), source, line, meta)


def read_relations(path: str | os.PathLike[str]) -> list[RelationExample]:
    """Read relation rows from CSV (header with ``text``, ``label``) or JSONL (by extension)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data file {path} does not exist; check the path")
    try:
        raw = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not valid UTF-8 text (byte {exc.start}); re-save it as UTF-8") from None
    out: list[RelationExample] = []
    if path.suffix.lower() in (".jsonl", ".ndjson", ".json"):
        for n, line in enumerate(raw.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{n}: invalid JSON ({exc.msg} at column {exc.colno})") from None
            if not isinstance(rec, dict):
                raise DataError(f"{path}:{n}: each line must be a JSON object with text and label")
            out.append(_row_to_example(rec, f"{path}:{n}", str(path), n))
    else:
        delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
        reader = csv.DictReader(io.StringIO(raw, newline=""), delimiter=delimiter)
        if not reader.fieldnames or not ({"text", "sentence"} & set(reader.fieldnames)):
            raise DataError(
                f"{path}:1: header needs a 'text' (or 'sentence') column; found {reader.fieldnames}"
            )
        start = reader.line_num + 1
        for rec in reader:
            out.append(_row_to_example(dict(rec), f"{path}:{start}", str(path), start))
            start = reader.line_num + 1
    if not out:
        raise DataError(f"{path} has no rows")
    return out


def tokenize_relations(
    tokenizer: Any,
    examples: Sequence[RelationExample],
    label2id: dict[str, int] | None = None,
    max_length: int = 128,
) -> list[dict[str, Any]]:
    """Tokenize marked sentences; a sentence longer than ``max_length`` is cropped around its entities.

    Args:
        tokenizer: Tokenizer with the markers added (:func:`bertkit.heads.relation.add_entity_markers`).
        examples: From :func:`read_relations`.
        label2id: Relation label -> id (None: no ``labels``, e.g. at inference).
        max_length: Length in tokens, special tokens included.

    Returns:
        One dict per example: ``input_ids``, ``attention_mask`` (``token_type_ids``) and ``labels``.
    """
    ids = tokenizer.convert_tokens_to_ids(list(ENTITY_MARKERS))
    unk = getattr(tokenizer, "unk_token_id", None)
    if any(i is None or i == unk for i in ids):
        raise ConfigError(
            "the tokenizer lacks the entity markers; call add_entity_markers(tokenizer, bert) first"
        )
    prefix, suffix = special_tokens_around(tokenizer)
    capacity = max_length - len(prefix) - len(suffix)
    with_types = "token_type_ids" in getattr(tokenizer, "model_input_names", [])
    out = []
    for ex in examples:
        toks = list(tokenizer(ex.text, add_special_tokens=False)["input_ids"])
        if len(toks) > capacity:
            marks = [toks.index(i) for i in ids if i in toks]
            lo, hi = min(marks), max(marks) + 1
            if hi - lo > capacity:
                raise DataError(
                    f"{ex.source}:{ex.line}: the two entities span {hi - lo} tokens, more than max_length="
                    f"{max_length} allows; raise max_length"
                )
            a = max(0, min(lo - (capacity - (hi - lo)) // 2, len(toks) - capacity))
            toks = toks[a : a + capacity]
        row: dict[str, Any] = {"input_ids": prefix + toks + suffix}
        row["attention_mask"] = [1] * len(row["input_ids"])
        if with_types:
            row["token_type_ids"] = [0] * len(row["input_ids"])
        if label2id is not None:
            if ex.label not in label2id:
                raise DataError(
                    f"{ex.source}:{ex.line}: relation label {ex.label!r} is not in the label list"
                )
            row["labels"] = label2id[ex.label]
        out.append(row)
    return out
