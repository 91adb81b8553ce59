"""PCGrad: the projection formula on hand-built conflicts, and the accumulator on a tiny shared layer."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bertkit.errors import ConfigError
from bertkit.multitask.pcgrad import (
    PCGradAccumulator,
    balance_norms,
    count_conflicts,
    pcgrad_project,
)


def _manual(gi: torch.Tensor, others: list[torch.Tensor]) -> torch.Tensor:
    g = gi.clone()
    for gj in others:
        dot = g @ gj
        if dot < 0:
            g = g - dot / (gj @ gj) * gj
    return g


def test_two_task_conflict_matches_formula() -> None:
    g1 = torch.tensor([1.0, 0.0])
    g2 = torch.tensor([-1.0, 1.0])  # g1 · g2 = -1 < 0: a conflict
    p1, p2 = pcgrad_project([g1, g2])
    # g1' = g1 - (g1·g2)/||g2||² g2 = [1, 0] + 0.5 [-1, 1]
    assert torch.allclose(p1, torch.tensor([0.5, 0.5]))
    # g2' = g2 - (g2·g1)/||g1||² g1 = [-1, 1] + [1, 0]
    assert torch.allclose(p2, torch.tensor([0.0, 1.0]))
    # the projected gradients no longer conflict with the other task's original gradient
    assert float(p1 @ g2) == pytest.approx(0.0, abs=1e-7)
    assert float(p2 @ g1) == pytest.approx(0.0, abs=1e-7)
    assert torch.allclose(p1 + p2, torch.tensor([0.5, 1.5]))


def test_no_conflict_leaves_gradients_unchanged() -> None:
    g1, g2 = torch.tensor([1.0, 2.0, 0.0]), torch.tensor([0.5, 0.0, 3.0])  # dot = 0.5 > 0
    p1, p2 = pcgrad_project([g1, g2])
    assert torch.equal(p1, g1) and torch.equal(p2, g2)
    assert count_conflicts([g1, g2]) == 0


def test_three_tasks_follow_the_given_random_order() -> None:
    g = [torch.tensor([1.0, 0.0, 0.0]), torch.tensor([-1.0, 1.0, 0.0]), torch.tensor([-1.0, -1.0, 1.0])]
    orders = [[2, 1], [0, 2], [1, 0]]
    out = pcgrad_project(g, orders=orders)
    for i, order in enumerate(orders):
        assert torch.allclose(out[i], _manual(g[i], [g[j] for j in order]))
    # a seeded generator gives reproducible orders
    a = pcgrad_project(g, generator=torch.Generator().manual_seed(3))
    b = pcgrad_project(g, generator=torch.Generator().manual_seed(3))
    assert all(torch.equal(x, y) for x, y in zip(a, b))
    with pytest.raises(ConfigError):
        pcgrad_project(g, orders=[[1, 1], [0, 2], [1, 0]])


def test_accumulator_projects_shared_and_keeps_task_gradients() -> None:
    torch.manual_seed(0)
    shared = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        shared.weight.copy_(torch.tensor([[1.0, 1.0]]))
    head_a, head_b = nn.Parameter(torch.tensor(2.0)), nn.Parameter(torch.tensor(-3.0))
    x = torch.tensor([[1.0, 0.0]])
    y = torch.tensor([[0.0, 1.0]])
    acc = PCGradAccumulator(list(shared.parameters()))
    (head_a * shared(x)).sum().backward()  # d/dw = head_a * x = [2, 0]
    acc.collect()
    (head_b * shared(y) + shared(x)).sum().backward()  # d/dw = head_b * y + x = [1, -3]
    acc.collect()
    assert head_a.grad is not None and head_b.grad is not None  # task parameters untouched
    conflicts = acc.apply()
    g1, g2 = torch.tensor([2.0, 0.0]), torch.tensor([1.0, -3.0])  # dot = 2 > 0: no conflict
    assert conflicts == 0
    assert torch.allclose(shared.weight.grad.view(-1), g1 + g2)
    # now a conflicting pair
    shared.weight.grad = None
    acc.grads = []
    (head_a * shared(x)).sum().backward()  # [2, 0]
    acc.collect()
    (-shared(x) + shared(y)).sum().backward()  # [-1, 1]
    acc.collect()
    assert acc.apply() == 1
    expected = sum(pcgrad_project([torch.tensor([2.0, 0.0]), torch.tensor([-1.0, 1.0])]))
    assert torch.allclose(shared.weight.grad.view(-1), expected)


def test_balance_norms_equalises_to_the_mean_and_keeps_zeros() -> None:
    g = [torch.tensor([3.0, 4.0]), torch.tensor([0.0, 1.0]), torch.zeros(2)]  # norms 5, 1, 0
    out = balance_norms(g)
    assert [round(float(x.norm()), 6) for x in out] == [3.0, 3.0, 0.0]  # mean of the non-zero norms
    assert torch.allclose(out[0], torch.tensor([1.8, 2.4])) and torch.allclose(
        out[1], torch.tensor([0.0, 3.0])
    )
    assert all(torch.equal(a, b) for a, b in zip(balance_norms([torch.zeros(3)]), [torch.zeros(3)]))


def test_accumulator_balances_before_projecting() -> None:
    shared = nn.Linear(2, 1, bias=False)
    acc = PCGradAccumulator(list(shared.parameters()), balance="mean_norm")
    x, y = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 1.0]])
    (10.0 * shared(x)).sum().backward()  # [10, 0]
    acc.collect()
    (-shared(x) + shared(y)).sum().backward()  # [-1, 1]: conflicts, 7x smaller
    acc.collect()
    assert acc.norms == pytest.approx([10.0, 2**0.5])
    assert acc.apply() == 1
    raw = [torch.tensor([10.0, 0.0]), torch.tensor([-1.0, 1.0])]
    expected = sum(pcgrad_project(balance_norms(raw)))
    assert torch.allclose(shared.weight.grad.view(-1), expected)
    assert not torch.allclose(expected, sum(pcgrad_project(raw)))  # the balancing changed the update
    with pytest.raises(ConfigError, match="mean_norm"):
        PCGradAccumulator(list(shared.parameters()), balance="max")


def test_gradient_balance_needs_pcgrad() -> None:
    from bertkit.multitask.config import MultiTaskTrainingConfig

    assert MultiTaskTrainingConfig(gradient_surgery="pcgrad", gradient_balance="mean_norm").gradient_balance
    with pytest.raises(ConfigError, match="gradient_surgery: pcgrad"):
        MultiTaskTrainingConfig(gradient_balance="mean_norm")
