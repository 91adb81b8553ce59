"""Learning-to-rank heads on query-grouped rows: a cross-encoder reranker and a bi-encoder retriever.

* :class:`RankingHead` (``ranking``): one score per ``[CLS] query [SEP] candidate [SEP]`` input.
* :class:`BiEncoderRankingHead` (``ranking_bi_encoder``): scaled cosine of separately encoded query and
  candidate (see :class:`~bertkit.heads.pairs.BiEncoderHead`).

Both share the data format (``group_ids`` [B] = a query id per row, relevance labels >= 0), the objectives
(``loss_type``: ``pointwise`` BCE, ``ranknet`` / ``margin`` pairwise, ``listwise`` softmax over the query's
candidates) and the metrics (MRR, MAP, NDCG@k, recall@k per query, averaged).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bertkit import losses, metrics
from bertkit.config import HeadConfig, check_choice
from bertkit.heads.base import BaseHead, register_head
from bertkit.heads.pairs import _RANKS, BiEncoderHead, _pairs, label_retrieval_metrics

RANKING_LOSSES = ("pointwise", "ranknet", "margin", "listwise")
_RANKING_ALIASES = {"bce": "pointwise", "pairwise": "ranknet"}


def ranking_loss(
    kind: str, scores: torch.Tensor, labels: torch.Tensor, group_ids: torch.Tensor | None, margin: float = 1.0
) -> torch.Tensor:
    """One ranking objective over [N] scores of query-grouped rows (no ``group_ids``: one group)."""
    scores = scores.reshape(-1).float()
    labels = labels.reshape(-1).to(scores.device).float()
    if group_ids is None:
        group_ids = torch.zeros_like(labels, dtype=torch.long)
    if kind == "pointwise":
        return F.binary_cross_entropy_with_logits(scores, labels.clamp(0.0, 1.0))
    if kind == "ranknet":
        return losses.ranknet_loss(scores, labels, group_ids)
    if kind == "margin":
        return losses.pairwise_margin_loss(scores, labels, group_ids, margin=margin)
    return losses.listwise_softmax_loss(scores, labels, group_ids)


def _ranking_options(head: BaseHead) -> tuple[str, float]:
    name = str(head.config.loss_type or "listwise").lower()
    kind = check_choice("loss_type", _RANKING_ALIASES.get(name, name), RANKING_LOSSES)
    return kind, float(head.config.extra.get("margin", 1.0))


def _ranking_metrics(outputs: dict[str, np.ndarray], targets: np.ndarray) -> dict[str, float]:
    scores = outputs["scores"].reshape(-1)
    groups = outputs.get("group_ids", np.zeros(len(scores), dtype=np.int64))
    return metrics.ranking_metrics(groups, np.asarray(targets, dtype=float).reshape(-1), scores, ks=_RANKS)


@register_head(
    "ranking",
    competition_types=["ranking", "reranking", "answer_selection"],
    priority=10,
    description="Cross-encoder reranker: one score per (query, candidate); pointwise/pairwise/listwise loss.",
)
class RankingHead(BaseHead):
    """Cross-encoder ranking head over ``[CLS] query [SEP] candidate [SEP]`` inputs.

    ``loss_type``: ``pointwise`` (BCE, alias ``bce``), ``ranknet`` (alias ``pairwise``), ``margin`` (hinge,
    ``extra.margin`` = 1.0) or ``listwise`` (default; softmax over the query's candidates). ``group_ids`` [B]
    (a query id per row) is passed through ``forward`` to the loss; without it the batch is one group.
    Outputs: ``logits``/``scores`` [B] (+ ``group_ids``). Metrics: MRR, MAP, NDCG@k, recall@k per query.
    """

    task = "ranking"
    default_pooling = "cls"

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        return {"num_labels": 1, "loss_type": "listwise"}

    def example_targets(self, batch_size: int, seq_len: int, generator: torch.Generator) -> Any:
        return (torch.arange(batch_size) % 2).float()

    @staticmethod
    def default_output_size(config: HeadConfig) -> int:
        return 1

    def _build_loss_function(self) -> None:
        self.loss_type, self.margin = _ranking_options(self)

    def forward(
        self,
        hidden_states: Any,
        attention_mask: torch.Tensor | None = None,
        group_ids: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> dict[str, torch.Tensor]:
        pooled = self._apply_pooling(hidden_states, attention_mask)  # [B, H]
        scores = self._features_to_logits(self.projection(pooled)).squeeze(-1)  # [B]
        out = {"logits": scores, "scores": scores.float()}
        if group_ids is not None:
            out["group_ids"] = group_ids
        return out

    def compute_loss(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        return ranking_loss(self.loss_type, outputs["scores"], targets, outputs.get("group_ids"), self.margin)

    def compute_metrics(self, outputs: dict[str, np.ndarray], targets: np.ndarray) -> dict[str, float]:
        return _ranking_metrics(outputs, targets)

    def primary_metric(self) -> tuple[str, str]:
        return "mrr", "max"

    def format_predictions(self, outputs: dict[str, np.ndarray], proba: bool = False) -> dict[str, Any]:
        return {"score": outputs["scores"].tolist()}


@register_head(
    "ranking_bi_encoder",
    competition_types=["retrieval", "ranking"],
    priority=5,
    description="Bi-encoder retriever: scaled cosine of query and candidate embeddings, same ranking losses.",
)
class BiEncoderRankingHead(BiEncoderHead):
    """Bi-encoder retriever on the same query-grouped data as :class:`RankingHead`.

    Score = ``cosine(query, candidate) / temperature`` (``extra.temperature`` 0.05; ``extra.similarity`` may be
    ``dot``). Same ``loss_type`` choices and metrics as :class:`RankingHead`. Single texts with labels rank the
    other rows of the batch (same label = relevant).
    """

    task = "ranking"

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        return {"num_labels": 1, "hidden_sizes": [16], "loss_type": "listwise"}

    def example_targets(self, batch_size: int, seq_len: int, generator: torch.Generator) -> Any:
        return (torch.arange(batch_size) % 2).float()

    def _build_output_layer(self) -> None:
        super()._build_output_layer()
        self.similarity = check_choice(
            "similarity", self.config.extra.get("similarity", "cosine"), ("cosine", "dot")
        )
        self.register_buffer("temperature", torch.tensor(float(self.config.extra.get("temperature", 0.05))))

    def _build_loss_function(self) -> None:
        self.loss_type, self.margin = _ranking_options(self)

    def score(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Ranking score [B] of query/candidate embeddings [B, D]."""
        if self.similarity == "cosine":
            return F.cosine_similarity(u.float(), v.float(), dim=-1) / self.temperature
        return (u.float() * v.float()).sum(-1)

    def _pair_outputs(self, u: torch.Tensor, v: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"scores": self.score(u, v), **super()._pair_outputs(u, v)}

    def compute_loss(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        if "embeddings" in outputs:  # single texts: each row ranks the others, same label = relevant
            emb, y = outputs["embeddings"], targets.reshape(-1)
            i, j = _pairs(emb.shape[0], emb.device, ordered=True)
            return ranking_loss(
                self.loss_type, self.score(emb[i], emb[j]), (y[i] == y[j]).float(), i, self.margin
            )
        return ranking_loss(self.loss_type, outputs["scores"], targets, outputs.get("group_ids"), self.margin)

    def compute_metrics(self, outputs: dict[str, np.ndarray], targets: np.ndarray) -> dict[str, float]:
        if "embeddings" in outputs:
            return label_retrieval_metrics(outputs["embeddings"], None, targets)
        return _ranking_metrics(outputs, targets)

    def primary_metric(self) -> tuple[str, str]:
        return "mrr", "max"

    def format_predictions(self, outputs: dict[str, np.ndarray], proba: bool = False) -> dict[str, Any]:
        if "embeddings" in outputs:
            return super().format_predictions(outputs, proba)
        return {"score": outputs["scores"].tolist()}
