"""Sliding-window inference for long texts: windows of ``max_length`` tokens overlapping by ``stride``
tokens, one prediction per window, aggregated per text.

Aggregations (``training.chunk_aggregation``): ``mean`` (average of the windows' probabilities/predictions),
``max`` (per-class maximum, renormalised for single-label tasks; the maximum prediction for regression) and
``attention`` (a softmax-weighted mean: weights ``softmax(10 * confidence)`` over a text's windows, where the
confidence is the window's top probability, or its share of real tokens for regression). Training keeps
the usual head/tail/head_tail truncation; the switch is ``training.chunk_stride: N`` (> 0).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from bertkit.data.tokenize import Collator, TokenizedDataset, _special_layout
from bertkit.errors import ConfigError
from bertkit.inference.batched import predict_outputs

ATTENTION_SHARPNESS = 10.0


def chunk_features(
    tokenizer: Any, texts: list[str], max_length: int, stride: int
) -> tuple[dict[str, list[list[int]]], np.ndarray]:
    """Token windows of every text and the index of the text each window comes from.

    Args:
        tokenizer: a Hugging Face tokenizer.
        texts: the texts.
        max_length: tokens per window, special tokens included.
        stride: tokens shared by consecutive windows (``0 <= stride < max_length - specials``).

    Returns:
        (``{"input_ids": ..., "token_type_ids": ...}``, ``doc_index [n_windows]``); a text that fits gets one
        window; the last window of a long text ends at its last token.
    """
    prefix, suffix, prefix_t, suffix_t = _special_layout(tokenizer)
    budget = max_length - len(prefix) - len(suffix)
    if not 0 <= stride < budget:
        raise ConfigError(f"chunk stride {stride} must be in [0, {budget}) for max_length={max_length}")
    enc = tokenizer(
        list(texts),
        add_special_tokens=False,
        truncation=False,
        padding=False,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,
    )
    step = budget - stride
    ids: list[list[int]] = []
    doc: list[int] = []
    for d, seq in enumerate(enc["input_ids"]):
        starts = [0] if len(seq) <= budget else [*range(0, len(seq) - budget, step), len(seq) - budget]
        for s in starts:
            ids.append(prefix + list(seq[s : s + budget]) + suffix)
            doc.append(d)
    features = {"input_ids": ids}
    if "token_type_ids" in getattr(tokenizer, "model_input_names", ["token_type_ids"]):
        features["token_type_ids"] = [
            prefix_t + [0] * (len(x) - len(prefix) - len(suffix)) + suffix_t for x in ids
        ]
    return features, np.asarray(doc, dtype=np.int64)


def _segment_softmax(scores: np.ndarray, doc: np.ndarray, n_docs: int) -> np.ndarray:
    top = np.full(n_docs, -np.inf)
    np.maximum.at(top, doc, scores)
    e = np.exp(scores - top[doc])
    total = np.zeros(n_docs)
    np.add.at(total, doc, e)
    return e / total[doc]


def aggregate_windows(
    values: np.ndarray,
    doc: np.ndarray,
    n_docs: int,
    method: str,
    confidence: np.ndarray | None = None,
    renormalise: bool = False,
) -> np.ndarray:
    """Aggregate per-window ``values [W, ...]`` into per-text ``[n_docs, ...]``."""
    values = np.asarray(values, dtype=np.float64)
    shape = (n_docs, *values.shape[1:])
    if method == "max":
        out = np.full(shape, -np.inf)
        np.maximum.at(out, doc, values)
        if renormalise:
            out = out / out.sum(-1, keepdims=True)
        return out
    if method == "attention":
        if confidence is None:
            raise ConfigError("attention aggregation needs a confidence per window")
        w = _segment_softmax(ATTENTION_SHARPNESS * np.asarray(confidence, dtype=np.float64), doc, n_docs)
    elif method == "mean":
        counts = np.bincount(doc, minlength=n_docs).astype(np.float64)
        w = 1.0 / counts[doc]
    else:
        raise ConfigError(f"chunk_aggregation='{method}' is not valid; choose one of: mean, max, attention")
    out = np.zeros(shape)
    np.add.at(out, doc, values * w.reshape(-1, *([1] * (values.ndim - 1))))
    return out


def aggregate_outputs(
    model: Any, outputs: dict[str, np.ndarray], doc: np.ndarray, n_docs: int, method: str, lengths: np.ndarray
) -> dict[str, np.ndarray]:
    """Per-text outputs (``probabilities``/``predictions``) from per-window outputs of a sequence head."""
    head = model.head
    out: dict[str, np.ndarray] = {}
    if "probabilities" in outputs:
        proba = outputs["probabilities"]
        conf = proba.max(-1)
        agg = aggregate_windows(proba, doc, n_docs, method, conf, renormalise=head.task != "multilabel")
        out["probabilities"] = agg.astype(np.float32)
        if head.task == "binary":
            out["predictions"] = (agg[:, 1] >= float(head.threshold)).astype(np.int64)
        elif head.task == "multilabel":
            out["predictions"] = (agg >= head.thresholds.cpu().numpy()).astype(np.int64)
        else:
            out["predictions"] = agg.argmax(-1).astype(np.int64)
        return out
    share = lengths / np.maximum(np.bincount(doc, weights=lengths, minlength=n_docs)[doc], 1.0)
    out["predictions"] = aggregate_windows(outputs["predictions"], doc, n_docs, method, share).astype(
        np.float32
    )
    return out


@torch.no_grad()
def chunked_outputs(
    model: Any,
    texts: list[str],
    max_length: int,
    stride: int,
    method: str = "mean",
    batch_size: int = 64,
    device: torch.device | str | None = None,
) -> dict[str, np.ndarray]:
    """Sliding-window outputs for ``texts`` (per text, input order)."""
    tok = model.tokenizer
    features, doc = chunk_features(tok, texts, max_length, stride)
    ds = TokenizedDataset(features)
    side = "left" if model.bert.decoder_only else "right"
    collator = Collator.from_tokenizer(tok, padding_side=side)
    device = device or next(model.parameters()).device
    raw = predict_outputs(model, ds, collator, batch_size, torch.device(device))
    raw.pop("loss", None)
    return aggregate_outputs(model, raw, doc, len(texts), method, np.asarray(ds.lengths, dtype=np.float64))


def chunked_evaluate(
    trainer: Any, df: Any, profile: Any, cfg: Any, targets: np.ndarray | None
) -> tuple[dict[str, float], dict[str, np.ndarray]]:
    """Metrics (when ``targets`` are given) and per-text outputs of sliding-window inference on the rows of
    ``df`` (rows with an empty text must already be dropped)."""
    from bertkit.data import prepare_frame

    model = trainer.model
    prepared = prepare_frame(
        df, profile, require_labels=targets is not None, sep_token=model.tokenizer.sep_token or "[SEP]"
    )
    if prepared.texts_b is not None:
        raise ConfigError("training.chunk_stride works on single texts, not text pairs")
    tc = cfg.training
    outputs = chunked_outputs(
        model,
        prepared.texts_a,
        tc.max_length,
        tc.chunk_stride,
        tc.chunk_aggregation,
        tc.eval_batch_size,
        trainer.accelerator.device,
    )
    return (model.head.compute_metrics(outputs, targets) if targets is not None else {}), outputs
