"""The relation extraction runner: sentences with ``<e1>..</e1>`` / ``<e2>..</e2>`` markers, CLI or Python.

``bertkit train train.csv --test test.csv -o runs/re`` picks this runner for CSV/TSV/JSONL whose text holds
both entity markers (or JSONL with ``e1_start``/``e1_end``/``e2_start``/``e2_end`` offsets). The markers are
added to the tokenizer as special tokens (saved with the model) and the ``relation_extraction`` head reads
the ``<e1>``/``<e2>`` states. Options (``--set model.head_options.extra.X=...``): ``use_cls`` (also use the
sentence vector), ``no_relation_label`` (default ``Other``).

``metrics.json``: ``macro_f1`` (over the labels seen), ``accuracy``, ``macro_f1_excluding_other`` and, for
direction-aware labels such as ``Cause-Effect(e1,e2)``, ``official_macro_f1`` (the SemEval-2010 Task 8 score:
macro-F1 over the relation types without Other, a wrong direction counting as an error). Predictions are the
input file with the label column set to the prediction (``--proba`` adds ``proba_<label>`` columns).
"""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bertkit.errors import DataError
from bertkit.fileio import write_text_atomic
from bertkit.runners import register_runner
from bertkit.tasks.common import (
    TaskDataset,
    TaskPipeline,
    TaskProfile,
    first_json_record,
    length_stats,
    read_records,
    recommend_max_length,
)
from bertkit.tasks.driver import create_task_model, make_runner
from bertkit.tasks.relation import read_relations, split_direction

_OFFSETS = ("e1_start", "e1_end", "e2_start", "e2_end")


def _marked(rec: Any) -> bool:
    if not isinstance(rec, dict):
        return False
    text = rec.get("text", rec.get("sentence"))
    if isinstance(text, str) and "<e1>" in text and "<e2>" in text:
        return True
    return isinstance(text, str) and all(k in rec for k in _OFFSETS)


def detect_relation(path: Path) -> bool:
    """CSV/TSV/JSONL whose first records' text carries ``<e1>`` and ``<e2>`` (or JSONL entity offsets)."""
    suffix = path.suffix.lower()
    if not path.is_file():
        return False
    if suffix in (".jsonl", ".ndjson", ".json"):
        return _marked(first_json_record(path))
    if suffix not in (".csv", ".tsv"):
        return False
    try:
        with path.open(encoding="utf-8-sig", newline="") as fh:
            head = fh.read(1 << 16)
    except (OSError, UnicodeDecodeError):
        return False
    reader = csv.DictReader(io.StringIO(head, newline=""), delimiter="\t" if suffix == ".tsv" else ",")
    try:
        rows = [r for _, r in zip(range(5), reader)]
    except csv.Error:
        return False
    return bool(rows) and any(_marked(r) for r in rows)


def official_macro_f1(gold: Sequence[str], pred: Sequence[str], other: str = "Other") -> float:
    """SemEval-2010 Task 8 official score: macro-F1 over relation types (directions merged, ``other`` left
    out), where a prediction is correct only with the right direction."""
    types = sorted({split_direction(g)[0] for g in gold} - {other})
    f1s = []
    for t in types:
        tp = sum(g == p and split_direction(g)[0] == t for g, p in zip(gold, pred))
        n_pred = sum(split_direction(p)[0] == t for p in pred)
        n_gold = sum(split_direction(g)[0] == t for g in gold)
        prec, rec = tp / n_pred if n_pred else 0.0, tp / n_gold if n_gold else 0.0
        f1s.append(2 * prec * rec / (prec + rec) if prec + rec else 0.0)
    return float(np.mean(f1s)) if f1s else float("nan")


class RelationPipeline(TaskPipeline):
    """Relation classification between two marked entities with the ``relation_extraction`` head."""

    runner = "relation"
    collate_mode = "sequence"
    label_keys = ("labels",)
    best_metric = "macro_f1_excluding_other"

    @property
    def other(self) -> str:
        return str(self.settings.get("no_relation_label", "Other"))

    def read(self, path: str | Path) -> list[Any]:
        return read_relations(path)

    def is_labelled(self, items: Sequence[Any]) -> bool:
        return all(ex.label is not None for ex in items)

    def build_model(self, cfg: Any, tokenizer: Any, train: Sequence[Any], valid: Sequence[Any]) -> Any:
        import torch

        from bertkit.heads.relation import add_entity_markers

        labels = sorted({ex.label for ex in [*train, *valid]})
        if len(labels) < 2:
            raise DataError(f"relation extraction needs at least 2 labels; the data has only {labels}")
        extra = {
            **self.settings,
            "use_cls": bool(self.settings.get("use_cls", False)),
            "no_relation_label": self.other,
            "marker_token_ids": [0, 0],
        }
        model = create_task_model(cfg, tokenizer, "relation_extraction", labels, extra, self.metadata())
        ids = add_entity_markers(model.tokenizer, model.bert)  # adds the tokens and resizes the embeddings
        model.head.config.extra["marker_token_ids"] = ids
        model.head.marker_ids = torch.tensor(ids, dtype=torch.long)
        return model

    def dataset(self, model: Any, items: Sequence[Any], labelled: bool) -> TaskDataset:
        from bertkit.tasks.relation import tokenize_relations

        names = model.head.label_names()
        if labelled:
            unseen = sorted({ex.label for ex in items} - set(names))
            if unseen:
                raise DataError(
                    f"labels {unseen[:5]} were not seen in training; the model knows {names[:8]}..."
                )
        rows = tokenize_relations(
            model.tokenizer, items, {n: i for i, n in enumerate(names)} if labelled else None, self.max_length
        )
        return TaskDataset(rows, items, labelled, self.label_keys)

    def decode(self, model: Any, ds: TaskDataset, outputs: dict[str, np.ndarray]) -> list[Any]:
        """Per sentence: ``{"label", "probabilities", "names"}`` (``names``: the model's labels)."""
        names = model.head.label_names()
        proba = np.asarray(outputs["probabilities"], dtype=float)
        return [{"label": names[int(p.argmax())], "probabilities": p, "names": names} for p in proba]

    def score(self, model: Any, items: Sequence[Any], preds: Sequence[Any]) -> dict[str, float]:
        """Accuracy, macro / weighted F1 over the labels present, macro-F1 without Other, official score."""
        from sklearn.metrics import f1_score

        gold = [str(ex.label) for ex in items]
        pred = [p["label"] for p in preds]
        labels = sorted(set(gold) | set(pred))
        relations = [x for x in labels if x != self.other]
        f1 = lambda lab, avg: float(f1_score(gold, pred, labels=lab, average=avg, zero_division=0))  # noqa: E731
        out = {
            "accuracy": float(np.mean([g == p for g, p in zip(gold, pred)])) if gold else float("nan"),
            "macro_f1": f1(labels, "macro"),
            "weighted_f1": f1(labels, "weighted"),
            "macro_f1_excluding_other": f1(relations, "macro") if relations else float("nan"),
        }
        if any(split_direction(g)[1] for g in gold):
            out["official_macro_f1"] = official_macro_f1(gold, pred, self.other)
        per = f1_score(gold, pred, labels=labels, average=None, zero_division=0)
        out.update({f"f1_{name}": float(v) for name, v in zip(labels, per)})
        return out

    def write(
        self, path: Path, items: Sequence[Any], preds: Sequence[Any], proba: bool = False
    ) -> list[Path]:
        """The input records (same columns / fields, in item order) with the label set to the prediction."""
        import pandas as pd

        if not items:
            return []
        fields, records = read_records(items[0].source)
        rows = []
        for ex, p in zip(items, preds):
            rec = dict(records.get(ex.line, {}))
            key = "relation" if "relation" in rec and "label" not in rec else "label"
            rec[key] = p["label"]
            if proba:
                probs = {n: round(float(v), 6) for n, v in zip(p["names"], p["probabilities"])}
                if fields is None:
                    rec["probabilities"] = probs
                else:
                    rec.update({f"proba_{n}": v for n, v in probs.items()})
            rows.append(rec)
        if fields is None:
            write_text_atomic(path, "\n".join(json.dumps(r, ensure_ascii=False) for r in rows) + "\n")
        else:
            cols = fields + [c for c in rows[0] if c not in fields]
            frame = pd.DataFrame(rows, columns=cols)
            sep = "\t" if path.suffix.lower() == ".tsv" else ","
            write_text_atomic(path, frame.to_csv(index=False, sep=sep))
        return [path]

    def combine(self, model: Any, fold_preds: list[list[Any]]) -> list[Any]:
        """Mean probabilities over the folds, then arg-max."""
        names = model.head.label_names()
        out = []
        for per in zip(*fold_preds):
            p = np.mean([q["probabilities"] for q in per], axis=0)
            out.append({"label": names[int(p.argmax())], "probabilities": p, "names": names})
        return out

    def profile(self, items: Sequence[Any], tokenizer: Any, source: str) -> TaskProfile:
        """Relation type counts (with and without direction), sentence lengths and entity distances."""
        plain = [ex.text for ex in items]
        for m in ("<e1>", "</e1>", "<e2>", "</e2>"):
            plain = [t.replace(m, " ") for t in plain]
        lengths = (
            [len(x) + 6 for x in tokenizer(plain, add_special_tokens=False, verbose=False)["input_ids"]]
            if plain
            else []
        )
        gaps = []
        for ex in items:
            a, b = sorted((ex.text.index("<e1>"), ex.text.index("<e2>")))
            gaps.append(len(ex.text[a:b].split()) - 1)
        labels = [ex.label for ex in items if ex.label is not None]
        stats: dict[str, Any] = {
            "rows": len(items),
            "labelled": bool(items) and len(labels) == len(items),
            "relation_types": dict(sorted(Counter(labels).items())),
            "relations_without_direction": dict(
                sorted(Counter(split_direction(x)[0] for x in labels).items())
            ),
            "directions": dict(sorted(Counter(split_direction(x)[1] or "none" for x in labels).items())),
            "tokens_per_sentence": length_stats(lengths),
            "words_between_entities": length_stats(gaps),
            "sentences_over_max_length": sum(n > self.max_length for n in lengths),
            "recommended_max_length": recommend_max_length(lengths),
        }
        notes = []
        if stats["sentences_over_max_length"]:
            notes.append(
                f"{stats['sentences_over_max_length']} sentences exceed max_length={self.max_length}; "
                "they are cropped around the two entities"
            )
        return TaskProfile("relation", source, stats, notes)


RELATION_RUNNER = register_runner(
    make_runner("relation", ("relation",), RelationPipeline, detect_relation, 20)
)
