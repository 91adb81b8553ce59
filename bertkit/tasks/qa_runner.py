"""The extractive QA runner: SQuAD v1.1/v2.0 JSON or flat JSONL, from the CLI or Python.

``bertkit train train.json --valid dev.json -o runs/qa --max-length 384`` picks this runner for SQuAD JSON
(``{"data": [{"paragraphs": [{"context", "qas"}]}]}``) and JSONL records with ``question`` + ``context``.
Features follow the Hugging Face recipe (question + context windows with ``doc_stride`` overlap); answers come
from the n-best post-processing. Task options (``--set model.head_options.extra.X=...``, saved with the head):
``doc_stride`` (default ``min(128, max_length // 2)``), ``n_best`` (20), ``max_answer_length`` (30 tokens).
SQuAD v2 data (unanswerable questions) turns on the no-answer threshold, tuned on validation after training.

``metrics.json``: ``exact_match`` and ``f1`` on the 0-100 SQuAD scale (plus ``loss``). Predictions: SQuAD
``{id: answer}`` JSON and ``<name>_nbest.json`` with the n-best candidates and their probabilities.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bertkit.errors import DataError
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
from bertkit.tasks.qa import read_qa

_SQUAD_HEAD = re.compile(r'"(paragraphs|qas)"\s*:')


def detect_qa(path: Path) -> bool:
    """SQuAD JSON (``data`` → ``paragraphs`` → ``qas``) or JSONL records with ``question`` and ``context``."""
    suffix = path.suffix.lower()
    if not path.is_file():
        return False
    if suffix == ".json":
        try:
            with path.open(encoding="utf-8") as fh:
                head = fh.read(1 << 16)
        except (OSError, UnicodeDecodeError):
            return False
        return '"data"' in head and bool(_SQUAD_HEAD.search(head))
    if suffix in (".jsonl", ".ndjson"):
        rec = first_json_record(path)
        return isinstance(rec, dict) and "question" in rec and "context" in rec
    return False


def nbest_path(path: Path) -> Path:
    """Where the n-best JSON goes next to an answers file: ``pred.json`` → ``pred_nbest.json``."""
    return path.with_name(f"{path.stem}_nbest{path.suffix or '.json'}")


class QAPipeline(TaskPipeline):
    """Extractive QA with the ``question_answering`` head."""

    runner = "qa"
    collate_mode = "qa"
    label_keys = ("start_positions", "end_positions")
    best_metric = "f1"

    @property
    def doc_stride(self) -> int:
        return int(self.settings.get("doc_stride", min(128, self.max_length // 2)))

    @property
    def version_2(self) -> bool:
        return bool(self.settings.get("version_2", False))

    def read(self, path: str | Path) -> list[Any]:
        return read_qa(path)

    def is_labelled(self, items: Sequence[Any]) -> bool:
        """Labelled when some question has an answer (a file without any answers is prediction input)."""
        return any(ex.answers for ex in items)

    def build_model(self, cfg: Any, tokenizer: Any, train: Sequence[Any], valid: Sequence[Any]) -> Any:
        extra = {
            **self.settings,
            "doc_stride": self.doc_stride,
            "n_best": int(self.settings.get("n_best", 20)),
            "max_answer_length": int(self.settings.get("max_answer_length", 30)),
            "version_2": bool(self.settings.get("version_2", any(ex.is_impossible for ex in train))),
        }
        self.settings.update(extra)
        return create_task_model(
            cfg, tokenizer, "question_answering", ["start", "end"], extra, self.metadata()
        )

    def dataset(self, model: Any, items: Sequence[Any], labelled: bool) -> TaskDataset:
        from bertkit.tasks.qa import prepare_qa_features

        if self.doc_stride >= self.max_length:
            raise DataError(f"doc_stride={self.doc_stride} must be smaller than max_length={self.max_length}")
        try:
            feats = prepare_qa_features(
                model.tokenizer, items, self.max_length, self.doc_stride, padding=False
            )
        except Exception as exc:  # the tokenizer rejects a stride too large for the question length
            if "stride" not in str(exc):
                raise
            raise DataError(
                f"doc_stride={self.doc_stride} is too large for max_length={self.max_length} with "
                "these questions; lower model.head_options.extra.doc_stride or raise --max-length"
            ) from None
        return TaskDataset(feats, items, labelled, self.label_keys)

    def _postprocess(
        self, model: Any, ds: TaskDataset, outputs: dict[str, np.ndarray], threshold: float | None
    ) -> tuple[dict[str, str], dict[str, list[dict[str, Any]]], dict[str, float]]:
        from bertkit.tasks.qa import postprocess_qa_predictions

        widths = [len(r["input_ids"]) for r in ds.rows]  # drop the padding added across batches
        starts = [row[:w] for row, w in zip(outputs["start_logits"], widths)]
        ends = [row[:w] for row, w in zip(outputs["end_logits"], widths)]
        return postprocess_qa_predictions(
            ds.items,
            ds.rows,
            starts,
            ends,
            n_best=int(self.settings.get("n_best", 20)),
            max_answer_length=int(self.settings.get("max_answer_length", 30)),
            null_threshold=threshold,
        )

    def decode(self, model: Any, ds: TaskDataset, outputs: dict[str, np.ndarray]) -> list[Any]:
        """Per question: ``{"id", "answer", "nbest", "null_diff"}``."""
        threshold = float(model.head.null_threshold) if self.version_2 else None
        answers, nbest, diffs = self._postprocess(model, ds, outputs, threshold)
        return [
            {"id": ex.id, "answer": answers[ex.id], "nbest": nbest[ex.id], "null_diff": diffs[ex.id]}
            for ex in ds.items
        ]

    def score(self, model: Any, items: Sequence[Any], preds: Sequence[Any]) -> dict[str, float]:
        """Official SQuAD exact match / F1 (0-100) over the questions, plus the share answered."""
        from bertkit.metrics import squad_metrics

        refs = {ex.id: ex.answer_texts for ex in items}
        out = squad_metrics({p["id"]: p["answer"] for p in preds}, refs)
        out["has_answer_fraction"] = float(np.mean([bool(p["answer"]) for p in preds])) if preds else 0.0
        return out

    def write(
        self, path: Path, items: Sequence[Any], preds: Sequence[Any], proba: bool = False
    ) -> list[Path]:
        from bertkit.tasks.qa import write_nbest, write_qa_predictions

        write_qa_predictions(path, {p["id"]: p["answer"] for p in preds})
        write_nbest(nbest_path(path), {p["id"]: p["nbest"] for p in preds})
        return [path, nbest_path(path)]

    def output_suffix(self, source: str | Path) -> str:
        return ".json"

    def combine(self, model: Any, fold_preds: list[list[Any]]) -> list[Any]:
        """Per question, the answer text with the highest summed n-best probability over the folds."""
        out = []
        for per_q in zip(*fold_preds):
            mass: dict[str, float] = {}
            for p in per_q:
                for cand in p["nbest"]:
                    mass[cand["text"]] = mass.get(cand["text"], 0.0) + cand["probability"] / len(per_q)
            ranked = sorted(mass.items(), key=lambda kv: -kv[1])
            answer = ranked[0][0] if ranked else ""
            if self.version_2 and np.mean([not p["answer"] for p in per_q]) > 0.5:
                answer = ""
            out.append(
                {
                    "id": per_q[0]["id"],
                    "answer": answer,
                    "null_diff": float(np.mean([p["null_diff"] for p in per_q])),
                    "nbest": [{"text": t, "probability": m} for t, m in ranked[:20]],
                }
            )
        return out

    def default_groups(self, items: Sequence[Any]) -> list[str] | None:
        """Questions on one context stay in one fold (no context leaks between folds)."""
        return [ex.context for ex in items]

    def group_of(self, item: Any, column: str) -> str:
        if column not in ("title", "context", "question", "id"):
            raise DataError(f"group column '{column}' is not a QA field; use title or context")
        return str(getattr(item, column))

    def finish(self, model: Any, trainer: Any, valid: TaskDataset | None) -> dict[str, float]:
        """SQuAD v2: tune the no-answer threshold on validation and store it in the head."""
        from bertkit.tasks.qa import tune_null_threshold

        if not self.version_2 or valid is None:
            return {}
        outputs = trainer.predict(valid)
        outputs.pop("loss", None)
        answers, _, diffs = self._postprocess(model, valid, outputs, None)
        threshold, res = tune_null_threshold(valid.items, answers, diffs)
        model.head.set_null_threshold(threshold)
        return {"null_threshold": float(threshold), **{f"tuned_{k}": float(v) for k, v in res.items()}}

    def profile(self, items: Sequence[Any], tokenizer: Any, source: str) -> TaskProfile:
        """Questions, contexts, answer lengths (characters, words, tokens) and context / question lengths."""
        from bertkit.tasks.qa import prepare_qa_features

        contexts = sorted({ex.context for ex in items})

        def tok(texts: Sequence[str]) -> list[int]:
            if not texts:
                return []
            return [
                len(x) for x in tokenizer(list(texts), add_special_tokens=False, verbose=False)["input_ids"]
            ]

        answers = [a["text"] for ex in items for a in ex.answers]
        ctx_len, q_len = tok(contexts), tok([ex.question for ex in items])
        ctx_by_text = dict(zip(contexts, ctx_len))
        pair_len = [q + ctx_by_text[ex.context] + 3 for ex, q in zip(items, q_len)]
        stride = min(self.doc_stride, max(0, self.max_length // 2))
        feats = prepare_qa_features(tokenizer, items, self.max_length, stride, padding=False) if items else []
        per_q = Counter(int(f["example_index"]) for f in feats)
        stats: dict[str, Any] = {
            "questions": len(items),
            "contexts": len(contexts),
            "titles": len({ex.title for ex in items if ex.title}),
            "unanswerable": sum(ex.is_impossible for ex in items),
            "answers_per_question": length_stats([len(ex.answers) for ex in items]),
            "answer_length_chars": length_stats([len(a) for a in answers]),
            "answer_length_words": length_stats([len(a.split()) for a in answers]),
            "answer_length_tokens": length_stats(tok(answers)),
            "question_length_tokens": length_stats(q_len),
            "context_length_tokens": length_stats(ctx_len),
            "features_per_question": length_stats([per_q.get(i, 0) for i in range(len(items))]),
            "questions_over_max_length": sum(n > self.max_length for n in pair_len),
            "recommended_max_length": recommend_max_length(pair_len, cap=384),
        }
        notes = []
        if stats["questions_over_max_length"]:
            notes.append(
                f"{stats['questions_over_max_length']} question+context pairs exceed max_length="
                f"{self.max_length}; their contexts are split into windows (doc_stride {stride})"
            )
        if stats["unanswerable"]:
            notes.append("unanswerable questions (SQuAD v2): a no-answer threshold is tuned on validation")
        return TaskProfile("qa", source, stats, notes)


QA_RUNNER = register_runner(make_runner("qa", ("qa",), QAPipeline, detect_qa, priority=20))
