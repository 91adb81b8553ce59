"""The NER runner: token classification (optionally with a CRF) and span classification, from the CLI or Python.

``bertkit train train.conll --valid dev.conll --test test.conll -o runs/ner`` picks this runner for CoNLL column
files and for JSONL with ``tokens``+``tags`` or ``text``+``entities``; ``--task span`` or
``--head span_classification`` switches to the span head (nested and discontiguous entities). Task options
live in ``model.head_options.extra`` (``--set model.head_options.extra.use_crf=true``) and are saved with the
head: ``use_crf``, ``scheme`` (BIO/BIOES), ``stride``, ``label_all_subtokens``; span head: ``max_span_len``,
``use_linking`` (default: on when the data has discontiguous entities) and the head's other settings.

Metrics are entity-level (seqeval default mode ``f1``/``precision``/``recall``, strict mode ``strict_*``, and
``invalid_sequences`` counted before repair) on words, after merging the sliding windows. Predictions are
written in the input's format (CoNLL columns, JSONL tags, or JSONL character-span entities).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bertkit.errors import ConfigError, DataError
from bertkit.runners import register_runner
from bertkit.tasks.common import (
    TaskDataset,
    TaskPipeline,
    TaskProfile,
    first_json_record,
    length_stats,
    recommend_max_length,
)
from bertkit.tasks.driver import create_task_model, make_runner
from bertkit.tasks.ner import NerDocument, read_ner
from bertkit.tasks.tags import check_scheme, convert_tags, label_list, normalize_tags, validate_tags

_TAG_RE = re.compile(r"^(O|[BIES]-\S+)$")
_CONLL_SUFFIXES = (".conll", ".bio", ".iob", ".iob2", ".bioes", ".conllu")


# ------------------------------------------------------------------------------------------------ detect
def _looks_like_conll(path: Path, max_lines: int = 200) -> bool:
    """Token lines with a constant column count (>= 2) whose last column is mostly a BIO/BIOES tag."""
    lines = []
    try:
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                if line.strip() and not line.startswith("-DOCSTART-"):
                    lines.append(line.rstrip("\r\n"))
                if len(lines) >= max_lines:
                    break
    except (OSError, UnicodeDecodeError):
        return False
    if not lines:
        return False
    cols = [ln.split("\t") if "\t" in lines[0] else ln.split() for ln in lines]
    if len({len(c) for c in cols}) != 1 or len(cols[0]) < 2:
        return False
    return sum(bool(_TAG_RE.match(c[-1])) for c in cols) >= 0.9 * len(cols)


def detect_ner(path: Path) -> bool:
    """CoNLL column files (``.conll``; ``.txt``/``.tsv`` that look like one) or NER JSONL."""
    suffix = path.suffix.lower()
    if not path.is_file():
        return False
    if suffix in (".jsonl", ".ndjson", ".json"):
        rec = first_json_record(path)
        return isinstance(rec, dict) and ("tokens" in rec or ("text" in rec and "entities" in rec))
    if suffix in _CONLL_SUFFIXES:
        return True
    return suffix in (".txt", ".tsv") and _looks_like_conll(path)


def _data_scheme(docs: Sequence[NerDocument], default: str) -> str:
    tags = [t for d in docs for t in (d.tags or [])]
    if not tags:
        return default
    return "BIOES" if any(t[:2] in ("E-", "S-") for t in tags) else "BIO"


def _count_invalid(seqs: Sequence[Sequence[str]], scheme: str) -> int:
    bad = 0
    for tags in seqs:
        try:
            validate_tags(tags, scheme, check_transitions=True)
        except DataError:
            bad += 1
    return bad


def _window_tags(
    row: dict[str, Any], pred: Sequence[int], names: Sequence[str], all_sub: bool, scheme: str
) -> dict[int, str]:
    """Word -> tag as predicted by one window (first sub-token, or all sub-tokens with ``all_sub``)."""
    from bertkit.tasks.tags import word_tag

    groups: dict[int, list[str]] = {}
    for i, (w, m) in enumerate(zip(row["word_ids"], row["word_mask"])):
        if w is not None and m:
            groups.setdefault(int(w), []).append(names[int(pred[i])])
    return {w: word_tag(t if all_sub else t[:1], scheme) for w, t in groups.items()}


def stitch_windows(
    rows: Sequence[dict[str, Any]],
    preds: Any,
    merged: list[list[str]],
    names: Sequence[str],
    all_sub: bool,
    scheme: str,
) -> list[list[str]]:
    """Make window-merged CRF paths valid: where switching from one window's words to the next creates an
    invalid transition, move the switch to an overlap word on which both windows agree (each window's own
    path is valid, so the joined path is too)."""
    by_doc: dict[int, list[dict[int, str]]] = {}
    for row, pred in zip(rows, preds):
        by_doc.setdefault(int(row["doc_index"]), []).append(_window_tags(row, pred, names, all_sub, scheme))
    out = [list(t) for t in merged]
    for d, wins in by_doc.items():
        if len(wins) < 2 or not _count_invalid([out[d]], scheme):
            continue
        for a, b in zip(wins, wins[1:]):
            overlap = sorted(set(a) & set(b))
            agree = [w for w in overlap if a[w] == b[w]]
            if not agree:
                continue
            cut = agree[len(agree) // 2]
            for w in b:
                if w <= cut and w in a:
                    out[d][w] = a[w]
                elif w > cut:
                    out[d][w] = b[w]
    return out


# ----------------------------------------------------------------------------------------- token (NER)
class TokenPipeline(TaskPipeline):
    """NER with the ``token_classification`` head: first-sub-token labels, sliding windows, optional CRF."""

    runner = "ner"
    collate_mode = "token"
    label_keys = ("labels",)
    best_metric = "f1"
    head_type = "token_classification"

    @classmethod
    def from_config(cls, cfg: Any) -> TaskPipeline:
        if cfg.model.head not in (None, "token_classification", "span_classification"):
            raise ConfigError(
                f"head '{cfg.model.head}' does not fit NER; use token_classification or span_classification"
            )
        span = cfg.data.task == "span" or cfg.model.head == "span_classification"
        klass = SpanPipeline if span else TokenPipeline
        return klass(dict(cfg.model.head_options.get("extra") or {}), cfg.training.max_length)

    @classmethod
    def from_model(cls, model: Any) -> TaskPipeline:
        klass = SpanPipeline if model.head.registry_name == "span_classification" else TokenPipeline
        return klass(dict(model.head.config.extra), int(model.metadata.get("max_length", 128)))

    # settings ----------------------------------------------------------------------------------------
    @property
    def scheme(self) -> str:
        return check_scheme(self.settings.get("scheme", "BIO"))

    @property
    def stride(self) -> int:
        """Window overlap in sub-tokens (default: a quarter of ``max_length``)."""
        return int(self.settings.get("stride", max(0, self.max_length // 4)))

    @property
    def label_all_subtokens(self) -> bool:
        return bool(self.settings.get("label_all_subtokens", False))

    def task_extra(self) -> dict[str, Any]:
        """Head ``extra`` saved with the model (round-trips every task setting)."""
        return {
            **self.settings,
            "scheme": self.scheme,
            "stride": self.stride,
            "use_crf": bool(self.settings.get("use_crf", False)),
            "label_all_subtokens": self.label_all_subtokens,
        }

    # data ----------------------------------------------------------------------------------------------
    def read(self, path: str | Path) -> list[Any]:
        return read_ner(path, self.scheme)

    def read_for_analysis(self, path: str | Path) -> list[Any]:
        return read_ner(path, self.scheme, allow_nested=True)

    def is_labelled(self, items: Sequence[Any]) -> bool:
        return all(d.tags is not None for d in items)

    def build_model(self, cfg: Any, tokenizer: Any, train: Sequence[Any], valid: Sequence[Any]) -> Any:
        labels = label_list([d.tags for d in [*train, *valid]], self.scheme)
        if len(labels) < 2:
            raise DataError("the training data has no entities (every tag is 'O'); nothing to learn")
        return create_task_model(cfg, tokenizer, self.head_type, labels, self.task_extra(), self.metadata())

    def dataset(self, model: Any, items: Sequence[Any], labelled: bool) -> TaskDataset:
        from bertkit.tasks.ner import align_labels

        names = model.head.label_names()
        rows = align_labels(
            model.tokenizer,
            [d.tokens for d in items],
            [d.tags for d in items] if labelled else None,
            {n: i for i, n in enumerate(names)} if labelled else None,
            self.max_length,
            self.stride,
            self.label_all_subtokens,
            self.scheme,
        )
        return TaskDataset(rows, items, labelled, self.label_keys)

    def decode(self, model: Any, ds: TaskDataset, outputs: dict[str, np.ndarray]) -> list[Any]:
        """Word tags per document, not yet repaired (so invalid sequences can be counted)."""
        from bertkit.tasks.ner import merge_window_predictions

        names = model.head.label_names()
        merged = merge_window_predictions(
            ds.rows, outputs["predictions"], [len(d.tokens) for d in ds.items], names,
            self.label_all_subtokens, self.scheme, padding_side="right", repair=False,
        )  # fmt: skip
        if getattr(model.head, "crf", None) is None:
            return merged
        return stitch_windows(
            ds.rows, outputs["predictions"], merged, names, self.label_all_subtokens, self.scheme
        )

    def score(self, model: Any, items: Sequence[Any], preds: Sequence[Any]) -> dict[str, float]:
        from bertkit.metrics import entity_metrics

        gold = [list(d.tags) for d in items]
        data_scheme = _data_scheme(items, self.scheme)
        pred = [list(p) if data_scheme == self.scheme else convert_tags(p, data_scheme) for p in preds]
        res = entity_metrics(gold, pred)
        strict = entity_metrics(gold, pred, mode="strict", scheme="IOB2" if data_scheme == "BIO" else "IOBES")
        out: dict[str, float] = {k: float(res[k]) for k in ("f1", "precision", "recall")}  # type: ignore[arg-type]
        out.update({f"strict_{k}": float(strict[k]) for k in ("f1", "precision", "recall")})  # type: ignore[arg-type]
        out["invalid_sequences"] = float(_count_invalid(preds, self.scheme))
        total = sum(len(g) for g in gold)
        out["word_accuracy"] = sum(a == b for g, p in zip(gold, pred) for a, b in zip(g, p)) / max(total, 1)
        for name, row in res["report"].items():  # type: ignore[union-attr]
            out[f"{name}_f1"] = float(row["f1"])
            out[f"{name}_support"] = float(row["support"])
        return out

    def write(
        self, path: Path, items: Sequence[Any], preds: Sequence[Any], proba: bool = False
    ) -> list[Path]:
        from bertkit.tasks.ner import write_ner

        out_scheme = _data_scheme(items, self.scheme)
        write_ner(path, items, [convert_tags(normalize_tags(p, self.scheme), out_scheme) for p in preds])
        return [path]

    def combine(self, model: Any, fold_preds: list[list[Any]]) -> list[Any]:
        """Per word, the tag most folds predict (the first fold's on ties), then repaired."""
        out = []
        for per_doc in zip(*fold_preds):
            tags = [Counter(words).most_common(1)[0][0] for words in zip(*per_doc)]
            out.append(normalize_tags(tags, self.scheme))
        return out

    # analyze -------------------------------------------------------------------------------------------
    def profile(self, items: Sequence[Any], tokenizer: Any, source: str) -> TaskProfile:
        """Documents, words, sub-token lengths, entity type counts and lengths, nesting, scheme."""
        lengths = (
            [
                len(ids) + 2
                for ids in tokenizer(
                    [" ".join(d.tokens) for d in items], add_special_tokens=False, verbose=False
                )["input_ids"]
            ]
            if items
            else []
        )
        ents = [e for d in items for e in d.entities]
        nested = sum(1 for d in items if d.tags is None and d.entities)
        discontiguous = sum(1 for e in ents if len(e.fragments) > 1)
        labelled = [d for d in items if d.tags is not None]
        stats: dict[str, Any] = {
            "documents": len(items),
            "words": sum(len(d.tokens) for d in items),
            "format": items[0].fmt if items else "-",
            "labelled": bool(items) and all(d.tags is not None or d.entities for d in items),
            "scheme": _data_scheme(items, self.scheme),
            "entities": len(ents),
            "entity_types": dict(sorted(Counter(e.label for e in ents).items())),
            "entity_length_chars": length_stats([e.end - e.start for e in ents]),
            "words_per_document": length_stats([len(d.tokens) for d in items]),
            "subtokens_per_document": length_stats(lengths),
            "documents_over_max_length": sum(n > self.max_length for n in lengths),
            "invalid_tag_sequences_in_data": _count_invalid(
                [d.tags for d in labelled], _data_scheme(items, "BIO")
            ),
            "nested_documents": nested,
            "discontiguous_entities": discontiguous,
            "recommended_head": "span_classification" if nested or discontiguous else "token_classification",
            "recommended_max_length": recommend_max_length(lengths),
        }
        notes = []
        if stats["documents_over_max_length"]:
            notes.append(
                f"{stats['documents_over_max_length']} documents exceed max_length={self.max_length} "
                f"sub-tokens; they are split into overlapping windows (stride {self.stride})"
            )
        if nested or discontiguous:
            notes.append("overlapping or discontiguous entities need the span head: --task span")
        if stats["invalid_tag_sequences_in_data"]:
            notes.append(
                "some gold sequences have IOB1-style transitions (e.g. O -> I-X); they are repaired "
                "for training, and metrics read them like conlleval"
            )
        return TaskProfile("span" if isinstance(self, SpanPipeline) else "ner", source, stats, notes)


# ------------------------------------------------------------------------------------------------ span
class SpanPipeline(TokenPipeline):
    """NER with the ``span_classification`` head: nested and (with linking) discontiguous entities."""

    collate_mode = "span"
    label_keys = ("span_labels", "span_groups")
    head_type = "span_classification"

    @property
    def max_span_len(self) -> int:
        return int(self.settings.get("max_span_len", 8))

    def read(self, path: str | Path) -> list[Any]:
        return read_ner(path, self.scheme, allow_nested=True)

    def is_labelled(self, items: Sequence[Any]) -> bool:
        return all(d.tags is not None or d.entities for d in items)

    def build_model(self, cfg: Any, tokenizer: Any, train: Sequence[Any], valid: Sequence[Any]) -> Any:
        docs = [*train, *valid]
        types = sorted({e.label for d in docs for e in d.entities} - {"O"})
        if not types:
            raise DataError("the training data has no entities; nothing to learn")
        linking = any(len(e.fragments) > 1 for d in docs for e in d.entities)
        extra = {
            **self.task_extra(),
            "max_span_len": self.max_span_len,
            "null_label": "O",
            "use_linking": bool(self.settings.get("use_linking", linking)),
        }
        extra.pop("use_crf", None)
        return create_task_model(cfg, tokenizer, self.head_type, ["O", *types], extra, self.metadata())

    def dataset(self, model: Any, items: Sequence[Any], labelled: bool) -> TaskDataset:
        import logging

        from bertkit.tasks.spans import prepare_span_features

        feats, dropped = prepare_span_features(
            model.tokenizer,
            items,
            model.head.label_names(),
            self.max_length,
            self.stride,
            self.max_span_len,
            "O",
        )
        if dropped and labelled:
            logging.getLogger(__name__).warning(
                "%d gold entity fragments are longer than max_span_len=%d words and cannot be predicted",
                dropped,
                self.max_span_len,
            )
        return TaskDataset(feats, items, labelled, self.label_keys)

    def decode(self, model: Any, ds: TaskDataset, outputs: dict[str, np.ndarray]) -> list[Any]:
        """Entities per document: ``{"label", "fragments": [(first_word, last_word)], "score"}``."""
        from bertkit.tasks.spans import merge_span_predictions

        return merge_span_predictions(ds.rows, model.head.decode_entities(outputs), len(ds.items))

    @staticmethod
    def _key(label: str, frags: Sequence[Sequence[int]]) -> tuple[Any, ...]:
        return (label, tuple((int(a), int(b)) for a, b in frags))

    def score(self, model: Any, items: Sequence[Any], preds: Sequence[Any]) -> dict[str, float]:
        """Exact entity match (type and every fragment's word span) precision / recall / F1, overall and per type."""
        from bertkit.metrics import span_metrics
        from bertkit.tasks.spans import word_fragments

        gold = [{self._key(e.label, word_fragments(d, e)) for e in d.entities} for d in items]
        pred = [{self._key(e["label"], e["fragments"]) for e in p} for p in preds]
        out = span_metrics(gold, pred)
        for label in sorted({k[0] for g in gold for k in g}):
            per = span_metrics(
                [{k for k in g if k[0] == label} for g in gold],
                [{k for k in p if k[0] == label} for p in pred],
            )
            out[f"{label}_f1"] = per["f1"]
            out[f"{label}_support"] = float(sum(k[0] == label for g in gold for k in g))
        return out

    def write(
        self, path: Path, items: Sequence[Any], preds: Sequence[Any], proba: bool = False
    ) -> list[Path]:
        from bertkit.fileio import write_text_atomic
        from bertkit.tasks.ner import _entity_json, write_ner
        from bertkit.tasks.spans import entities_to_chars
        from bertkit.tasks.tags import spans_to_tags

        if items and items[0].fmt == "jsonl_spans":
            lines = []
            for doc, ents in zip(items, preds):
                chars = entities_to_chars(doc, ents)
                recs = [
                    {**_entity_json(c, doc.text), "score": round(float(e["score"]), 4)}
                    for c, e in zip(chars, ents)
                ]
                lines.append(json.dumps({**doc.meta, "text": doc.text, "entities": recs}, ensure_ascii=False))
            write_text_atomic(path, "\n".join(lines) + "\n")
            return [path]
        tags = []  # one tag per word: contiguous entities, the best-scoring first, overlaps dropped
        for doc, ents in zip(items, preds):
            taken = np.zeros(len(doc.tokens), dtype=bool)
            spans = []
            for e in sorted(ents, key=lambda e: -e["score"]):
                if len(e["fragments"]) == 1:
                    a, b = e["fragments"][0]
                    if not taken[a : b + 1].any():
                        taken[a : b + 1] = True
                        spans.append((a, b + 1, e["label"]))
            tags.append(spans_to_tags(len(doc.tokens), sorted(spans), _data_scheme(items, self.scheme)))
        write_ner(path, items, tags)
        return [path]

    def combine(self, model: Any, fold_preds: list[list[Any]]) -> list[Any]:
        """Entities predicted by at least half of the folds (mean score)."""
        need = (len(fold_preds) + 1) // 2
        out = []
        for per_doc in zip(*fold_preds):
            found: dict[tuple[Any, ...], list[float]] = {}
            for ents in per_doc:
                for e in ents:
                    found.setdefault(self._key(e["label"], e["fragments"]), []).append(float(e["score"]))
            out.append(
                [
                    {"label": k[0], "fragments": list(k[1]), "score": float(np.mean(v))}
                    for k, v in sorted(found.items(), key=lambda kv: kv[0][1])
                    if len(v) >= need
                ]
            )
        return out


NER_RUNNER = register_runner(make_runner("ner", ("ner", "span"), TokenPipeline, detect_ner, priority=20))
