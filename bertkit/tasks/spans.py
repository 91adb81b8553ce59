"""Span-head features: candidate word spans per window, their targets, and predictions back to characters.

Candidates are word spans of 1..``max_span_len`` words inside a window from
:func:`bertkit.tasks.alignment.align_labels`; each is represented by the first sub-token of its first word
and the last sub-token of its last word. Gold entities (from :class:`~bertkit.tasks.ner.NerDocument`
character spans, nested and discontiguous ones included) become ``span_labels`` (type or null) and
``span_groups`` (which entity a fragment belongs to, for the linking scores).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from bertkit.tasks.alignment import align_labels
from bertkit.tasks.ner import Entity, NerDocument

IGNORE_INDEX = -100


def word_fragments(doc: NerDocument, entity: Entity) -> list[tuple[int, int]]:
    """Inclusive word index ranges covered by each character fragment of ``entity``."""
    out = []
    for s, e in entity.fragments:
        inside = [i for i, (a, b) in enumerate(doc.offsets) if a < e and b > s]
        if inside:
            out.append((inside[0], inside[-1]))
    return out


def window_spans(
    window: dict[str, Any], max_span_len: int
) -> tuple[list[int], list[int], list[tuple[int, int]]]:
    """Candidate spans of one window: ``(token_starts, token_ends, word_spans)`` (all inclusive)."""
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    for i, w in enumerate(window["word_ids"]):
        if w is not None:
            first.setdefault(int(w), i)
            last[int(w)] = i
    words = sorted(first)
    starts, ends, spans = [], [], []
    for a, wa in enumerate(words):
        for wb in words[a : a + max_span_len]:
            if wb - wa >= max_span_len:
                break
            starts.append(first[wa])
            ends.append(last[wb])
            spans.append((wa, wb))
    return starts, ends, spans


def prepare_span_features(
    tokenizer: Any,
    docs: Sequence[NerDocument],
    label_names: Sequence[str],
    max_length: int = 256,
    stride: int = 64,
    max_span_len: int = 8,
    null_label: str = "O",
) -> tuple[list[dict[str, Any]], int]:
    """Windows with candidate spans and (when the documents have entities) their targets.

    Returns:
        ``(features, dropped)``: one dict per window with ``input_ids``, ``attention_mask``, ``word_ids``,
        ``doc_index``, ``span_starts``, ``span_ends``, ``span_words`` (word spans), ``span_labels`` and
        ``span_groups``; ``dropped`` counts gold fragments longer than ``max_span_len`` words (unreachable).
    """
    label2id = {n: i for i, n in enumerate(label_names)}
    windows = align_labels(tokenizer, [d.tokens for d in docs], None, None, max_length, stride)
    dropped = 0
    gold: list[dict[tuple[int, int], list[tuple[str, int]]]] = []
    for d in docs:
        table: dict[tuple[int, int], list[tuple[str, int]]] = {}
        for k, ent in enumerate(d.entities):
            for frag in word_fragments(d, ent):
                if frag[1] - frag[0] >= max_span_len:
                    dropped += 1
                table.setdefault(frag, []).append((ent.label, k))
        gold.append(table)
    feats = []
    for win in windows:
        starts, ends, spans = window_spans(win, max_span_len)
        table = gold[win["doc_index"]]
        labels, groups = [], []
        for span in spans:
            hit = table.get(span)
            labels.append(label2id[hit[0][0]] if hit else label2id.get(null_label, 0))
            groups.append(hit[0][1] if hit else -1)
        feat: dict[str, Any] = {
            k: win[k]
            for k in ("input_ids", "attention_mask", "token_type_ids", "word_ids", "doc_index")
            if k in win
        }
        feat.update(
            span_starts=starts, span_ends=ends, span_words=spans, span_labels=labels, span_groups=groups
        )
        feats.append(feat)
    return feats, dropped


def entities_to_chars(doc: NerDocument, word_entities: Sequence[dict[str, Any]]) -> list[Entity]:
    """Entities with word-index fragments ``{"label", "fragments": [(first_word, last_word)]}`` as characters."""
    out = []
    for ent in word_entities:
        frags = [(doc.offsets[a][0], doc.offsets[b][1]) for a, b in ent["fragments"]]
        out.append(Entity(str(ent["label"]), sorted(frags)))
    return out


def merge_span_predictions(
    features: Sequence[dict[str, Any]], decoded: Sequence[Sequence[dict[str, Any]]], num_docs: int
) -> list[list[dict[str, Any]]]:
    """Word-level entities per document from the span head's ``decode_entities`` output per window.

    Token fragments are mapped to words through each window's ``word_ids``; an entity found by several
    overlapping windows is kept once (the highest score).
    """
    best: list[dict[tuple[Any, ...], dict[str, Any]]] = [{} for _ in range(num_docs)]
    for feat, ents in zip(features, decoded):
        wids = feat["word_ids"]
        for ent in ents:
            frags = tuple(
                (int(wids[a]), int(wids[b]))
                for a, b in ent["fragments"]
                if wids[a] is not None and wids[b] is not None
            )
            if not frags:
                continue
            key = (frags, ent["label"])
            table = best[feat["doc_index"]]
            if key not in table or ent.get("score", 0.0) > table[key]["score"]:
                table[key] = {
                    "label": ent["label"],
                    "fragments": list(frags),
                    "score": float(ent.get("score", 0.0)),
                }
    return [sorted(t.values(), key=lambda e: (e["fragments"], e["label"])) for t in best]
