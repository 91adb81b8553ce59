"""Loss functions for bertkit task heads (classification, ordinal, regression, similarity, ranking).

All losses are plain functions returning a 0-dim tensor (or per-element tensor for ``reduction="none"``)
and are computed in log space (``logsigmoid``, ``log_softmax``, BCE-with-logits) so they stay finite for
large logits. Similarity and ranking losses live in :mod:`bertkit._losses_pairwise` and are re-exported
here: ``bertkit.losses`` is the single import point.

Shapes: ``B`` batch, ``C`` classes, ``L`` labels, ``D`` embedding size, ``N`` (query, document) rows.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from bertkit._losses_pairwise import (
    contrastive_margin_loss,
    cosent_loss,
    cosine_mse_loss,
    listwise_softmax_loss,
    multiple_negatives_ranking_loss,
    pairwise_margin_loss,
    ranknet_loss,
)
from bertkit.errors import ConfigError

__all__ = [
    "contrastive_margin_loss",
    "coral_loss",
    "corn_loss",
    "cosent_loss",
    "cosine_mse_loss",
    "focal_loss_binary",
    "focal_loss_multiclass",
    "gaussian_nll",
    "listwise_softmax_loss",
    "multiple_negatives_ranking_loss",
    "ordinal_levels",
    "ordinal_logits_to_label",
    "ordinal_logits_to_proba",
    "pairwise_margin_loss",
    "ranknet_loss",
]

_REDUCTIONS = ("mean", "sum", "none")
_ORDINAL_METHODS = ("coral", "corn")


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ConfigError(f"unknown reduction {reduction!r}; use one of {list(_REDUCTIONS)}.")


def _reduce(loss: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


# -------------------------------------------------------------------------------------------- focal loss
def focal_loss_binary(
    logits: Tensor,
    targets: Tensor,
    gamma: float = 2.0,
    alpha: float | None = None,
    pos_weight: Tensor | None = None,
    reduction: str = "mean",
) -> Tensor:
    """Sigmoid focal loss (Lin et al., 2017) for binary or multi-label logits.

    ``loss = alpha_t * (1 - p_t) ** gamma * BCEWithLogits(logits, targets, pos_weight)`` where ``p_t`` is
    the probability given to the target. ``gamma=0, alpha=None`` is exactly BCE-with-logits.

    Args:
        logits: [B] or [B, L] raw scores.
        targets: Same shape, float in [0, 1] (soft targets allowed).
        gamma: Focusing parameter (>= 0).
        alpha: Optional weight of positives in [0, 1]; negatives get ``1 - alpha``.
        pos_weight: Optional [L] (or scalar) weight on the positive term, as in ``BCEWithLogitsLoss``.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
        0-dim loss, or per-element loss with ``reduction="none"``.
    """
    _check_reduction(reduction)
    targets = targets.to(logits.dtype)
    ce = F.binary_cross_entropy_with_logits(
        logits, targets, pos_weight=pos_weight, reduction="none"
    )  # [B(,L)]
    loss = ce
    if gamma != 0:
        # -log p_t without pos_weight; 1 - p_t = -expm1(log p_t), accurate when p_t is close to 1
        log_p_t = -F.binary_cross_entropy_with_logits(logits, targets, reduction="none")
        one_minus_p_t = (-torch.expm1(log_p_t)).clamp_min(1e-12)  # clamp keeps gamma < 1 gradients finite
        loss = one_minus_p_t.pow(gamma) * loss
    if alpha is not None:
        loss = (alpha * targets + (1.0 - alpha) * (1.0 - targets)) * loss
    return _reduce(loss, reduction)


def focal_loss_multiclass(
    logits: Tensor,
    targets: Tensor,
    gamma: float = 2.0,
    class_weights: Tensor | None = None,
    label_smoothing: float = 0.0,
    reduction: str = "mean",
    ignore_index: int = -100,
) -> Tensor:
    """Softmax focal loss; with ``gamma=0`` it equals ``F.cross_entropy`` with the same arguments.

    Per example: ``(1 - p_y) ** gamma * CE_i`` where ``CE_i`` is PyTorch's weighted, label-smoothed
    cross-entropy term. ``"mean"`` divides by the summed target-class weights (as PyTorch does); a batch
    where every target is ``ignore_index`` gives 0 (with grad) instead of PyTorch's ``nan``.

    Args:
        logits: [B, C] (or [..., C], e.g. [B, T, C] for tokens) raw scores.
        targets: [B] (or [...]) long class indices; ``ignore_index`` entries are skipped.
        gamma: Focusing parameter (>= 0).
        class_weights: Optional [C] per-class weights.
        label_smoothing: Label smoothing in [0, 1).
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        ignore_index: Target value to ignore.

    Returns:
        0-dim loss, or per-example loss [B] (or [...]) with ``reduction="none"``.
    """
    _check_reduction(reduction)
    num_classes = logits.shape[-1]
    batch_shape = targets.shape
    logits = logits.reshape(-1, num_classes)  # [B', C]
    targets = targets.reshape(-1).long()  # [B']
    valid = targets != ignore_index  # [B']
    safe_t = torch.where(valid, targets, torch.zeros_like(targets))
    log_p = F.log_softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))  # [B', C]
    log_p_t = log_p.gather(1, safe_t[:, None]).squeeze(1)  # [B']
    if class_weights is not None:
        w = class_weights.to(log_p)
        w_t = w[safe_t]  # [B']
        smooth = -(log_p * w[None, :]).sum(dim=1)  # [B']
    else:
        w_t = torch.ones_like(log_p_t)
        smooth = -log_p.sum(dim=1)
    loss = (1.0 - label_smoothing) * w_t * (-log_p_t) + (label_smoothing / num_classes) * smooth  # [B']
    if gamma != 0:
        loss = (-torch.expm1(log_p_t)).clamp_min(1e-12).pow(gamma) * loss
    zero = torch.zeros_like(loss)
    loss = torch.where(valid, loss, zero)
    if reduction == "none":
        return loss.reshape(batch_shape)
    if reduction == "sum":
        return loss.sum()
    denom = torch.where(valid, w_t, zero).sum()
    return loss.sum() / denom.clamp_min(torch.finfo(denom.dtype).tiny)


# ------------------------------------------------------------------------------------------------ ordinal
def ordinal_levels(y: Tensor, num_classes: int) -> Tensor:
    """Extended binary targets for ordinal regression: level k is 1 if ``y > k``.

    Args:
        y: [B] long labels in ``[0, num_classes)``.
        num_classes: Number of ordinal classes C.

    Returns:
        [B, C-1] float tensor, e.g. ``y=2, C=4 -> [1, 1, 0]``.
    """
    k = torch.arange(num_classes - 1, device=y.device)  # [C-1]
    return (y.long()[:, None] > k[None, :]).float()  # [B, C-1]


def coral_loss(logits: Tensor, y: Tensor, num_classes: int, importance: Tensor | None = None) -> Tensor:
    """CORAL loss (Cao, Mirjalili & Raschka, 2020), as in ``coral_pytorch``.

    Binary cross-entropy of each rank-threshold logit against :func:`ordinal_levels`, summed over the
    C-1 tasks and averaged over the batch.

    Args:
        logits: [B, C-1] one logit per threshold ``P(y > k)``.
        y: [B] long labels.
        num_classes: Number of classes C.
        importance: Optional [C-1] per-task weights.

    Returns:
        0-dim loss.
    """
    levels = ordinal_levels(y, num_classes).to(logits.dtype)  # [B, C-1]
    log_sig = F.logsigmoid(logits)
    term = log_sig * levels + (log_sig - logits) * (1.0 - levels)  # log-likelihood per task
    if importance is not None:
        term = term * importance.to(term)[None, :]
    return -term.sum(dim=1).mean()


def corn_loss(logits: Tensor, y: Tensor, num_classes: int) -> Tensor:
    """CORN loss (Shi, Cao & Raschka, 2021), as in ``coral_pytorch``.

    Task k is trained only on the conditional subset ``y >= k`` (``y > k-1``) with target ``y > k``; the
    summed binary cross-entropy is divided by the total number of (example, task) pairs used.

    Args:
        logits: [B, C-1] conditional logits ``P(y > k | y > k-1)``.
        y: [B] long labels.
        num_classes: Number of classes C.

    Returns:
        0-dim loss.
    """
    y = y.long()
    k = torch.arange(num_classes - 1, device=logits.device)  # [C-1]
    mask = (y[:, None] >= k[None, :]).to(logits.dtype)  # [B, C-1] conditional training subsets
    target = (y[:, None] > k[None, :]).to(logits.dtype)  # [B, C-1]
    log_sig = F.logsigmoid(logits)
    term = log_sig * target + (log_sig - logits) * (1.0 - target)
    return -(term * mask).sum() / mask.sum().clamp_min(1.0)


def _check_method(method: str) -> None:
    if method not in _ORDINAL_METHODS:
        raise ConfigError(f"unknown ordinal method {method!r}; use 'coral' or 'corn'.")


def _ordinal_exceed_proba(logits: Tensor, method: str) -> Tensor:
    """[B, C-1] ``P(y > k)``: sigmoid for CORAL, cumulative product of sigmoids for CORN."""
    _check_method(method)
    prob = torch.sigmoid(logits)
    return prob if method == "coral" else torch.cumprod(prob, dim=1)


def ordinal_logits_to_label(logits: Tensor, method: str = "coral") -> Tensor:
    """Decode ordinal logits to labels: the number of thresholds with ``P(y > k) > 0.5``.

    Args:
        logits: [B, C-1] CORAL or CORN logits.
        method: ``"coral"`` or ``"corn"``.

    Returns:
        [B] long labels in ``[0, C)``.
    """
    return (_ordinal_exceed_proba(logits, method) > 0.5).sum(dim=1).long()


def ordinal_logits_to_proba(logits: Tensor, method: str = "coral") -> Tensor:
    """Class probabilities from ordinal logits.

    ``P(y = 0) = 1 - P(y > 0)``, ``P(y = k) = P(y > k-1) - P(y > k)``, ``P(y = C-1) = P(y > C-2)``; negative
    values (possible for CORAL, whose thresholds need not be monotone) are clipped to 0 and each row is
    renormalised to sum to 1.

    Args:
        logits: [B, C-1] CORAL or CORN logits.
        method: ``"coral"`` or ``"corn"``.

    Returns:
        [B, C] probabilities.
    """
    exceed = _ordinal_exceed_proba(logits, method)  # [B, C-1]
    ones = torch.ones_like(exceed[:, :1])
    zeros = torch.zeros_like(exceed[:, :1])
    upper = torch.cat([ones, exceed], dim=1)  # [B, C]: P(y > k-1)
    lower = torch.cat([exceed, zeros], dim=1)  # [B, C]: P(y > k)
    proba = (upper - lower).clamp_min(0.0)
    return proba / proba.sum(dim=1, keepdim=True).clamp_min(torch.finfo(proba.dtype).tiny)


# --------------------------------------------------------------------------------------------- regression
def gaussian_nll(
    mean: Tensor, log_var: Tensor, target: Tensor, reduction: str = "mean", full: bool = False
) -> Tensor:
    """Heteroscedastic Gaussian negative log-likelihood parameterised by the log-variance.

    ``0.5 * (log_var + (target - mean)^2 * exp(-log_var))`` (+ ``0.5 * log(2*pi)`` if ``full``); matches
    ``F.gaussian_nll_loss(mean, target, log_var.exp())`` without its variance clamp.

    Args:
        mean: [B] or [B, K] predicted means.
        log_var: Same shape, predicted log-variances.
        target: Same shape, targets.
        reduction: ``"mean"``, ``"sum"`` or ``"none"``.
        full: Add the constant term.

    Returns:
        0-dim loss, or per-element loss with ``reduction="none"``.
    """
    _check_reduction(reduction)
    target = target.to(mean.dtype)
    loss = 0.5 * (log_var + (target - mean).pow(2) * torch.exp(-log_var))
    if full:
        loss = loss + 0.5 * torch.log(torch.tensor(2.0 * torch.pi, dtype=loss.dtype, device=loss.device))
    return _reduce(loss, reduction)
