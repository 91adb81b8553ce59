"""Sequence classification heads: binary, multiclass, multilabel, ensemble and hierarchical."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bertkit import losses, metrics
from bertkit.config import HeadConfig, HeadType, check_choice
from bertkit.errors import ConfigError
from bertkit.heads.base import BaseHead, register_head, to_numpy
from bertkit.pooling import Pooler


def _softmax_np(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _sigmoid_np(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _class_weight_tensor(config: HeadConfig, n: int) -> torch.Tensor | None:
    if config.class_weights is None:
        return None
    if len(config.class_weights) != n:
        raise ConfigError(f"class_weights has {len(config.class_weights)} values but there are {n} classes")
    return torch.tensor(config.class_weights, dtype=torch.float32)


@register_head(
    HeadType.BINARY_CLASSIFICATION.value,
    competition_types=["binary_classification", "binary"],
    priority=10,
    description="Two classes: one sigmoid logit + BCE (or focal, or 2-way softmax), temperature calibration.",
)
class BinaryClassificationHead(BaseHead):
    """Binary classifier.

    Outputs: ``logits [B]`` (``[B, 2]`` with ``loss_type="softmax"``), ``probabilities [B, 2]``,
    ``predictions [B]`` (1 where P(positive) >= the decision threshold). Losses: ``bce`` (default),
    ``focal``, ``softmax``. ``pos_weight`` re-weights positives. ``fit_postprocessing`` fits a temperature
    on validation logits (calibration error reported before/after).
    """

    task = "binary"

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        return {"num_labels": 2}

    @staticmethod
    def default_output_size(config: HeadConfig) -> int:
        return 2 if (config.loss_type or "bce") == "softmax" else 1

    def _build_output_layer(self) -> None:
        super()._build_output_layer()
        self.register_buffer("temperature", torch.ones(()))
        self.register_buffer("threshold", torch.tensor(0.5))

    def _build_loss_function(self) -> None:
        self.loss_type = check_choice(
            "loss_type", self.config.loss_type or "bce", ("bce", "focal", "softmax")
        )

    def _make_outputs(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.loss_type == "softmax":  # [B, 2]
            logit = logits[:, 1] - logits[:, 0]
        else:
            logits = logits.squeeze(-1)  # [B]
            logit = logits
        p1 = torch.sigmoid(logit.float() / self.temperature)  # [B]
        probs = torch.stack([1 - p1, p1], dim=-1)  # [B, 2]
        return {"logits": logits, "probabilities": probs, "predictions": (p1 >= self.threshold).long()}

    def compute_loss(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        logits = outputs["logits"].float()
        if self.loss_type == "softmax":
            w = _class_weight_tensor(self.config, 2)
            return F.cross_entropy(logits, targets.long(), weight=None if w is None else w.to(logits.device))
        y = targets.float().view_as(logits)
        pw = (
            None
            if self.config.pos_weight is None
            else torch.tensor(self.config.pos_weight, device=logits.device)
        )
        if self.loss_type == "focal":
            return losses.focal_loss_binary(
                logits, y, gamma=self.config.focal_gamma, alpha=self.config.focal_alpha, pos_weight=pw
            )
        return F.binary_cross_entropy_with_logits(logits, y, pos_weight=pw)

    def _logit_np(self, outputs: dict[str, np.ndarray]) -> np.ndarray:
        logits = outputs["logits"]
        return logits[:, 1] - logits[:, 0] if logits.ndim == 2 else logits

    def compute_metrics(self, outputs: dict[str, np.ndarray], targets: np.ndarray) -> dict[str, float]:
        p1 = outputs["probabilities"][:, 1]
        return metrics.binary_metrics(targets.astype(int), p1, threshold=float(self.threshold))

    def primary_metric(self) -> tuple[str, str]:
        return "accuracy", "max"

    def fit_postprocessing(self, outputs: dict[str, np.ndarray], targets: np.ndarray) -> dict[str, float]:
        """Temperature scaling: one scalar T minimising validation NLL of sigmoid(logit / T)."""
        from scipy.optimize import minimize_scalar

        logit = self._logit_np(outputs).astype(np.float64)
        y = np.asarray(targets, dtype=np.float64).reshape(logit.shape)
        if logit.size < 10 or y.min() == y.max():
            return {}

        def nll(log_t: float) -> float:
            z = logit / np.exp(log_t)
            return float(np.mean(np.logaddexp(0.0, z) - y * z))  # BCE with logits

        res = minimize_scalar(nll, bounds=(-3.0, 3.0), method="bounded")
        t = float(np.exp(res.x)) if res.fun < nll(0.0) else 1.0
        before = metrics.expected_calibration_error(targets.astype(int), _sigmoid_np(logit))
        after = metrics.expected_calibration_error(targets.astype(int), _sigmoid_np(logit / t))
        self.temperature.fill_(t)
        return {"temperature": t, "ece_before": before, "ece_after": after}

    def format_predictions(self, outputs: dict[str, np.ndarray], proba: bool = False) -> dict[str, Any]:
        names = self.label_names()
        if proba:
            return {f"proba_{n}": outputs["probabilities"][:, i].tolist() for i, n in enumerate(names)}
        return {"prediction": [names[int(i)] for i in outputs["predictions"]]}


@register_head(
    HeadType.MULTICLASS_CLASSIFICATION.value,
    competition_types=["multiclass_classification", "multiclass", "sentiment", "text_classification"],
    priority=10,
    description="N classes: softmax + cross-entropy (label smoothing, focal, class weights).",
)
class MulticlassClassificationHead(BaseHead):
    """Multiclass classifier.

    Outputs: ``logits [B, C]``, ``probabilities [B, C]``, ``predictions [B]``. Losses: ``ce`` (default, with
    ``label_smoothing`` and ``class_weights``) or ``focal``. Metrics: accuracy, top-k accuracy, macro-F1, log loss.
    """

    task = "multiclass"

    def _build_loss_function(self) -> None:
        self.loss_type = check_choice("loss_type", self.config.loss_type or "ce", ("ce", "focal"))
        w = _class_weight_tensor(self.config, int(self.config.output_size or self.config.num_labels))
        self.register_buffer("class_weight", w if w is not None else torch.ones(0))

    def _make_outputs(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        probs = torch.softmax(logits.float(), dim=-1)
        return {"logits": logits, "probabilities": probs, "predictions": probs.argmax(-1)}

    def compute_loss(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        logits = outputs["logits"].float()
        w = self.class_weight if self.class_weight.numel() else None
        if targets.is_floating_point() and targets.dim() == 2:  # soft labels [B, C] (pseudo-labelling)
            return F.cross_entropy(
                logits, targets.float(), weight=w, label_smoothing=self.config.label_smoothing
            )
        if self.loss_type == "focal":
            return losses.focal_loss_multiclass(
                logits,
                targets.long(),
                gamma=self.config.focal_gamma,
                class_weights=w,
                label_smoothing=self.config.label_smoothing,
            )
        return F.cross_entropy(logits, targets.long(), weight=w, label_smoothing=self.config.label_smoothing)

    def compute_metrics(self, outputs: dict[str, np.ndarray], targets: np.ndarray) -> dict[str, float]:
        return metrics.multiclass_metrics(targets.astype(int), outputs["probabilities"], self.label_names())

    def primary_metric(self) -> tuple[str, str]:
        return "accuracy", "max"

    def format_predictions(self, outputs: dict[str, np.ndarray], proba: bool = False) -> dict[str, Any]:
        names = self.label_names()
        if proba:
            return {f"proba_{n}": outputs["probabilities"][:, i].tolist() for i, n in enumerate(names)}
        return {"prediction": [names[int(i)] for i in outputs["predictions"]]}


@register_head(
    HeadType.MULTILABEL_CLASSIFICATION.value,
    competition_types=["multilabel_classification", "multilabel", "multi_binary"],
    priority=10,
    description="Several labels per text: per-label sigmoid + BCE/focal, per-label thresholds tuned on validation.",
)
class MultilabelClassificationHead(BaseHead):
    """Multilabel classifier (also several named binary dimensions, e.g. MBTI E/I S/N T/F J/P).

    Outputs: ``logits [B, L]``, ``probabilities [B, L]``, ``predictions [B, L]`` (0/1 by the per-label
    ``thresholds`` buffer, tuned on validation and saved with the model). Named dimensions: set
    ``extra={"dimensions": [["E", "I"], ["S", "N"], ["T", "F"], ["J", "P"]]}`` — label i is 1 for the second
    letter — and ``decode_dimensions`` composes strings such as ``"INTJ"``.
    """

    task = "multilabel"

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        return {"num_labels": 4, "extra": {"dimensions": [["E", "I"], ["S", "N"], ["T", "F"], ["J", "P"]]}}

    def example_targets(self, batch_size: int, seq_len: int, generator: torch.Generator) -> Any:
        return torch.randint(0, 2, (batch_size, self.config.num_labels), generator=generator).float()

    def _build_output_layer(self) -> None:
        super()._build_output_layer()
        n = int(self.config.output_size or self.config.num_labels)
        self.register_buffer("thresholds", torch.full((n,), 0.5))
        dims = self.config.extra.get("dimensions")
        if dims is not None and (len(dims) != n or any(len(d) != 2 for d in dims)):
            raise ConfigError(f"extra.dimensions needs {n} pairs of letters like ['E', 'I'], got {dims}")

    def _build_loss_function(self) -> None:
        self.loss_type = check_choice("loss_type", self.config.loss_type or "bce", ("bce", "focal"))
        n = int(self.config.output_size or self.config.num_labels)
        pw = self.config.extra.get("pos_weights") or (
            [self.config.pos_weight] * n if self.config.pos_weight is not None else None
        )
        self.register_buffer("pos_weights", torch.tensor(pw, dtype=torch.float32) if pw else torch.ones(0))

    def _make_outputs(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        probs = torch.sigmoid(logits.float())
        return {"logits": logits, "probabilities": probs, "predictions": (probs >= self.thresholds).long()}

    def compute_loss(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        logits = outputs["logits"].float()
        pw = self.pos_weights if self.pos_weights.numel() else None
        if self.loss_type == "focal":
            return losses.focal_loss_binary(
                logits,
                targets.float(),
                gamma=self.config.focal_gamma,
                alpha=self.config.focal_alpha,
                pos_weight=pw,
            )
        return F.binary_cross_entropy_with_logits(logits, targets.float(), pos_weight=pw)

    def compute_metrics(self, outputs: dict[str, np.ndarray], targets: np.ndarray) -> dict[str, float]:
        thr = self.thresholds.cpu().numpy()
        out = metrics.multilabel_metrics(targets, outputs["probabilities"], thr, self.label_names())
        if self.config.extra.get("dimensions"):
            pred = (outputs["probabilities"] >= thr).astype(int)
            out["all_dimensions_accuracy"] = float((pred == targets.astype(int)).all(axis=1).mean())
        return out

    def primary_metric(self) -> tuple[str, str]:
        return "micro_f1", "max"

    def fit_postprocessing(self, outputs: dict[str, np.ndarray], targets: np.ndarray) -> dict[str, float]:
        """Per-label thresholds maximising each label's F1 on validation data."""
        if self.config.extra.get("fixed_thresholds") or len(targets) < 10:
            return {}
        before = metrics.multilabel_metrics(targets, outputs["probabilities"], 0.5)["micro_f1"]
        thr = metrics.tune_thresholds(targets, outputs["probabilities"])
        self.thresholds.copy_(torch.as_tensor(thr, dtype=torch.float32))
        after = metrics.multilabel_metrics(targets, outputs["probabilities"], thr)["micro_f1"]
        return {"micro_f1_at_0.5": before, "micro_f1_tuned": after}

    def decode_dimensions(self, predictions: np.ndarray) -> list[str]:
        """Compose dimension letters per row, e.g. ``[[0, 1, 0, 0]] -> ["ENTJ"]``."""
        dims = self.config.extra["dimensions"]
        return ["".join(dims[j][int(v)] for j, v in enumerate(row)) for row in predictions]

    def format_predictions(self, outputs: dict[str, np.ndarray], proba: bool = False) -> dict[str, Any]:
        names = self.label_names()
        source = outputs["probabilities"] if proba else outputs["predictions"]
        cols: dict[str, Any] = {}
        if self.config.extra.get("dimensions") and not proba:
            cols["prediction"] = self.decode_dimensions(outputs["predictions"])
        for i, n in enumerate(names):
            cols[n] = source[:, i].tolist()
        return cols


@register_head(
    HeadType.ENSEMBLE_CLASSIFICATION.value,
    competition_types=["multiclass_classification", "binary_classification"],
    priority=1,
    description="Several poolings, each with its own classifier, combined by mean or learned weights.",
)
class EnsembleClassificationHead(MulticlassClassificationHead):
    """Ensemble of sub-heads over different poolings (softmax classification, C >= 2).

    ``extra={"poolings": ["cls", "mean", "max"], "combine": "mean" | "learned"}``. Outputs like the
    multiclass head plus ``member_logits [B, M, C]``.
    """

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        return {"num_labels": 3, "extra": {"poolings": ["cls", "mean", "attention"], "combine": "learned"}}

    def _build_output_layer(self) -> None:
        poolings = self.config.extra.get("poolings", ["cls", "mean", "max"])
        self.combine = check_choice("combine", self.config.extra.get("combine", "mean"), ("mean", "learned"))
        self.member_poolers = nn.ModuleList(
            Pooler(p, self.config.input_size, self.config.max_position_embeddings) for p in poolings
        )
        n = int(self.config.output_size or self.config.num_labels)
        self.members = nn.ModuleList(nn.Linear(self.projection_output_size, n) for _ in poolings)
        self.member_weights = nn.Parameter(torch.zeros(len(poolings)))

    def forward(self, hidden_states: Any, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> dict:
        states, mask, pooler_output = self._unpack(hidden_states, attention_mask)
        member_logits = []
        for pooler, linear in zip(self.member_poolers, self.members):
            pooled = states if states.dim() == 2 else pooler(states, mask, pooler_output)  # [B, H]
            member_logits.append(linear(self.dropout(self.projection(pooled))))
        stacked = torch.stack(member_logits, dim=1)  # [B, M, C]
        if self.combine == "learned":
            w = torch.softmax(self.member_weights, 0)
            logits = torch.einsum("m,bmc->bc", w, stacked)
        else:
            logits = stacked.mean(1)
        out = self._make_outputs(logits)
        out["member_logits"] = stacked
        return out


@register_head(
    HeadType.HIERARCHICAL_CLASSIFICATION.value,
    competition_types=["hierarchical_classification"],
    priority=10,
    description="Parent and child labels with hierarchy-consistent predictions and per-level metrics.",
)
class HierarchicalClassificationHead(BaseHead):
    """Two-level classifier: ``label_names`` are the leaves, ``extra={"parents": [parent of each leaf]}``.

    Joint decoding maximises ``log p(parent) + log p(leaf | parent)`` over leaves, so the predicted parent is
    always the predicted leaf's parent. Targets are leaf indices. Outputs: ``logits`` (leaf) ``[B, C]``,
    ``parent_logits [B, P]``, ``probabilities [B, C]`` (joint), ``predictions [B]``, ``parent_predictions [B]``.
    """

    task = "multiclass"

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        return {
            "num_labels": 4,
            "label_names": ["a1", "a2", "b1", "b2"],
            "extra": {"parents": ["A", "A", "B", "B"]},
        }

    def _build_output_layer(self) -> None:
        parents = [str(p) for p in self.config.extra.get("parents", [])]
        if len(parents) != self.config.num_labels:
            raise ConfigError(
                "hierarchical head needs extra.parents with one parent name per leaf label "
                f"({self.config.num_labels} leaves, got {len(parents)} parents)"
            )
        self.parent_names = sorted(set(parents))
        index = [self.parent_names.index(p) for p in parents]
        self.register_buffer("leaf_parent", torch.tensor(index, dtype=torch.long))  # [C]
        self.output = nn.Linear(self.projection_output_size, self.config.num_labels)
        self.parent_output = nn.Linear(self.projection_output_size, len(self.parent_names))

    def _build_loss_function(self) -> None:
        self.parent_loss_weight = float(self.config.extra.get("parent_loss_weight", 1.0))

    def forward(self, hidden_states: Any, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> dict:
        feats = self.dropout(self.projection(self._apply_pooling(hidden_states, attention_mask)))
        leaf_logits = self.output(feats).float()  # [B, C]
        parent_logits = self.parent_output(feats).float()  # [B, P]
        parent_logp = F.log_softmax(parent_logits, -1)  # [B, P]
        # log p(leaf | parent): softmax over the leaves of each parent
        same = self.leaf_parent.unsqueeze(0) == self.leaf_parent.unsqueeze(1)  # [C, C]
        expanded = leaf_logits.unsqueeze(1).masked_fill(~same.unsqueeze(0), float("-inf"))  # [B, C, C]
        leaf_logp = torch.logsumexp(expanded, dim=-1)  # [B, C] normaliser over siblings
        joint = parent_logp[:, self.leaf_parent] + leaf_logits - leaf_logp  # [B, C]
        probs = joint.exp()
        pred = probs.argmax(-1)
        return {
            "logits": leaf_logits,
            "parent_logits": parent_logits,
            "probabilities": probs,
            "predictions": pred,
            "parent_predictions": self.leaf_parent[pred],
        }

    def compute_loss(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        t = targets.long()
        leaf = F.cross_entropy(outputs["logits"], t)
        parent = F.cross_entropy(outputs["parent_logits"], self.leaf_parent[t])
        return leaf + self.parent_loss_weight * parent

    def compute_metrics(self, outputs: dict[str, np.ndarray], targets: np.ndarray) -> dict[str, float]:
        t = targets.astype(int)
        out = metrics.multiclass_metrics(t, outputs["probabilities"], self.label_names())
        lp = to_numpy(self.leaf_parent)
        parent_proba = np.zeros((len(t), len(self.parent_names)))
        for j, p in enumerate(lp):
            parent_proba[:, p] += outputs["probabilities"][:, j]
        parent = metrics.multiclass_metrics(lp[t], parent_proba, self.parent_names)
        out.update({f"parent_{k}": v for k, v in parent.items()})
        return out

    def primary_metric(self) -> tuple[str, str]:
        return "accuracy", "max"

    def format_predictions(self, outputs: dict[str, np.ndarray], proba: bool = False) -> dict[str, Any]:
        names = self.label_names()
        if proba:
            return {f"proba_{n}": outputs["probabilities"][:, i].tolist() for i, n in enumerate(names)}
        return {
            "prediction": [names[int(i)] for i in outputs["predictions"]],
            "parent_prediction": [self.parent_names[int(i)] for i in outputs["parent_predictions"]],
        }
