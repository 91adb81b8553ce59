"""Tests for bertkit.losses: reference equalities, hand values, orderings and finite gradients."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F

from bertkit import losses as L
from bertkit.errors import ConfigError


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


# -------------------------------------------------------------------------------------------------- focal
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_focal_multiclass_gamma0_equals_cross_entropy(reduction: str) -> None:
    logits = torch.randn(7, 4, dtype=torch.float64)
    targets = torch.tensor([0, 3, 1, 2, -100, 3, 0])
    weights = torch.tensor([1.0, 2.0, 0.5, 3.0], dtype=torch.float64)
    for w, eps in [(None, 0.0), (weights, 0.0), (None, 0.1), (weights, 0.2)]:
        ours = L.focal_loss_multiclass(
            logits, targets, gamma=0.0, class_weights=w, label_smoothing=eps, reduction=reduction
        )
        ref = F.cross_entropy(logits, targets, weight=w, label_smoothing=eps, reduction=reduction)
        torch.testing.assert_close(ours, ref)


def test_focal_multiclass_downweights_easy_examples_and_token_shape() -> None:
    logits = torch.tensor([[5.0, 0.0, 0.0], [0.0, 0.0, 0.1]])
    targets = torch.tensor([0, 2])
    per = L.focal_loss_multiclass(logits, targets, gamma=2.0, reduction="none")
    ce = F.cross_entropy(logits, targets, reduction="none")
    p_t = torch.exp(-ce)
    torch.testing.assert_close(per, (1 - p_t) ** 2 * ce)
    assert per[0] / ce[0] < per[1] / ce[1]
    tokens = L.focal_loss_multiclass(torch.randn(2, 5, 3), torch.randint(0, 3, (2, 5)), reduction="none")
    assert tokens.shape == (2, 5)


def test_focal_multiclass_all_ignored_is_zero_with_grad() -> None:
    logits = torch.randn(3, 4, requires_grad=True)
    loss = L.focal_loss_multiclass(logits, torch.full((3,), -100))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(logits.grad).all()


def test_focal_binary_gamma0_equals_bce_and_hand_value() -> None:
    logits = torch.randn(6, 3, dtype=torch.float64)
    targets = torch.randint(0, 2, (6, 3)).double()
    pos_weight = torch.tensor([1.0, 3.0, 0.5], dtype=torch.float64)
    ours = L.focal_loss_binary(logits, targets, gamma=0.0, pos_weight=pos_weight)
    ref = F.binary_cross_entropy_with_logits(logits, targets, pos_weight=pos_weight)
    torch.testing.assert_close(ours, ref)
    # logit 0, target 1: p_t = 0.5, CE = log 2, modulation 0.25, alpha 0.25
    one = L.focal_loss_binary(torch.tensor([0.0]), torch.tensor([1.0]), gamma=2.0, alpha=0.25)
    assert one.item() == pytest.approx(0.25 * 0.25 * math.log(2))
    with pytest.raises(ConfigError):
        L.focal_loss_binary(logits, targets, reduction="avg")


# ------------------------------------------------------------------------------------------------ ordinal
def test_ordinal_levels() -> None:
    levels = L.ordinal_levels(torch.tensor([0, 2, 3]), num_classes=4)
    assert levels.tolist() == [[0, 0, 0], [1, 1, 0], [1, 1, 1]]


def test_coral_loss_equals_summed_bce() -> None:
    logits = torch.randn(5, 3)
    y = torch.tensor([0, 1, 2, 3, 2])
    levels = L.ordinal_levels(y, 4)
    ref = F.binary_cross_entropy_with_logits(logits, levels, reduction="none").sum(1).mean()
    torch.testing.assert_close(L.coral_loss(logits, y, 4), ref)
    imp = torch.tensor([1.0, 0.0, 0.0])
    ref_imp = F.binary_cross_entropy_with_logits(logits[:, 0], levels[:, 0], reduction="sum") / 5
    torch.testing.assert_close(L.coral_loss(logits, y, 4, importance=imp), ref_imp)


def _corn_reference(logits: torch.Tensor, y: torch.Tensor, num_classes: int) -> torch.Tensor:
    """coral_pytorch's loop implementation of the CORN loss."""
    num_examples, total = 0, torch.zeros(())
    for k in range(num_classes - 1):
        mask = y > k - 1
        labels = (y[mask] > k).float()
        if len(labels) < 1:
            continue
        num_examples += len(labels)
        pred = logits[mask, k]
        total = total - torch.sum(F.logsigmoid(pred) * labels + (F.logsigmoid(pred) - pred) * (1 - labels))
    return total / num_examples


def test_corn_loss_matches_reference_loop() -> None:
    logits = torch.randn(8, 4)
    y = torch.tensor([0, 1, 2, 3, 4, 4, 1, 0])
    torch.testing.assert_close(L.corn_loss(logits, y, 5), _corn_reference(logits, y, 5))


@pytest.mark.parametrize("method", ["coral", "corn"])
def test_ordinal_decode_round_trip(method: str) -> None:
    num_classes = 5
    y = torch.arange(num_classes)
    k = torch.arange(num_classes - 1)
    # CORAL: P(y > k) high iff y > k. CORN: P(y > k | y > k-1) high iff y > k (same sign pattern).
    logits = torch.where(y[:, None] > k[None, :], 10.0, -10.0)
    assert L.ordinal_logits_to_label(logits, method).tolist() == y.tolist()
    proba = L.ordinal_logits_to_proba(logits, method)
    assert proba.shape == (num_classes, num_classes)
    torch.testing.assert_close(proba.sum(1), torch.ones(num_classes))
    assert (proba >= 0).all() and proba.argmax(1).tolist() == y.tolist()
    with pytest.raises(ConfigError):
        L.ordinal_logits_to_label(logits, "ordinal")


def test_coral_proba_clips_non_monotone_thresholds() -> None:
    logits = torch.tensor([[-2.0, 3.0]])  # P(y>0) < P(y>1): inconsistent
    proba = L.ordinal_logits_to_proba(logits, "coral")
    assert proba[0, 1] == 0.0 and proba.sum().item() == pytest.approx(1.0)


def test_gaussian_nll_matches_torch() -> None:
    mean, log_var, target = torch.randn(6), torch.randn(6), torch.randn(6)
    for full in (False, True):
        ref = F.gaussian_nll_loss(mean, target, log_var.exp(), full=full)
        torch.testing.assert_close(L.gaussian_nll(mean, log_var, target, full=full), ref)


# --------------------------------------------------------------------------------------------- similarity
def test_cosent_hand_value_and_ordering() -> None:
    labels = torch.tensor([0.0, 0.5, 1.0])
    good = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)  # float32 log1p-level rounding is ~1e-4 rel
    bad = good.flip(0)
    s = 20.0 * good
    # pairs (i, j) with label_i > label_j: (1,0), (2,0), (2,1)
    expected = math.log(1 + sum(math.exp(s[j] - s[i]) for i, j in [(1, 0), (2, 0), (2, 1)]))
    assert L.cosent_loss(good, labels).item() == pytest.approx(expected, rel=1e-5)
    assert L.cosent_loss(good, labels) < L.cosent_loss(bad, labels)
    scores = torch.tensor([0.3, 0.7], requires_grad=True)
    tie = L.cosent_loss(scores, torch.tensor([1.0, 1.0]))  # no ordered pair: log(1) = 0
    tie.backward()
    assert tie.item() == 0.0 and torch.isfinite(scores.grad).all()


def test_cosine_mse_and_contrastive() -> None:
    assert L.cosine_mse_loss(torch.tensor([0.5, 1.0]), torch.tensor([0.0, 1.0])).item() == pytest.approx(
        0.125
    )
    d = torch.tensor([0.2, 0.1, 0.7])  # distances
    y = torch.tensor([1, 0, 0])
    expected = 0.5 * (0.2**2 + 0.4**2 + 0.0) / 3
    assert L.contrastive_margin_loss(d, y, margin=0.5).item() == pytest.approx(expected)


def test_mnrl_aligned_lower_than_shuffled() -> None:
    a = torch.randn(8, 16)
    b = a + 0.05 * torch.randn(8, 16)
    aligned = L.multiple_negatives_ranking_loss(a, b)
    shuffled = L.multiple_negatives_ranking_loss(a, b.roll(1, dims=0))
    assert aligned < shuffled
    logits = F.normalize(a, dim=-1) @ F.normalize(b, dim=-1).T / 0.05
    torch.testing.assert_close(aligned, F.cross_entropy(logits, torch.arange(8)))
    hard = torch.randn(8, 16)
    with_hard = L.multiple_negatives_ranking_loss(a, b, hard_negatives=hard)
    assert with_hard >= aligned  # extra columns can only add mass to the denominator
    sym = L.multiple_negatives_ranking_loss(a, b, symmetric=True)
    reverse = F.cross_entropy(logits.T, torch.arange(8))
    torch.testing.assert_close(sym, 0.5 * (aligned + reverse))


# ------------------------------------------------------------------------------------------------ ranking
def test_ranknet_and_margin_hand_values() -> None:
    scores = torch.tensor([2.0, 0.0, 1.0, 5.0])
    labels = torch.tensor([1, 0, 1, 0])
    groups = torch.tensor([0, 0, 1, 2])  # only the pair (0, 1) is valid
    assert L.ranknet_loss(scores, labels, groups).item() == pytest.approx(math.log1p(math.exp(-2.0)))
    assert L.pairwise_margin_loss(scores, labels, groups, margin=3.0).item() == pytest.approx(1.0)
    graded = L.ranknet_loss(torch.tensor([0.0, 0.0, 0.0]), torch.tensor([2.0, 1.0, 0.0]), torch.zeros(3))
    assert graded.item() == pytest.approx(math.log(2))  # three ordered pairs, each log(1 + e^0)


def _listwise_reference(scores: torch.Tensor, labels: torch.Tensor, groups: torch.Tensor) -> torch.Tensor:
    losses = []
    for g in groups.unique():
        m = groups == g
        if labels[m].sum() <= 0:
            continue
        target = labels[m] / labels[m].sum()
        losses.append(-(target * F.log_softmax(scores[m], dim=0)).sum())
    return torch.stack(losses).mean()


def test_listwise_matches_reference_and_skips_groups_without_positive() -> None:
    scores = torch.randn(9)
    labels = torch.tensor([1.0, 0.0, 0.0, 2.0, 1.0, 0.0, 0.0, 0.0, 0.0])
    groups = torch.tensor([0, 0, 0, 1, 1, 1, 2, 2, 3])
    torch.testing.assert_close(
        L.listwise_softmax_loss(scores, labels, groups), _listwise_reference(scores, labels, groups)
    )


@pytest.mark.parametrize("fn", [L.ranknet_loss, L.pairwise_margin_loss, L.listwise_softmax_loss])
def test_ranking_losses_without_valid_pairs_are_zero_with_grad(fn: Callable[..., torch.Tensor]) -> None:
    scores = torch.randn(4, requires_grad=True)
    loss = fn(scores, torch.tensor([0, 0, 1, 0]), torch.tensor([0, 0, 1, 2]))
    assert loss.dim() == 0 and loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(scores.grad).all()


# -------------------------------------------------------------------------------------- gradient hygiene
def test_all_losses_backprop_finite_gradients_on_extreme_logits() -> None:
    big = torch.tensor([[40.0, -40.0, 0.0], [-60.0, 60.0, 5.0]], requires_grad=True)
    y = torch.tensor([0, 2])
    emb = torch.randn(2, 4, requires_grad=True)
    terms = [
        L.focal_loss_multiclass(big, y, gamma=2.0, label_smoothing=0.1),
        L.focal_loss_multiclass(big, y, gamma=0.5),
        L.focal_loss_binary(big, torch.ones_like(big), gamma=2.0, alpha=0.25),
        L.coral_loss(big, torch.tensor([3, 0]), num_classes=4),
        L.corn_loss(big, torch.tensor([3, 0]), num_classes=4),
        L.gaussian_nll(big[:, 0], big[:, 1], torch.zeros(2)),
        L.cosent_loss(big[:, 0], torch.tensor([0.0, 1.0])),
        L.ranknet_loss(big.reshape(-1), torch.tensor([1, 0, 0, 1, 0, 0]), torch.tensor([0, 0, 0, 1, 1, 1])),
        L.listwise_softmax_loss(
            big.reshape(-1), torch.tensor([1, 0, 0, 1, 0, 0]), torch.tensor([0, 0, 0, 1, 1, 1])
        ),
        L.multiple_negatives_ranking_loss(emb, emb.flip(0), hard_negatives=emb * 2, symmetric=True),
    ]
    for term in terms:
        assert term.dim() == 0 and torch.isfinite(term)
    sum(terms).backward()
    assert torch.isfinite(big.grad).all() and torch.isfinite(emb.grad).all()
