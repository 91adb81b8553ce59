"""Pair heads: bi-encoder text similarity and contrastive embeddings (InfoNCE), and their shared base.

* :class:`TextSimilarityHead` (``text_similarity``, bi-encoder): each text is encoded separately by the shared
  encoder and pooling; similarity ``cosine``, ``dot`` or ``learned`` (an MLP over ``[u; v; |u-v|; u*v]``).
  Losses: ``cosent`` (default), ``cosine_mse``, ``contrastive`` (margin on cosine distance) and ``softmax``
  (classifier over ``[u; v; |u-v|]``, SBERT's SoftmaxLoss).
* :class:`ContrastiveLearningHead` (``contrastive``, bi-encoder): in-batch-negatives InfoNCE (multiple negatives
  ranking) with a temperature, optional hard negatives and a symmetric option; embeddings are L2-normalised.
* The ranking heads (``ranking`` cross-encoder, ``ranking_bi_encoder`` retriever) live in
  :mod:`bertkit.heads.ranking` and reuse :class:`BiEncoderHead` and the helpers here.

Bi-encoder batches carry ``input_ids``/``attention_mask`` (first text), ``input_ids_b``/``attention_mask_b``
(second text) and optionally ``input_ids_neg``/``attention_mask_neg`` (hard negatives); ranking batches carry
``group_ids`` [B]. A single text (no ``_b`` inputs) returns ``{"embeddings": [B, D]}``; trained on single texts
with labels, rows of the same label are treated as similar pairs (SimCSE-style views for ``contrastive``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bertkit import losses, metrics
from bertkit.config import check_choice
from bertkit.errors import ConfigError
from bertkit.heads.base import BaseHead, register_head, to_numpy

SIMILARITIES = ("cosine", "dot", "learned")
SIMILARITY_LOSSES = ("cosent", "cosine_mse", "contrastive", "softmax")
_RANKS = (1, 5, 10)
_MAX_METRIC_ROWS = 2000  # single-text metrics compare all pairs: cap the rows (first N) to bound O(N^2)


def pair_features(u: torch.Tensor, v: torch.Tensor, with_product: bool = True) -> torch.Tensor:
    """``[u; v; |u-v|; u*v]`` ([B, 4D]) or, without the product, SBERT's ``[u; v; |u-v|]`` ([B, 3D])."""
    parts = [u, v, (u - v).abs()] + ([u * v] if with_product else [])
    return torch.cat(parts, dim=-1)


def _pairs(n: int, device: torch.device, ordered: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Index pairs of a batch: all i < j (``ordered=False``) or all i != j (``ordered=True``)."""
    if ordered:
        i, j = torch.meshgrid(torch.arange(n, device=device), torch.arange(n, device=device), indexing="ij")
        keep = i != j
        return i[keep], j[keep]
    idx = torch.triu_indices(n, n, offset=1, device=device)
    return idx[0], idx[1]


def info_nce_loss(
    emb_a: torch.Tensor,
    emb_b: torch.Tensor,
    temperature: float,
    ids: torch.Tensor | None = None,
    hard_negatives: torch.Tensor | None = None,
    symmetric: bool = False,
) -> torch.Tensor:
    """In-batch-negatives InfoNCE on normalised embeddings, masking rows that share an id.

    Equals :func:`bertkit.losses.multiple_negatives_ranking_loss` when every id is distinct; a row whose id
    equals the anchor's (a duplicate query, a same-class text) is never used as its negative.

    Args:
        emb_a: [B, D] anchors. emb_b: [B, D] positives (row i matches anchor i).
        temperature: softmax temperature. ids: optional [B] ids. hard_negatives: optional [M, D].
        symmetric: average with the positive -> anchor direction.
    """
    a, b = F.normalize(emb_a.float(), dim=-1), F.normalize(emb_b.float(), dim=-1)  # [B, D]
    logits = a @ b.T / temperature  # [B, B]
    if ids is not None:
        ids = ids.reshape(-1).to(a.device)
        same = (ids[:, None] == ids[None, :]) & ~torch.eye(len(ids), dtype=torch.bool, device=a.device)
        logits = logits.masked_fill(same, float("-inf"))
    target = torch.arange(a.shape[0], device=a.device)  # [B]
    full = logits
    if hard_negatives is not None:
        full = torch.cat([logits, a @ F.normalize(hard_negatives.float(), dim=-1).T / temperature], dim=1)
    loss = F.cross_entropy(full, target)  # [B, B + M]
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(logits.T, target))
    return loss


def label_retrieval_metrics(query: np.ndarray, docs: np.ndarray | None, ids: np.ndarray) -> dict[str, float]:
    """Retrieval over a set: each query row ranks every doc row; docs sharing its id are the relevant ones.

    With ``docs=None`` the queries retrieve among themselves (self excluded). Returns ``mrr`` and
    ``recall@k`` (relevant found in the top k), averaged over rows that have a relevant doc (nan if none).
    """
    q = query / np.linalg.norm(query, axis=1, keepdims=True).clip(1e-12)  # [N, D]
    d = q if docs is None else docs / np.linalg.norm(docs, axis=1, keepdims=True).clip(1e-12)  # [M, D]
    ids = np.asarray(ids).reshape(-1)
    rr: list[float] = []
    hit = {k: [] for k in _RANKS}
    for start in range(0, len(q), 512):
        sims = q[start : start + 512] @ d.T  # [b, M]
        for r, row in enumerate(sims):
            i = start + r
            relevant = ids == ids[i]
            if docs is None:
                row = row.copy()
                row[i] = -np.inf
                relevant[i] = False
            if not relevant.any():
                continue
            best = row[relevant].max()
            rank = 1 + int((row[~relevant] > best).sum())
            rr.append(1.0 / rank)
            for k in _RANKS:
                hit[k].append(float(rank <= k))
    out = {"mrr": float(np.mean(rr)) if rr else float("nan")}
    out.update({f"recall@{k}": float(np.mean(v)) if v else float("nan") for k, v in hit.items()})
    return out


class BiEncoderHead(BaseHead):
    """Shared bi-encoder machinery: text → encoder → pooling → optional projection (``hidden_sizes``) → [B, D].

    Subclasses implement ``forward_encoder`` (called by :class:`~bertkit.model.BertWithHead` with the encoder).
    """

    level = "bi_encoder"
    default_pooling = "mean"
    normalize_embeddings = False
    simcse_views = False

    def _build_output_layer(self) -> None:
        self.output = nn.Identity()

    @property
    def embedding_size(self) -> int:
        """Width D of the embeddings."""
        return int(self.projection_output_size)

    def embed(self, hidden_states: Any, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Encoder states (or a BertOutput) → embeddings [B, D]."""
        pooled = self._apply_pooling(hidden_states, attention_mask)  # [B, H]
        emb = self.projection(pooled)  # [B, D]
        return F.normalize(emb, dim=-1) if self.normalize_embeddings else emb

    def encode(
        self,
        bert: nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One encoder pass over one batch of texts → embeddings [B, D]."""
        encoded = bert(input_ids, attention_mask, token_type_ids)
        return self.embed(encoded, encoded.attention_mask)

    def forward(self, hidden_states: Any, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> dict:
        """Embeddings of already-encoded single texts: ``{"embeddings": [B, D]}``."""
        return {"embeddings": self.embed(hidden_states, attention_mask)}

    def _second(self, bert: nn.Module, kwargs: dict[str, Any], suffix: str) -> torch.Tensor | None:
        ids = kwargs.get(f"input_ids{suffix}")
        if ids is None:
            return None
        return self.encode(
            bert, ids, kwargs.get(f"attention_mask{suffix}"), kwargs.get(f"token_type_ids{suffix}")
        )

    def forward_encoder(
        self,
        bert: nn.Module,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> dict[str, torch.Tensor]:
        """Encode each text separately with the shared encoder; a single text returns its embedding.

        Reads the second text (``input_ids_b``...), hard negatives (``input_ids_neg``...) and ``group_ids``
        from ``kwargs``; the subclass's ``_pair_outputs`` turns the embeddings into scores.
        """
        u = self.encode(bert, input_ids, attention_mask, token_type_ids)  # [B, D]
        v = self._second(bert, kwargs, "_b")  # [B, D]
        if v is None:
            out = {"embeddings": u}
            if self.training and self.simcse_views:  # a second dropout view of the same texts (SimCSE)
                out["embeddings_2"] = self.encode(bert, input_ids, attention_mask, token_type_ids)
            return out
        out = {"embeddings_1": u, "embeddings_2": v, **self._pair_outputs(u, v)}
        neg = self._second(bert, kwargs, "_neg")  # [B, D]
        if neg is not None:
            out.update(embeddings_neg=neg, negative_score=self._pair_outputs(u, neg)["similarity_score"])
        if kwargs.get("group_ids") is not None:
            out["group_ids"] = kwargs["group_ids"]
        return out

    def _pair_outputs(self, u: torch.Tensor, v: torch.Tensor) -> dict[str, torch.Tensor]:
        """Scores of embedding pairs u, v [B, D]: at least ``similarity_score`` [B] (cosine by default)."""
        return {"similarity_score": F.cosine_similarity(u.float(), v.float(), dim=-1)}

    def format_predictions(self, outputs: dict[str, np.ndarray], proba: bool = False) -> dict[str, Any]:
        if "embeddings" in outputs:
            return {"embedding": outputs["embeddings"].tolist()}
        return {"similarity_score": outputs["similarity_score"].tolist()}


@register_head(
    "text_similarity",
    competition_types=["text_similarity", "similarity", "semantic_similarity"],
    priority=10,
    description="Bi-encoder similarity (cosine/dot/learned) with CoSENT, cosine-MSE, contrastive or softmax loss.",
)
class TextSimilarityHead(BiEncoderHead):
    """Bi-encoder text similarity.

    Outputs for pairs: ``similarity_score [B]``, ``embeddings_1 [B, D]``, ``embeddings_2 [B, D]`` (+ ``logits``,
    ``probabilities``, ``predictions`` with ``loss_type="softmax"``); for a single text ``embeddings [B, D]``.
    Options (``extra``): ``similarity`` (cosine), ``scale`` (CoSENT, 20), ``margin`` (contrastive, 0.5),
    ``score_range`` ``[lo, hi]`` (declared label range; default: the training labels' min and max), used to
    map labels to [0, 1] for ``cosine_mse`` and to 0/1 for ``contrastive``.
    """

    task = "similarity"

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        return {"num_labels": 1, "hidden_sizes": [16]}

    def example_targets(self, batch_size: int, seq_len: int, generator: torch.Generator) -> Any:
        return (torch.arange(batch_size) % 2).float()

    def _build_output_layer(self) -> None:
        extra, d = self.config.extra, self.embedding_size
        self.similarity = check_choice("similarity", extra.get("similarity", "cosine"), SIMILARITIES)
        self.loss_type = check_choice("loss_type", self.config.loss_type or "cosent", SIMILARITY_LOSSES)
        self.scale, self.margin = float(extra.get("scale", 20.0)), float(extra.get("margin", 0.5))
        act = nn.GELU if self.config.activation == "gelu" else nn.Tanh
        self.scorer = (
            nn.Sequential(nn.Linear(4 * d, d), act(), nn.Linear(d, 1))
            if self.similarity == "learned"
            else None
        )
        n = self.config.num_labels
        if self.loss_type == "softmax" and n < 2:
            raise ConfigError("loss_type='softmax' classifies pairs: set num_labels >= 2 (the label classes)")
        self.classifier = nn.Linear(3 * d, n) if self.loss_type == "softmax" else None
        declared = extra.get("score_range")
        if declared is not None and (len(declared) != 2 or float(declared[0]) >= float(declared[1])):
            raise ConfigError(f"extra.score_range must be [low, high] with low < high, got {declared}")
        self.register_buffer("score_range", torch.tensor([float(v) for v in (declared or (0.0, 1.0))]))

    def _build_loss_function(self) -> None:
        self.loss_fn = None

    def score(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """Similarity [B] of embedding pairs u, v [B, D]."""
        if self.similarity == "cosine":
            return F.cosine_similarity(u.float(), v.float(), dim=-1)
        if self.similarity == "dot":
            return (u.float() * v.float()).sum(-1)
        assert self.scorer is not None
        return self.scorer(self.dropout(pair_features(u, v))).squeeze(-1).float()

    def _classify(self, u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        assert self.classifier is not None
        return self.classifier(self.dropout(pair_features(u, v, with_product=False)))  # [B, C]

    def _pair_outputs(self, u: torch.Tensor, v: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {"similarity_score": self.score(u, v)}
        if self.classifier is not None:
            logits = self._classify(u, v)  # [B, C]
            probs = torch.softmax(logits.float(), dim=-1)
            out.update(logits=logits, probabilities=probs, predictions=probs.argmax(-1))
        return out

    def _unit_labels(self, y: torch.Tensor) -> torch.Tensor:
        lo, hi = self.score_range[0], self.score_range[1]
        return ((y.float() - lo) / (hi - lo).clamp_min(1e-12)).clamp(0.0, 1.0)

    def compute_loss(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        y = targets.reshape(-1)
        if "embeddings" in outputs:  # single texts: every in-batch pair, similar when the labels match
            emb = outputs["embeddings"]
            i, j = _pairs(emb.shape[0], emb.device, ordered=False)
            u, v, y = emb[i], emb[j], (y[i] == y[j]).float()
            scores = self.score(u, v)
            logits = self._classify(u, v) if self.classifier is not None else None
            if logits is not None and self.config.num_labels != 2:
                raise ConfigError(
                    "single-text softmax training builds same/different pairs: needs num_labels=2"
                )
        else:
            u, v, scores, logits = (
                outputs["embeddings_1"],
                outputs["embeddings_2"],
                outputs["similarity_score"],
                outputs.get("logits"),
            )
            if self.loss_type in ("cosine_mse", "contrastive"):
                y = self._unit_labels(y)
        if self.loss_type == "cosent":
            return losses.cosent_loss(scores, y, scale=self.scale)
        if self.loss_type == "cosine_mse":
            return losses.cosine_mse_loss(scores, y)
        if self.loss_type == "contrastive":
            distances = 1.0 - F.cosine_similarity(u.float(), v.float(), dim=-1)  # [P]
            return losses.contrastive_margin_loss(distances, (y >= 0.5).float(), margin=self.margin)
        assert logits is not None
        return F.cross_entropy(logits.float(), y.long())

    def prepare_targets(self, targets: np.ndarray) -> None:
        """Without a declared ``score_range``, take the training labels' min and max."""
        t = np.asarray(targets, dtype=np.float64).reshape(-1)
        if self.config.extra.get("score_range") is None and len(t) and t.max() > t.min():
            self.score_range.copy_(torch.tensor([t.min(), t.max()], dtype=torch.float32))

    def compute_metrics(self, outputs: dict[str, np.ndarray], targets: np.ndarray) -> dict[str, float]:
        t = np.asarray(targets).reshape(-1)
        if "embeddings" in outputs:  # single texts: similarity of every pair vs "same label"
            emb = torch.from_numpy(outputs["embeddings"][:_MAX_METRIC_ROWS]).float()
            t = t[:_MAX_METRIC_ROWS]
            i, j = _pairs(len(emb), emb.device, ordered=False)
            with torch.no_grad():
                scores = to_numpy(self.score(emb[i], emb[j]))
            corr = metrics.regression_metrics((t[i.numpy()] == t[j.numpy()]).astype(float), scores)
            return {"spearman": corr["spearman"], "pearson": corr["pearson"]}
        corr = metrics.regression_metrics(t.astype(float), outputs["similarity_score"].astype(float))
        out = {"spearman": corr["spearman"], "pearson": corr["pearson"]}
        if "probabilities" in outputs:
            proba = outputs["probabilities"]
            if proba.shape[1] == 2:
                out.update(metrics.binary_metrics(t.astype(int), proba[:, 1]))
            else:
                out.update(metrics.multiclass_metrics(t.astype(int), proba, self.label_names()))
        return out

    def primary_metric(self) -> tuple[str, str]:
        return ("accuracy", "max") if self.loss_type == "softmax" else ("spearman", "max")

    def format_predictions(self, outputs: dict[str, np.ndarray], proba: bool = False) -> dict[str, Any]:
        cols = super().format_predictions(outputs, proba)
        if "probabilities" in outputs:
            names = self.label_names()
            if proba:
                cols.update(
                    {f"proba_{n}": outputs["probabilities"][:, i].tolist() for i, n in enumerate(names)}
                )
            else:
                cols["prediction"] = [names[int(i)] for i in outputs["predictions"]]
        return cols


@register_head(
    "contrastive",
    competition_types=["contrastive", "embedding", "retrieval"],
    priority=10,
    description="Contrastive embeddings: in-batch-negatives InfoNCE with temperature, hard negatives, symmetric.",
)
class ContrastiveLearningHead(BiEncoderHead):
    """Contrastive sentence embeddings (multiple negatives ranking / InfoNCE), L2-normalised.

    Inputs: anchor (``input_ids``), positive (``input_ids_b``), optional hard negative (``input_ids_neg``).
    Targets: an id per row (e.g. the anchor's id); rows sharing an id are never each other's negatives.
    A single text in training mode is encoded twice (dropout noise makes two views: unsupervised SimCSE).
    Options (``extra``): ``temperature`` (0.05, = scale 20), ``symmetric`` (False).
    Outputs: ``embeddings_1``, ``embeddings_2`` [B, D], ``similarity_score`` [B] (+ ``embeddings_neg``).
    """

    task = "contrastive"
    normalize_embeddings = True
    simcse_views = True

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        return {"num_labels": 1, "hidden_sizes": [16]}

    def example_targets(self, batch_size: int, seq_len: int, generator: torch.Generator) -> Any:
        return torch.arange(batch_size) % 2

    def _build_output_layer(self) -> None:
        super()._build_output_layer()
        temperature = float(self.config.extra.get("temperature", 0.05))
        if temperature <= 0:
            raise ConfigError(f"extra.temperature must be > 0, got {temperature}")
        self.register_buffer("temperature", torch.tensor(temperature))
        self.symmetric = bool(self.config.extra.get("symmetric", False))

    def _pair_outputs(self, u: torch.Tensor, v: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"similarity_score": (u * v).sum(-1)}  # [B] cosine of normalised embeddings

    def compute_loss(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor | None) -> torch.Tensor:
        a = outputs.get("embeddings_1", outputs.get("embeddings"))
        b = outputs.get("embeddings_2")
        if a is None or b is None:
            raise ConfigError(
                "the contrastive loss needs a second text (input_ids_b) or training mode (SimCSE)"
            )
        return info_nce_loss(
            a,
            b,
            float(self.temperature),
            ids=targets,
            hard_negatives=outputs.get("embeddings_neg"),
            symmetric=self.symmetric,
        )

    def compute_metrics(self, outputs: dict[str, np.ndarray], targets: np.ndarray) -> dict[str, float]:
        if "embeddings" in outputs:
            return label_retrieval_metrics(outputs["embeddings"], None, targets)
        out = label_retrieval_metrics(outputs["embeddings_1"], outputs["embeddings_2"], targets)
        out["positive_similarity"] = float(np.mean(outputs["similarity_score"]))
        if "negative_score" in outputs:
            out["negative_similarity"] = float(np.mean(outputs["negative_score"]))
        return out

    def primary_metric(self) -> tuple[str, str]:
        return "mrr", "max"
