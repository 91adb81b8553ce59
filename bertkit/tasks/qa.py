"""Extractive QA data: SQuAD readers, feature preparation (doc stride), n-best post-processing, writers.

* :func:`read_squad_json` (v1.1 and v2.0 nesting) and :func:`read_squad_jsonl` (flat HF ``squad`` layout:
  ``id, question, context, answers{text, answer_start}``) check that every ``answer_start`` points at its
  answer text in the context, reporting file and line.
* :func:`prepare_qa_features` is the standard Hugging Face recipe: question + context windows with
  ``doc_stride`` overlap, offset mappings kept for the context tokens only, and start/end token targets
  (the ``[CLS]`` index when the answer is absent from the window or the question is unanswerable).
* :func:`postprocess_qa_predictions` turns feature logits into answer text per question with n-best lists;
  with a ``null_threshold`` (SQuAD v2) it answers "" when ``null score - best span score > threshold``.
  :func:`tune_null_threshold` picks that threshold on validation data (the official v2 "best_f1" search).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bertkit.errors import DataError
from bertkit.fileio import write_json_atomic
from bertkit.metrics import squad_exact_match, squad_f1


@dataclass
class QAExample:
    """One question. ``answers`` is a list of ``{"text", "answer_start"}`` (empty when unanswerable)."""

    id: str
    question: str
    context: str
    answers: list[dict[str, Any]] = field(default_factory=list)
    is_impossible: bool = False
    title: str = ""
    source: str = ""
    line: int = 0

    @property
    def answer_texts(self) -> list[str]:
        return [a["text"] for a in self.answers]


def _check_answers(ex: QAExample, where: str) -> None:
    for ans in ex.answers:
        text, start = ans.get("text"), ans.get("answer_start")
        if not isinstance(text, str) or not isinstance(start, int) or isinstance(start, bool):
            raise DataError(
                f"{where}: question {ex.id!r} has an answer without text/integer answer_start: {ans!r}"
            )
        found = ex.context[start : start + len(text)]
        if found != text:
            raise DataError(
                f"{where}: question {ex.id!r}: answer {text[:40]!r} does not match the context at "
                f"answer_start={start} (context has {found[:40]!r}); fix answer_start"
            )


def _load_text(path: Path) -> str:
    if not path.is_file():
        raise DataError(f"data file {path} does not exist; check the path")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path} is not valid UTF-8 text (byte {exc.start}); re-save it as UTF-8") from None


def read_squad_json(path: str | os.PathLike[str]) -> list[QAExample]:
    """Read a SQuAD v1.1 / v2.0 JSON file (``{"data": [{"title", "paragraphs": [{"context", "qas"}]}]}``)."""
    path = Path(path)
    raw = _load_text(path)
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}:{exc.lineno}: invalid JSON ({exc.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DataError(f'{path}: not SQuAD JSON (expected {{"version", "data": [articles]}})')
    out: list[QAExample] = []
    for article in data["data"]:
        for para in article.get("paragraphs", []):
            context = para.get("context")
            for qa in para.get("qas", []):
                qid = str(qa.get("id", ""))
                pos = raw.find(json.dumps(qid))
                line = raw.count("\n", 0, pos) + 1 if pos >= 0 else 1
                where = f"{path}:{line}"
                if not isinstance(context, str) or not isinstance(qa.get("question"), str):
                    raise DataError(f"{where}: question {qid!r} lacks a question or context string")
                impossible = bool(qa.get("is_impossible", False))
                answers = [] if impossible else list(qa.get("answers", []))
                ex = QAExample(
                    qid,
                    qa["question"],
                    context,
                    answers,
                    impossible or not answers,
                    str(article.get("title", "")),
                    str(path),
                    line,
                )
                _check_answers(ex, where)
                out.append(ex)
    if not out:
        raise DataError(f"{path} holds no questions")
    return out


def read_squad_jsonl(path: str | os.PathLike[str]) -> list[QAExample]:
    """Read flat JSONL: ``id, question, context, answers{text: [...], answer_start: [...]}`` per line."""
    path = Path(path)
    out: list[QAExample] = []
    for n, raw in enumerate(_load_text(path).splitlines(), start=1):
        if not raw.strip():
            continue
        where = f"{path}:{n}"
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise DataError(f"{where}: invalid JSON ({exc.msg} at column {exc.colno})") from None
        missing = [k for k in ("question", "context") if not isinstance(rec.get(k), str)]
        if missing:
            raise DataError(
                f"{where}: record lacks string field(s) {missing}; expected id, question, context, answers"
            )
        ans = rec.get("answers") or {"text": [], "answer_start": []}
        if isinstance(ans, dict):
            texts, starts = list(ans.get("text", [])), list(ans.get("answer_start", []))
            if len(texts) != len(starts):
                raise DataError(
                    f"{where}: answers has {len(texts)} texts but {len(starts)} answer_start values"
                )
            answers = [{"text": t, "answer_start": s} for t, s in zip(texts, starts)]
        else:
            answers = list(ans)
        ex = QAExample(
            str(rec.get("id", n)),
            rec["question"],
            rec["context"],
            answers,
            not answers,
            str(rec.get("title", "")),
            str(path),
            n,
        )
        _check_answers(ex, where)
        out.append(ex)
    if not out:
        raise DataError(f"{path} holds no questions")
    return out


def read_qa(path: str | os.PathLike[str]) -> list[QAExample]:
    """Read SQuAD JSON (``.json``) or flat JSONL (``.jsonl``)."""
    return (
        read_squad_jsonl(path)
        if Path(path).suffix.lower() in (".jsonl", ".ndjson")
        else read_squad_json(path)
    )


def prepare_qa_features(
    tokenizer: Any,
    examples: Sequence[QAExample],
    max_length: int = 384,
    doc_stride: int = 128,
    padding: bool = True,
) -> list[dict[str, Any]]:
    """Tokenize questions with their contexts into overlapping windows (the Hugging Face SQuAD recipe).

    Args:
        tokenizer: A fast tokenizer.
        examples: The questions.
        max_length: Feature length in tokens.
        doc_stride: Overlap between consecutive context windows, in tokens.
        padding: Pad every feature to ``max_length``.

    Returns:
        One dict per feature: ``input_ids``, ``attention_mask`` (``token_type_ids``), ``offset_mapping``
        (character span per token, None outside the context), ``example_index``, ``example_id``,
        ``cls_index`` and the targets ``start_positions``/``end_positions``.
    """
    pad_right = getattr(tokenizer, "padding_side", "right") == "right"
    questions = [ex.question.lstrip() for ex in examples]
    contexts = [ex.context for ex in examples]
    enc = tokenizer(
        questions if pad_right else contexts,
        contexts if pad_right else questions,
        truncation="only_second" if pad_right else "only_first",
        max_length=max_length,
        stride=doc_stride,
        return_overflowing_tokens=True,
        return_offsets_mapping=True,
        padding="max_length" if padding else False,
    )
    ctx_seq = 1 if pad_right else 0
    cls_id = getattr(tokenizer, "cls_token_id", None)
    features = []
    for i in range(len(enc["input_ids"])):
        ex_idx = int(enc["overflow_to_sample_mapping"][i])
        ex = examples[ex_idx]
        ids = list(enc["input_ids"][i])
        seq_ids = enc.sequence_ids(i)
        offsets = [tuple(o) if s == ctx_seq else None for o, s in zip(enc["offset_mapping"][i], seq_ids)]
        if cls_id is not None and cls_id in ids:
            cls_index = ids.index(cls_id)
        else:  # no [CLS] (decoder-only tokenizers): the first real token stands in for "no answer"
            cls_index = list(enc["attention_mask"][i]).index(1)
        start_pos = end_pos = cls_index
        if ex.answers:
            a_start = int(ex.answers[0]["answer_start"])
            a_end = a_start + len(ex.answers[0]["text"])
            ctx = [k for k, o in enumerate(offsets) if o is not None]
            if ctx and offsets[ctx[0]][0] <= a_start and offsets[ctx[-1]][1] >= a_end:  # type: ignore[index]
                start_pos = next(k for k in ctx if offsets[k][1] > a_start)  # type: ignore[index]
                end_pos = next(k for k in reversed(ctx) if offsets[k][0] < a_end)  # type: ignore[index]
        feat: dict[str, Any] = {
            k: list(enc[k][i]) for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc
        }
        feat.update(
            {
                "offset_mapping": offsets,
                "example_index": ex_idx,
                "example_id": ex.id,
                "cls_index": cls_index,
                "start_positions": start_pos,
                "end_positions": end_pos,
            }
        )
        features.append(feat)
    return features


def postprocess_qa_predictions(
    examples: Sequence[QAExample],
    features: Sequence[dict[str, Any]],
    start_logits: np.ndarray | Sequence[Sequence[float]],
    end_logits: np.ndarray | Sequence[Sequence[float]],
    n_best: int = 20,
    max_answer_length: int = 30,
    null_threshold: float | None = None,
) -> tuple[dict[str, str], dict[str, list[dict[str, Any]]], dict[str, float]]:
    """Answer text per question from feature logits.

    For every question, the ``n_best`` highest-scoring start and end positions of each of its features are
    paired into spans inside the context with ``start <= end`` and at most ``max_answer_length`` tokens;
    the span score is ``start_logit + end_logit``. The null score is the smallest ``[CLS]`` score over the
    question's features (SQuAD v2).

    Args:
        examples, features: From :func:`read_qa` and :func:`prepare_qa_features`.
        start_logits, end_logits: ``[F, T]`` model outputs, one row per feature.
        n_best: Candidates kept per question.
        max_answer_length: Longest answer, in tokens.
        null_threshold: None for SQuAD v1.1 (always answer); a number for v2: answer "" when
            ``null_score - best_span_score > null_threshold``.

    Returns:
        ``(predictions {id: text}, nbest {id: [{"text", "score", "start_logit", "end_logit", "probability",
        "start", "end"}]}, null_score_diff {id: null_score - best_span_score})``.
    """
    by_example: dict[int, list[int]] = {}
    for f, feat in enumerate(features):
        by_example.setdefault(int(feat["example_index"]), []).append(f)
    predictions: dict[str, str] = {}
    nbest_out: dict[str, list[dict[str, Any]]] = {}
    diffs: dict[str, float] = {}
    for e, ex in enumerate(examples):
        cands: list[dict[str, Any]] = []
        null_score = float("inf")
        for f in by_example.get(e, []):
            s_log, e_log = np.asarray(start_logits[f], dtype=float), np.asarray(end_logits[f], dtype=float)
            offsets = features[f]["offset_mapping"]
            cls = int(features[f].get("cls_index", 0))
            null_score = min(null_score, float(s_log[cls] + e_log[cls]))
            top_s = np.argsort(s_log)[::-1][:n_best]
            top_e = np.argsort(e_log)[::-1][:n_best]
            for a in top_s:
                for b in top_e:
                    if a >= len(offsets) or b >= len(offsets) or offsets[a] is None or offsets[b] is None:
                        continue
                    if b < a or b - a + 1 > max_answer_length:
                        continue
                    c0, c1 = offsets[a][0], offsets[b][1]
                    cands.append(
                        {
                            "text": ex.context[c0:c1],
                            "score": float(s_log[a] + e_log[b]),
                            "start_logit": float(s_log[a]),
                            "end_logit": float(e_log[b]),
                            "start": int(c0),
                            "end": int(c1),
                        }
                    )
        cands = sorted(cands, key=lambda c: -c["score"])[:n_best] or [
            {"text": "", "score": 0.0, "start_logit": 0.0, "end_logit": 0.0, "start": -1, "end": -1}
        ]
        scores = np.array([c["score"] for c in cands])
        probs = np.exp(scores - scores.max())
        for c, p in zip(cands, probs / probs.sum()):
            c["probability"] = float(p)
        best = cands[0]
        diffs[ex.id] = null_score - best["score"] if np.isfinite(null_score) else float("-inf")
        answer = best["text"]
        if null_threshold is not None and diffs[ex.id] > null_threshold:
            answer = ""
        predictions[ex.id] = answer
        nbest_out[ex.id] = cands
    return predictions, nbest_out, diffs


def tune_null_threshold(
    examples: Sequence[QAExample],
    predictions: dict[str, str],
    null_score_diff: dict[str, float],
    metric: str = "f1",
) -> tuple[float, dict[str, float]]:
    """The SQuAD v2 no-answer threshold maximising F1 (or exact match) on validation data.

    ``predictions`` are the best non-null answers (``postprocess_qa_predictions`` with
    ``null_threshold=None``); answering "" where ``null_score_diff > threshold`` is scored for every
    candidate threshold, as in the official evaluation script's ``find_best_thresh``.

    Returns:
        ``(threshold, {"f1": ..., "exact_match": ..., "has_answer_fraction": ...})`` (scores on 0-100).
    """
    if not examples:
        return 0.0, {"f1": float("nan"), "exact_match": float("nan")}
    score_fn = squad_f1 if metric == "f1" else squad_exact_match
    gain_answer = {ex.id: score_fn(predictions.get(ex.id, ""), ex.answer_texts) for ex in examples}
    gain_null = {ex.id: float(not ex.answers) for ex in examples}
    order = sorted(examples, key=lambda ex: null_score_diff.get(ex.id, 0.0))
    # threshold below every diff: answer "" everywhere; then flip questions to answering one by one
    current = sum(gain_null.values())
    best, best_thr = current, min(null_score_diff.get(ex.id, 0.0) for ex in examples) - 1.0
    for ex in order:
        current += gain_answer[ex.id] - gain_null[ex.id]
        if current > best:
            best, best_thr = current, float(null_score_diff.get(ex.id, 0.0))
    final = {
        ex.id: ("" if null_score_diff.get(ex.id, 0.0) > best_thr else predictions.get(ex.id, ""))
        for ex in examples
    }
    n = len(examples)
    return best_thr, {
        "f1": 100.0 * sum(squad_f1(final[ex.id], ex.answer_texts) for ex in examples) / n,
        "exact_match": 100.0 * sum(squad_exact_match(final[ex.id], ex.answer_texts) for ex in examples) / n,
        "has_answer_fraction": sum(bool(final[ex.id]) for ex in examples) / n,
    }


def write_qa_predictions(path: str | os.PathLike[str], predictions: dict[str, str]) -> None:
    """Write SQuAD-style ``{id: answer}`` JSON (what the official evaluation script reads)."""
    write_json_atomic(path, dict(predictions))


def write_nbest(path: str | os.PathLike[str], nbest: dict[str, list[dict[str, Any]]]) -> None:
    """Write the n-best candidates per question as JSON ``{id: [{"text", "probability", ...}]}``."""
    write_json_atomic(path, dict(nbest))
