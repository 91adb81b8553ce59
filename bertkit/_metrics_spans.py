"""Span, sequence and ranking metrics; import them from :mod:`bertkit.metrics`.

* SQuAD exact match / F1, copied from the official SQuAD v2.0 evaluation script (which reduces to v1.1
  when every question has an answer): lower-case, drop punctuation, drop the articles a/an/the, collapse
  whitespace; an empty gold list or gold answers that normalise to "" mean "no answer", which only the
  empty prediction matches.
* Entity-level NER metrics via seqeval.
* Exact-match span precision / recall / F1 over ``(start, end, type)`` tuples.
* Per-query ranking metrics (MRR, MAP, nDCG@k via sklearn, recall@k).
"""

from __future__ import annotations

import collections
import re
import string
import warnings
from collections.abc import Hashable, Iterable, Mapping, Sequence

import numpy as np
from sklearn.metrics import ndcg_score

from bertkit.errors import ConfigError, DataError

NAN = float("nan")

# ------------------------------------------------------------------------------------------------- SQuAD
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = set(string.punctuation)


def squad_normalize_answer(s: str) -> str:
    """Normalise an answer as the official SQuAD script does.

    Lower-case, remove punctuation, remove the articles a/an/the, collapse whitespace.

    Args:
        s: Raw answer text.

    Returns:
        The normalised text, e.g. ``"The  Cat!"`` -> ``"cat"``.
    """
    s = s.lower()
    s = "".join(ch for ch in s if ch not in _PUNCTUATION)
    s = _ARTICLES.sub(" ", s)
    return " ".join(s.split())


def _tokens(s: str) -> list[str]:
    return squad_normalize_answer(s).split() if s else []


def _gold_list(ground_truths: str | Iterable[str]) -> list[str]:
    """Gold answers as in SQuAD v2.0: drop those normalising to "", and [""] means unanswerable."""
    golds = [ground_truths] if isinstance(ground_truths, str) else list(ground_truths)
    golds = [g for g in golds if squad_normalize_answer(g)]
    return golds or [""]


def _exact(gold: str, pred: str) -> int:
    return int(squad_normalize_answer(gold) == squad_normalize_answer(pred))


def _f1(gold: str, pred: str) -> float:
    gold_toks, pred_toks = _tokens(gold), _tokens(pred)
    if not gold_toks or not pred_toks:  # no-answer on either side: 1 if both are no-answer
        return float(gold_toks == pred_toks)
    num_same = sum((collections.Counter(gold_toks) & collections.Counter(pred_toks)).values())
    if num_same == 0:
        return 0.0
    precision = num_same / len(pred_toks)
    recall = num_same / len(gold_toks)
    return 2 * precision * recall / (precision + recall)


def squad_exact_match(prediction: str, ground_truths: str | Iterable[str]) -> float:
    """Max exact match (0 or 1) of ``prediction`` against any gold answer.

    Args:
        prediction: Predicted answer text ("" = no answer).
        ground_truths: One gold answer or a list; empty list / only-empty answers = unanswerable.

    Returns:
        1.0 or 0.0.
    """
    return float(max(_exact(g, prediction) for g in _gold_list(ground_truths)))


def squad_f1(prediction: str, ground_truths: str | Iterable[str]) -> float:
    """Max token-level F1 (0..1) of ``prediction`` against any gold answer.

    Args:
        prediction: Predicted answer text ("" = no answer).
        ground_truths: One gold answer or a list; empty list / only-empty answers = unanswerable.

    Returns:
        F1 in [0, 1].
    """
    return float(max(_f1(g, prediction) for g in _gold_list(ground_truths)))


def squad_metrics(
    predictions: Mapping[str, str], references: Mapping[str, Sequence[str]]
) -> dict[str, float]:
    """Corpus exact match and F1 on the 0-100 scale.

    Args:
        predictions: question id -> predicted answer text.
        references: question id -> list of gold answers (empty list for unanswerable questions).

    Returns:
        ``{"exact_match", "f1"}`` averaged over every id in ``references``; an id without a prediction
        scores 0 (as in the v1.1 script). ``nan`` if ``references`` is empty.
    """
    if not references:
        return {"exact_match": NAN, "f1": NAN}
    em = f1 = 0.0
    for qid, golds in references.items():
        if qid not in predictions:
            continue
        em += squad_exact_match(predictions[qid], golds)
        f1 += squad_f1(predictions[qid], golds)
    n = len(references)
    return {"exact_match": 100.0 * em / n, "f1": 100.0 * f1 / n}


# --------------------------------------------------------------------------------------------------- NER
_SCHEMES = ("IOB1", "IOB2", "IOE1", "IOE2", "IOBES", "BILOU")


def entity_metrics(
    true_tags: list[list[str]],
    pred_tags: list[list[str]],
    mode: str | None = None,
    scheme: str = "IOB2",
) -> dict[str, object]:
    """Entity-level micro precision / recall / F1 with seqeval.

    Args:
        true_tags: Per sentence, the gold tag of each word (e.g. ``["B-PER", "I-PER", "O"]``).
        pred_tags: Same shape, predicted tags.
        mode: ``None`` for conlleval-style lenient chunking, ``"strict"`` for exact scheme matching.
        scheme: Tagging scheme used in strict mode: IOB1, IOB2, IOE1, IOE2, IOBES or BILOU.

    Returns:
        ``f1, precision, recall`` (floats, zero_division=0) and ``report``: entity type ->
        ``{"precision", "recall", "f1", "support"}``.
    """
    from seqeval import metrics as sq
    from seqeval import scheme as sq_scheme

    if mode not in (None, "strict"):
        raise ConfigError(f"unknown seqeval mode {mode!r}; use None (lenient) or 'strict'.")
    if scheme not in _SCHEMES:
        raise ConfigError(f"unknown tagging scheme {scheme!r}; use one of {list(_SCHEMES)}.")
    if len(true_tags) != len(pred_tags) or any(len(t) != len(p) for t, p in zip(true_tags, pred_tags)):
        raise DataError(
            "true_tags and pred_tags must have the same sentences and lengths; align them per word."
        )
    kwargs: dict[str, object] = {"mode": mode, "zero_division": 0}
    if mode == "strict":
        kwargs["scheme"] = getattr(sq_scheme, scheme)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out: dict[str, object] = {
            "f1": float(sq.f1_score(true_tags, pred_tags, **kwargs)),
            "precision": float(sq.precision_score(true_tags, pred_tags, **kwargs)),
            "recall": float(sq.recall_score(true_tags, pred_tags, **kwargs)),
        }
        has_entities = any(t != "O" for sent in list(true_tags) + list(pred_tags) for t in sent)
        raw = (
            sq.classification_report(true_tags, pred_tags, output_dict=True, **kwargs) if has_entities else {}
        )
    out["report"] = {
        name: {
            "precision": float(v["precision"]),
            "recall": float(v["recall"]),
            "f1": float(v["f1-score"]),
            "support": int(v["support"]),
        }
        for name, v in raw.items()
        if not name.endswith(" avg")
    }
    return out


def span_metrics(
    true_spans: Sequence[set[tuple[Hashable, ...]]], pred_spans: Sequence[set[tuple[Hashable, ...]]]
) -> dict[str, float]:
    """Exact-match micro precision / recall / F1 over span tuples such as ``(start, end, type)``.

    Args:
        true_spans: Per example, the set of gold spans.
        pred_spans: Per example, the set of predicted spans.

    Returns:
        ``{"precision", "recall", "f1"}``; 0 where a denominator is 0.
    """
    if len(true_spans) != len(pred_spans):
        raise DataError(
            f"{len(true_spans)} gold vs {len(pred_spans)} predicted examples; pass one set per example."
        )
    tp = n_true = n_pred = 0
    for gold, pred in zip(true_spans, pred_spans):
        gold, pred = set(gold), set(pred)
        tp += len(gold & pred)
        n_true += len(gold)
        n_pred += len(pred)
    precision = tp / n_pred if n_pred else 0.0
    recall = tp / n_true if n_true else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}


# ---------------------------------------------------------------------------------------------- ranking
def ranking_metrics(
    group_ids: np.ndarray,
    labels: np.ndarray,
    scores: np.ndarray,
    ks: Sequence[int] = (1, 5, 10),
) -> dict[str, float]:
    """Per-query ranking metrics, averaged over queries that have at least one relevant document.

    A document is relevant when its label is > 0; graded labels are used as gains by nDCG. Documents are
    ranked by descending score; ties keep input order for MRR / MAP / recall@k (nDCG averages over ties,
    as sklearn does).

    Args:
        group_ids: [N] query id of each (query, document) row.
        labels: [N] 0/1 or graded (>= 0) relevance.
        scores: [N] model scores, higher = more relevant.
        ks: Cut-offs for ``ndcg@k`` and ``recall@k``.

    Returns:
        ``mrr``, ``map`` (mean average precision, IR definition), ``ndcg@k`` (sklearn ``ndcg_score`` per
        query), ``recall@k`` (relevant found in top k / all relevant), plus ``num_queries`` (all distinct
        queries) and ``num_queries_without_positive`` (skipped queries). Metrics are ``nan`` if no query
        has a positive.
    """
    group_ids = np.asarray(group_ids).ravel()
    labels = np.asarray(labels, dtype=np.float64).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if not (group_ids.shape == labels.shape == scores.shape):
        raise DataError(
            f"group_ids {group_ids.shape}, labels {labels.shape}, scores {scores.shape} must all be [N]."
        )
    if np.any(labels < 0):
        raise DataError("ranking labels must be >= 0 (0 = not relevant); shift or clip negative grades.")
    ks = tuple(int(k) for k in ks)
    per: dict[str, list[float]] = {"mrr": [], "map": []}
    for k in ks:
        per[f"ndcg@{k}"], per[f"recall@{k}"] = [], []
    uniq, inverse = np.unique(group_ids, return_inverse=True)
    skipped = 0
    for g in range(len(uniq)):
        idx = np.flatnonzero(inverse == g)
        rel, sc = labels[idx], scores[idx]  # [n_g]
        relevant = rel > 0
        n_rel = int(relevant.sum())
        if n_rel == 0:
            skipped += 1
            continue
        order = np.argsort(-sc, kind="stable")
        hits = relevant[order]  # [n_g] relevance in ranked order
        ranks = np.flatnonzero(hits) + 1  # 1-based ranks of relevant docs
        per["mrr"].append(1.0 / ranks[0])
        per["map"].append(float(np.mean(np.arange(1, n_rel + 1) / ranks)))
        for k in ks:
            if len(idx) > 1:
                per[f"ndcg@{k}"].append(float(ndcg_score(rel[None, :], sc[None, :], k=k)))
            else:  # sklearn refuses single-document queries; one relevant document is a perfect ranking
                per[f"ndcg@{k}"].append(1.0)
            per[f"recall@{k}"].append(float(hits[:k].sum() / n_rel))
    out = {name: float(np.mean(v)) if v else NAN for name, v in per.items()}
    out["num_queries"] = float(len(uniq))
    out["num_queries_without_positive"] = float(skipped)
    return out
