"""Similarity and learning-to-rank losses; import them from :mod:`bertkit.losses`.

Every loss returns a 0-dim tensor that carries grad. Where a batch holds no valid pair (or group), the
loss is ``scores.sum() * 0``: finite, zero, and still connected to the graph so ``backward()`` works.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _zero_with_grad(*tensors: Tensor) -> Tensor:
    return sum((t.sum() * 0.0 for t in tensors), torch.zeros((), device=tensors[0].device))


# ------------------------------------------------------------------------------------------- similarity
def cosent_loss(scores: Tensor, labels: Tensor, scale: float = 20.0) -> Tensor:
    """CoSENT loss (Su, 2022) as in sentence-transformers ``CoSENTLoss``.

    ``log(1 + sum_{(i, j): label_i > label_j} exp(scale * (s_j - s_i)))``: every pair whose gold order is
    known should have ``s_i > s_j``.

    Args:
        scores: [B] predicted similarities (usually cosine) of the B sentence pairs.
        labels: [B] float gold similarities (any scale; only their order matters).
        scale: Inverse temperature.

    Returns:
        0-dim loss (0 when all labels are equal).
    """
    scores = scores.reshape(-1) * scale  # [B]
    labels = labels.reshape(-1).to(scores.device)
    diff = scores[None, :] - scores[:, None]  # [B, B]: diff[i, j] = s_j - s_i
    ordered = labels[:, None] > labels[None, :]  # [B, B]: label_i > label_j
    diff = diff.masked_fill(~ordered, float("-inf"))
    diff = torch.cat([torch.zeros(1, dtype=diff.dtype, device=diff.device), diff.reshape(-1)])
    return torch.logsumexp(diff, dim=0)


def cosine_mse_loss(scores: Tensor, labels: Tensor) -> Tensor:
    """Mean squared error between predicted cosine similarities and gold scores (``CosineSimilarityLoss``).

    Args:
        scores: [B] predicted cosine similarities in [-1, 1].
        labels: [B] gold similarities on the same scale (e.g. STS-B rescaled to [0, 1]).

    Returns:
        0-dim loss.
    """
    scores = scores.reshape(-1)
    return F.mse_loss(scores, labels.reshape(-1).to(scores))


def contrastive_margin_loss(distances: Tensor, labels: Tensor, margin: float = 0.5) -> Tensor:
    """Contrastive loss (Hadsell et al., 2006) on **distances**, as sentence-transformers ``ContrastiveLoss``.

    ``0.5 * (y * d^2 + (1 - y) * relu(margin - d)^2)`` averaged over pairs: similar pairs (y=1) are pulled
    together, dissimilar ones (y=0) pushed at least ``margin`` apart. Pass cosine *distances*
    (``1 - cosine_similarity``), not similarities.

    Args:
        distances: [B] distances between the two embeddings of each pair (>= 0).
        labels: [B] 1 for similar pairs, 0 for dissimilar ones.
        margin: Minimum distance for dissimilar pairs.

    Returns:
        0-dim loss.
    """
    distances = distances.reshape(-1)
    labels = labels.reshape(-1).to(distances)
    losses = 0.5 * (labels * distances.pow(2) + (1.0 - labels) * F.relu(margin - distances).pow(2))
    return losses.mean()


def multiple_negatives_ranking_loss(
    emb_a: Tensor,
    emb_b: Tensor,
    temperature: float = 0.05,
    hard_negatives: Tensor | None = None,
    symmetric: bool = False,
) -> Tensor:
    """InfoNCE with in-batch negatives on cosine similarities (``MultipleNegativesRankingLoss``).

    Row i of ``cos(emb_a, [emb_b; hard_negatives]) / temperature`` is a softmax over candidates whose
    correct answer is column i (the diagonal); every other ``emb_b`` row and every hard negative are
    negatives. ``symmetric=True`` averages with the reverse direction (each ``emb_b`` row must pick its
    ``emb_a``; hard negatives are not used there), as ``MultipleNegativesSymmetricRankingLoss``.

    Args:
        emb_a: [B, D] anchor embeddings.
        emb_b: [B, D] positive embeddings (row i matches anchor i).
        temperature: Softmax temperature (0.05 = sentence-transformers' scale 20).
        hard_negatives: Optional [M, D] extra negatives (e.g. one per anchor, M = B) appended as columns.
        symmetric: Also compute the b -> a direction and average.

    Returns:
        0-dim loss.
    """
    a = F.normalize(emb_a, dim=-1)  # [B, D]
    b = F.normalize(emb_b, dim=-1)  # [B, D]
    candidates = b if hard_negatives is None else torch.cat([b, F.normalize(hard_negatives, dim=-1)], dim=0)
    logits = a @ candidates.T / temperature  # [B, B + M]
    target = torch.arange(a.shape[0], device=a.device)  # [B]
    loss = F.cross_entropy(logits, target)
    if symmetric:
        loss = 0.5 * (loss + F.cross_entropy(b @ a.T / temperature, target))
    return loss


# ---------------------------------------------------------------------------------------------- ranking
def _pair_masks(scores: Tensor, labels: Tensor, group_ids: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Flattened [N] scores/labels and the [N, N] mask of pairs (i, j) in one group with label_i > label_j."""
    scores = scores.reshape(-1)
    labels = torch.as_tensor(labels, device=scores.device).reshape(-1).to(scores.dtype)
    groups = torch.as_tensor(group_ids, device=scores.device).reshape(-1)
    pairs = (groups[:, None] == groups[None, :]) & (labels[:, None] > labels[None, :])  # [N, N]
    return scores, labels, pairs


def ranknet_loss(scores: Tensor, labels: Tensor, group_ids: Tensor) -> Tensor:
    """RankNet pairwise logistic loss, averaged over ordered pairs inside each group.

    For every pair (i, j) of one group with ``label_i > label_j``: ``log(1 + exp(-(s_i - s_j)))``.

    Args:
        scores: [N] model scores.
        labels: [N] 0/1 or graded relevance.
        group_ids: [N] query id of each row.

    Returns:
        0-dim loss; 0 (with grad) when no group has two different labels.
    """
    scores, _, pairs = _pair_masks(scores, labels, group_ids)
    if not bool(pairs.any()):
        return _zero_with_grad(scores)
    diff = scores[:, None] - scores[None, :]  # [N, N]: s_i - s_j
    return F.softplus(-diff[pairs]).mean()


def pairwise_margin_loss(scores: Tensor, labels: Tensor, group_ids: Tensor, margin: float = 1.0) -> Tensor:
    """Pairwise hinge loss: ``relu(margin - (s_i - s_j))`` averaged over in-group pairs with label_i > label_j.

    Args:
        scores: [N] model scores.
        labels: [N] 0/1 or graded relevance.
        group_ids: [N] query id of each row.
        margin: Required score gap between a better and a worse document.

    Returns:
        0-dim loss; 0 (with grad) when there is no valid pair.
    """
    scores, _, pairs = _pair_masks(scores, labels, group_ids)
    if not bool(pairs.any()):
        return _zero_with_grad(scores)
    diff = scores[:, None] - scores[None, :]
    return F.relu(margin - diff[pairs]).mean()


def listwise_softmax_loss(scores: Tensor, labels: Tensor, group_ids: Tensor) -> Tensor:
    """ListNet-style softmax cross-entropy, averaged over groups.

    For each group g: ``-sum_i (label_i / sum(label_g)) * log_softmax(scores_g)_i``. Groups whose labels
    sum to 0 (no positive) are skipped.

    Args:
        scores: [N] model scores.
        labels: [N] non-negative relevance (0/1 or graded).
        group_ids: [N] query id of each row.

    Returns:
        0-dim loss; 0 (with grad) when no group has a positive.
    """
    scores, labels, _ = _pair_masks(scores, labels, group_ids)
    groups = torch.as_tensor(group_ids, device=scores.device).reshape(-1)
    same = groups[:, None] == groups[None, :]  # [N, N]
    masked = (
        scores[None, :].expand(same.shape).masked_fill(~same, float("-inf"))
    )  # row i: scores of i's group
    log_p = scores - torch.logsumexp(masked, dim=1)  # [N] log-softmax within the group
    label_sum = (same.to(labels.dtype) * labels[None, :]).sum(dim=1)  # [N] label total of i's group
    valid = label_sum > 0  # [N]
    if not bool(valid.any()):
        return _zero_with_grad(scores)
    group_size = same.sum(dim=1).to(scores.dtype)  # [N]
    num_groups = (valid.to(scores.dtype) / group_size).sum()  # each valid group counted once
    target = torch.where(valid, labels / label_sum.clamp_min(1e-12), torch.zeros_like(labels))
    return -(target * log_p).sum() / num_groups
