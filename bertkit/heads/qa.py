"""Extractive question answering head: start/end logits over the tokens of question+context features."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bertkit.config import HeadConfig, PoolingType
from bertkit.heads.base import BaseHead, register_head
from bertkit.heads.span import TargetDict


def _positions(targets: Any) -> tuple[Any, Any]:
    """``(start, end)`` from a dict with ``start_positions``/``end_positions`` or a ``[B, 2]`` array/tensor."""
    if isinstance(targets, dict):
        return targets["start_positions"], targets["end_positions"]
    return targets[:, 0], targets[:, 1]


def best_spans(
    start_logits: np.ndarray, end_logits: np.ndarray, max_answer_length: int = 30
) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``(start, end)`` maximising ``start + end`` with ``start <= end < start + max_answer_length``.

    Args:
        start_logits: ``[N, T]``.
        end_logits: ``[N, T]``.
        max_answer_length: Longest span in tokens.

    Returns:
        ``(start [N], end [N])`` token indices.
    """
    s = np.asarray(start_logits, dtype=np.float64)
    e = np.asarray(end_logits, dtype=np.float64)
    t = s.shape[1]
    i = np.arange(t)
    ok = (i[None, :] >= i[:, None]) & (i[None, :] - i[:, None] < max_answer_length)  # [T, T]
    flat = np.zeros(len(s), dtype=np.int64)
    for a in range(0, len(s), 32):  # chunks keep the [n, T, T] score grid small
        score = np.where(ok[None], s[a : a + 32, :, None] + e[a : a + 32, None, :], -np.inf)  # [n, T, T]
        flat[a : a + 32] = score.reshape(len(score), -1).argmax(1)
    return flat // t, flat % t


@register_head(
    "question_answering",
    competition_types=["question_answering", "extractive_qa", "qa", "squad"],
    priority=10,
    description="Extractive QA: start/end logits, SQuAD n-best decoding, tuned v2 no-answer threshold.",
)
class QuestionAnsweringHead(BaseHead):
    """Extractive QA over features built by :func:`bertkit.tasks.qa.prepare_qa_features`.

    Outputs: ``start_logits [B, T]`` and ``end_logits [B, T]`` (padding set to -10000) and ``logits
    [B, T, 2]``. Targets: ``{"start_positions": [B], "end_positions": [B]}`` (a dict, or a ``[B, 2]`` tensor);
    unanswerable features point both at the ``[CLS]`` index. The SQuAD v2 null-score threshold is a buffer
    (``null_threshold``) tuned on validation and saved with the model; answers as text come from
    :func:`bertkit.tasks.qa.postprocess_qa_predictions`. ``extra``: ``max_answer_length`` (default 30).
    """

    task = "qa"
    level = "token"
    default_pooling = PoolingType.NONE.value
    null_threshold: torch.Tensor

    def __init__(self, config: HeadConfig) -> None:
        config.pooling_type = PoolingType.NONE.value
        super().__init__(config)

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        return {"num_labels": 2}

    @staticmethod
    def default_output_size(config: HeadConfig) -> int:
        return 2

    def example_targets(self, batch_size: int, seq_len: int, generator: torch.Generator) -> Any:
        start = torch.randint(0, seq_len, (batch_size,), generator=generator)
        width = torch.randint(0, 3, (batch_size,), generator=generator)
        return TargetDict(start_positions=start, end_positions=(start + width).clamp(max=seq_len - 1))

    def _build_output_layer(self) -> None:
        super()._build_output_layer()
        self.max_answer_length = int(self.config.extra.get("max_answer_length", 30))
        self.register_buffer(
            "null_threshold", torch.tensor(float(self.config.extra.get("null_threshold", 0.0)))
        )

    def forward(self, hidden_states: Any, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> dict:
        states, mask, _ = self._unpack(hidden_states, attention_mask)  # [B, T, H]
        logits = self._features_to_logits(self.projection(states)).float()  # [B, T, 2]
        if mask is not None:
            logits = logits.masked_fill(~mask.bool().unsqueeze(-1), -10000.0)
        start, end = logits.unbind(-1)
        return {"logits": logits, "start_logits": start.contiguous(), "end_logits": end.contiguous()}

    def compute_loss(self, outputs: dict[str, torch.Tensor], targets: Any) -> torch.Tensor:
        """Mean of the start and end cross-entropies; positions outside ``[0, T)`` are ignored."""
        start_t, end_t = _positions(targets)
        t = outputs["start_logits"].size(1)
        losses = []
        for key, pos in (("start_logits", start_t), ("end_logits", end_t)):
            pos = pos.long().to(outputs[key].device)
            pos = torch.where((pos >= 0) & (pos < t), pos, torch.full_like(pos, -100))
            if (pos != -100).any():
                losses.append(F.cross_entropy(outputs[key].float(), pos, ignore_index=-100))
            else:
                losses.append(outputs[key].sum() * 0.0)
        return (losses[0] + losses[1]) / 2

    def compute_metrics(self, outputs: dict[str, np.ndarray], targets: Any) -> dict[str, float]:
        """Feature-level metrics from token positions: start/end accuracy, exact span match, token-overlap F1.

        The official SQuAD exact match / F1 on answer text need the examples: use
        :func:`bertkit.tasks.qa.postprocess_qa_predictions` and :func:`bertkit.metrics.squad_metrics`.
        """
        gs, ge = (np.asarray(x).astype(int) for x in _positions(targets))
        ps, pe = best_spans(outputs["start_logits"], outputs["end_logits"], self.max_answer_length)
        inter = np.clip(np.minimum(pe, ge) - np.maximum(ps, gs) + 1, 0, None)
        p_len, g_len = pe - ps + 1, ge - gs + 1
        f1 = np.where(inter > 0, 2 * inter / (p_len + g_len), 0.0)
        return {
            "start_accuracy": float(np.mean(ps == gs)),
            "end_accuracy": float(np.mean(pe == ge)),
            "exact_match": float(np.mean((ps == gs) & (pe == ge))),
            "span_f1": float(np.mean(f1)),
        }

    def primary_metric(self) -> tuple[str, str]:
        return "span_f1", "max"

    def set_null_threshold(self, value: float) -> None:
        """Store the SQuAD v2 threshold (from :func:`bertkit.tasks.qa.tune_null_threshold`) in the model."""
        self.null_threshold.fill_(float(value))

    def format_predictions(self, outputs: dict[str, np.ndarray], proba: bool = False) -> dict[str, Any]:
        """Best token span per feature (``start``/``end`` token indices); text needs the post-processing."""
        s, e = best_spans(outputs["start_logits"], outputs["end_logits"], self.max_answer_length)
        return {"start": s.tolist(), "end": e.tolist()}
