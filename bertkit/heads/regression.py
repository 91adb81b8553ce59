"""Regression heads: real-valued targets (optionally with uncertainty) and ordinal ratings."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bertkit import losses, metrics
from bertkit.config import HeadConfig, HeadType, check_choice
from bertkit.heads.base import BaseHead, register_head


@register_head(
    HeadType.REGRESSION.value,
    competition_types=["regression"],
    priority=10,
    description="Real-valued target(s): MSE/MAE/Huber, optional Gaussian uncertainty, stored target scaling.",
)
class RegressionHead(BaseHead):
    """Regression on one or several targets (``num_labels`` = number of targets).

    Targets are standardised with the training mean/std (buffers saved with the model) so the loss is
    well scaled; outputs are in the original units. ``extra={"uncertainty": True}`` adds a log-variance
    output trained with Gaussian NLL. Outputs: ``logits [B, K]`` (standardised), ``predictions [B]`` or
    ``[B, K]``, and ``variance`` with uncertainty. ``extra={"clip": [lo, hi]}`` clips predictions.
    """

    task = "regression"
    default_pooling = "mean"

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        return {"num_labels": 2, "extra": {"uncertainty": True}}

    def example_targets(self, batch_size: int, seq_len: int, generator: torch.Generator) -> Any:
        return torch.randn(batch_size, self.config.num_labels, generator=generator)

    @staticmethod
    def default_output_size(config: HeadConfig) -> int:
        return config.num_labels * (2 if config.extra.get("uncertainty") else 1)

    def _build_output_layer(self) -> None:
        super()._build_output_layer()
        k = self.config.num_labels
        self.register_buffer("target_mean", torch.zeros(k))
        self.register_buffer("target_std", torch.ones(k))
        clip = self.config.extra.get("clip")
        self.register_buffer("clip", torch.tensor(clip, dtype=torch.float32) if clip else torch.zeros(0))

    def _build_loss_function(self) -> None:
        default = "gaussian_nll" if self.config.extra.get("uncertainty") else "mse"
        self.loss_type = check_choice(
            "loss_type", self.config.loss_type or default, ("mse", "mae", "huber", "gaussian_nll")
        )

    def _make_outputs(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        k = self.config.num_labels
        z = logits[:, :k].float()  # [B, K] standardised prediction
        pred = z * self.target_std + self.target_mean
        if self.clip.numel() == 2:
            pred = pred.clamp(float(self.clip[0]), float(self.clip[1]))
        out = {"logits": z, "predictions": pred.squeeze(-1) if k == 1 else pred}
        if self.config.extra.get("uncertainty"):
            log_var = logits[:, k:].float()
            out["log_variance"] = log_var
            var = log_var.exp() * self.target_std**2
            out["variance"] = var.squeeze(-1) if k == 1 else var
        return out

    def prepare_targets(self, targets: np.ndarray) -> None:
        """Store the training targets' mean and std (std floor 1e-6)."""
        t = np.asarray(targets, dtype=np.float64).reshape(len(targets), -1)
        self.target_mean.copy_(torch.as_tensor(t.mean(0), dtype=torch.float32))
        self.target_std.copy_(torch.as_tensor(np.maximum(t.std(0), 1e-6), dtype=torch.float32))

    def compute_loss(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        z = outputs["logits"]
        y = ((targets.float().view(z.shape[0], -1)) - self.target_mean) / self.target_std
        if self.loss_type == "gaussian_nll":
            return losses.gaussian_nll(z, outputs["log_variance"], y)
        if self.loss_type == "mae":
            return F.l1_loss(z, y)
        if self.loss_type == "huber":
            return F.huber_loss(z, y, delta=float(self.config.extra.get("huber_delta", 1.0)))
        return F.mse_loss(z, y)

    def compute_metrics(self, outputs: dict[str, np.ndarray], targets: np.ndarray) -> dict[str, float]:
        return metrics.regression_metrics(targets, outputs["predictions"].reshape(np.shape(targets)))

    def primary_metric(self) -> tuple[str, str]:
        return "rmse", "min"

    def format_predictions(self, outputs: dict[str, np.ndarray], proba: bool = False) -> dict[str, Any]:
        pred = outputs["predictions"]
        if pred.ndim == 1:
            cols: dict[str, Any] = {"prediction": pred.tolist()}
        else:
            cols = {n: pred[:, i].tolist() for i, n in enumerate(self.label_names())}
        if proba and "variance" in outputs:
            cols["variance"] = outputs["variance"].tolist()
        return cols


@register_head(
    HeadType.ORDINAL_REGRESSION.value,
    competition_types=["ordinal_regression", "ordinal", "rating"],
    priority=10,
    description="Ordered classes (ratings): cumulative logits with ordered thresholds (CORAL) or CORN.",
)
class OrdinalRegressionHead(BaseHead):
    """Ordinal regression over ``num_labels`` ordered classes.

    ``loss_type="coral"`` (default): one shared score plus ordered thresholds ``b_1 > b_2 > ...`` (kept ordered
    by construction), ``logit_k = s - θ_k``; ``"corn"``: K-1 conditional binary tasks. Outputs: ``logits
    [B, K-1]`` (cumulative P(y > k)), ``probabilities [B, K]``, ``predictions [B]`` (class index).
    Metrics: accuracy, MAE, Kendall's tau, quadratic weighted kappa.
    """

    task = "ordinal"
    default_pooling = "mean"

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        return {"num_labels": 5}

    @staticmethod
    def default_output_size(config: HeadConfig) -> int:
        return config.num_labels - 1

    def _build_output_layer(self) -> None:
        self.method = check_choice("loss_type", self.config.loss_type or "coral", ("coral", "corn"))
        k = self.config.num_labels - 1
        if self.method == "coral":
            self.output = nn.Linear(self.projection_output_size, 1, bias=False)
            self.first_threshold = nn.Parameter(torch.tensor(-(k - 1) / 2.0))
            self.threshold_gaps = nn.Parameter(torch.zeros(max(k - 1, 0)))  # softplus(0)≈0.69 apart
        else:
            self.output = nn.Linear(self.projection_output_size, k)

    def thresholds(self) -> torch.Tensor:
        """Ordered CORAL thresholds ``θ_1 < θ_2 < ...`` ``[K-1]``."""
        gaps = F.softplus(self.threshold_gaps)
        return torch.cat([self.first_threshold.view(1), self.first_threshold + torch.cumsum(gaps, 0)])

    def _make_outputs(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.method == "coral":
            logits = logits.float() - self.thresholds()  # [B, 1] - [K-1] -> [B, K-1]
        probs = losses.ordinal_logits_to_proba(logits.float(), method=self.method)
        return {
            "logits": logits,
            "probabilities": probs,
            "predictions": losses.ordinal_logits_to_label(logits.float(), method=self.method),
        }

    def compute_loss(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        fn = losses.coral_loss if self.method == "coral" else losses.corn_loss
        return fn(outputs["logits"].float(), targets.long(), self.config.num_labels)

    def compute_metrics(self, outputs: dict[str, np.ndarray], targets: np.ndarray) -> dict[str, float]:
        return metrics.ordinal_metrics(targets.astype(int), outputs["predictions"].astype(int))

    def primary_metric(self) -> tuple[str, str]:
        return "qwk", "max"

    def format_predictions(self, outputs: dict[str, np.ndarray], proba: bool = False) -> dict[str, Any]:
        names = self.label_names()
        if proba:
            return {f"proba_{n}": outputs["probabilities"][:, i].tolist() for i, n in enumerate(names)}
        return {"prediction": [names[int(i)] for i in outputs["predictions"]]}
