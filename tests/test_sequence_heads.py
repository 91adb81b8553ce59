"""Sequence (time-series) heads learn order-dependent tasks that a bag of embeddings cannot solve."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression

from bertkit.config import HeadConfig
from bertkit.errors import ConfigError
from bertkit.heads.sequence import (
    TimeSeriesClassificationHead,
    TimeSeriesRegressionHead,
    decompose_series,
    group_sequences,
)

DIM = 16


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models: one intra-op thread is faster than two on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _order_task(n: int, seed: int, noise: float = 0.3) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sequences of 4 or 6 documents, half near prototype A, half near B, in random order.

    Label 1 when the first A comes before the first B. Every sequence holds as many A as B documents, so the
    mean embedding carries no information about the label.
    """
    protos = F.normalize(torch.randn(2, DIM, generator=torch.Generator().manual_seed(123)), dim=-1)  # A, B
    g = torch.Generator().manual_seed(seed)
    x = torch.zeros(n, 6, DIM)
    mask = torch.zeros(n, 6, dtype=torch.long)
    y = torch.zeros(n, dtype=torch.long)
    for i in range(n):
        length = 4 if torch.rand((), generator=g) < 0.5 else 6
        kinds = torch.tensor([0, 1] * (length // 2))[torch.randperm(length, generator=g)]  # 0 = A, 1 = B
        docs = protos[kinds] + noise * torch.randn(length, DIM, generator=g) / DIM**0.5
        x[i, :length] = F.normalize(docs, dim=-1)
        mask[i, :length] = 1
        y[i] = int(kinds[0] == 0)
    return x, mask, y


def _mean_embedding(x: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    m = mask.unsqueeze(-1).float()
    return ((x * m).sum(1) / m.sum(1)).numpy()


def _train(head: torch.nn.Module, batches: int, step_fn, lr: float = 1e-2) -> None:
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    head.train()
    for step in range(batches):
        opt.zero_grad()
        loss = step_fn(step)
        loss.backward()
        opt.step()
    head.eval()


@pytest.mark.parametrize("rnn", ["lstm", "gru"])
def test_classification_head_learns_order(rnn: str) -> None:
    torch.manual_seed(0)
    x_tr, m_tr, y_tr = _order_task(1024, seed=1)
    x_te, m_te, y_te = _order_task(400, seed=2)
    assert 0.4 < y_tr.float().mean() < 0.6  # balanced
    bag = LogisticRegression(max_iter=1000).fit(_mean_embedding(x_tr, m_tr), y_tr.numpy())
    bag_acc = bag.score(_mean_embedding(x_te, m_te), y_te.numpy())
    assert bag_acc < 0.6, f"bag-of-embeddings baseline should be at chance, got {bag_acc:.2f}"

    cfg = HeadConfig(
        head_type="timeseries_classification",
        input_size=DIM,
        num_labels=2,
        dropout_prob=0.0,
        extra={"rnn": rnn, "bidirectional": rnn == "lstm", "rnn_hidden": 32},
    )
    head = TimeSeriesClassificationHead(cfg)

    def step(i: int) -> torch.Tensor:
        idx = torch.randint(0, len(y_tr), (64,))
        out = head(x_tr[idx], sequence_mask=m_tr[idx])
        return head.compute_loss(out, y_tr[idx])

    _train(head, 150, step)
    with torch.no_grad():
        out = head(x_te, sequence_mask=m_te)
    acc = (out["predictions"] == y_te).float().mean().item()
    assert acc >= 0.85, f"accuracy {acc:.2f} (bag baseline {bag_acc:.2f})"
    metrics = head.compute_metrics({k: v.numpy() for k, v in out.items()}, y_te.numpy())
    assert metrics["accuracy"] == pytest.approx(acc)


def test_left_and_right_padding_give_the_same_output() -> None:
    torch.manual_seed(0)
    head = TimeSeriesClassificationHead(
        HeadConfig(
            head_type="timeseries_classification", input_size=DIM, num_labels=3, extra={"rnn_hidden": 8}
        )
    ).eval()
    x, mask, _ = _order_task(5, seed=3)
    right = head(x, mask)["logits"]
    lengths = mask.sum(1)
    x_left, m_left = torch.zeros_like(x), torch.zeros_like(mask)
    for i, n in enumerate(lengths.tolist()):
        x_left[i, 6 - n :] = x[i, :n]
        m_left[i, 6 - n :] = 1
    x_left = torch.where(m_left.bool().unsqueeze(-1), x_left, torch.randn_like(x_left))  # junk in padding
    torch.testing.assert_close(head(x_left, m_left)["logits"], right)
    assert head(x[:, 0])["logits"].shape == (5, 3)  # a pooled [B, H] input is a length-one sequence


def _sine_task(
    n: int, seed: int, length: int = 12, horizon: int = 3, level_scale: float = 3.0
) -> tuple[torch.Tensor, ...]:
    """Document embeddings that encode the value of a sine series (one document per step); predict the next
    ``horizon`` values. Returns (docs [N, L, D], series history [N, L], targets [N, horizon])."""
    g = torch.Generator().manual_seed(seed)
    direction = F.normalize(torch.randn(DIM, generator=torch.Generator().manual_seed(7)), dim=0)
    omega = 0.3 + 0.5 * torch.rand(n, 1, generator=g)
    phase = 2 * torch.pi * torch.rand(n, 1, generator=g)
    level = level_scale * torch.randn(n, 1, generator=g)
    t = torch.arange(length + horizon).float()
    series = level + torch.sin(omega * t + phase) + 0.02 * torch.randn(n, length + horizon, generator=g)
    history, future = series[:, :length], series[:, length:]
    docs = (history - level).unsqueeze(-1) * direction + 0.05 * torch.randn(n, length, DIM, generator=g)
    return docs, history, future


def _rmse(pred: torch.Tensor, true: torch.Tensor) -> float:
    return float((pred - true).pow(2).mean().sqrt())


def test_regression_head_forecasts_from_document_sequence() -> None:
    torch.manual_seed(0)
    docs, _, future = _sine_task(1024, seed=1, level_scale=0.0)
    docs_te, _, future_te = _sine_task(300, seed=2, level_scale=0.0)
    head = TimeSeriesRegressionHead(
        HeadConfig(
            head_type="timeseries_regression",
            input_size=DIM,
            dropout_prob=0.0,
            extra={"rnn": "gru", "bidirectional": False, "rnn_hidden": 32, "horizon": 3},
        )
    )
    head.prepare_targets(future.numpy())
    mask = torch.ones(docs.shape[:2], dtype=torch.long)

    def step(i: int) -> torch.Tensor:
        idx = torch.randint(0, len(docs), (64,))
        return head.compute_loss(head(docs[idx], sequence_mask=mask[idx]), future[idx])

    _train(head, 200, step)
    with torch.no_grad():
        out = head(docs_te, sequence_mask=mask[: len(docs_te)])
    assert out["predictions"].shape == (300, 3)
    baseline = _rmse(torch.full_like(future_te, float(future.mean())), future_te)
    rmse = _rmse(out["predictions"], future_te)
    assert rmse < 0.5 * baseline, f"rmse {rmse:.3f} vs naive mean {baseline:.3f}"


def test_regression_head_with_decomposed_history() -> None:
    torch.manual_seed(0)
    docs, history, future = _sine_task(1024, seed=3)
    docs_te, history_te, future_te = _sine_task(300, seed=4)
    noise_docs = torch.randn_like(docs)  # the texts carry no information here: the history does
    head = TimeSeriesRegressionHead(
        HeadConfig(
            head_type="timeseries_regression",
            input_size=DIM,
            dropout_prob=0.0,
            extra={
                "rnn": "gru",
                "rnn_hidden": 32,
                "horizon": 3,
                "decomposition": True,
                "decomposition_window": 3,
            },
        )
    )
    head.prepare_targets(future.numpy())

    def step(i: int) -> torch.Tensor:
        idx = torch.randint(0, len(docs), (64,))
        return head.compute_loss(head(noise_docs[idx], target_history=history[idx]), future[idx])

    _train(head, 200, step)
    with torch.no_grad():
        out = head(torch.randn_like(docs_te), target_history=history_te)
    baseline = _rmse(torch.full_like(future_te, float(future.mean())), future_te)
    rmse = _rmse(out["predictions"], future_te)
    persistence = _rmse(history_te[:, -1:].expand_as(future_te), future_te)  # repeat the last value
    assert rmse < 0.25 * baseline, f"rmse {rmse:.3f} vs naive mean {baseline:.3f}"
    assert rmse < 0.6 * persistence, f"rmse {rmse:.3f} vs last-value forecast {persistence:.3f}"
    metrics = head.compute_metrics({k: v.numpy() for k, v in out.items()}, future_te.numpy())
    assert {"mape", "smape", "rmse", "directional_accuracy"} <= set(metrics)
    assert metrics["rmse"] == pytest.approx(rmse, rel=1e-4) and metrics["directional_accuracy"] > 0.6
    cols = head.format_predictions({k: v.numpy() for k, v in out.items()})
    assert list(cols) == ["prediction_1", "prediction_2", "prediction_3"]
    with pytest.raises(ConfigError, match="target_history"):
        head(docs_te[:2])


def test_decompose_series() -> None:
    x = torch.randn(3, 10)
    trend, rest = decompose_series(x, window=5)
    torch.testing.assert_close(trend + rest, x)
    line = torch.arange(10.0).unsqueeze(0)
    trend, _ = decompose_series(line, window=3)
    torch.testing.assert_close(trend[:, 1:-1], line[:, 1:-1])  # a moving average keeps a line (inside)
    const = torch.full((1, 4), 2.0)
    torch.testing.assert_close(decompose_series(const, window=9)[0], const)


def test_group_sequences_orders_by_time() -> None:
    emb = torch.arange(6.0).unsqueeze(-1).repeat(1, 2)  # document i has embedding [i, i]
    ids = ["u", "v", "u", "u", "v", "w"]
    times = [3, 2, 1, 2, 1, 5]
    seq, mask, order = group_sequences(emb, ids, times)
    assert order == ["u", "v", "w"] and seq.shape == (3, 3, 2)
    assert seq[0, :, 0].tolist() == [2.0, 3.0, 0.0]  # u: t=1 (doc 2), t=2 (doc 3), t=3 (doc 0)
    assert seq[1, :2, 0].tolist() == [4.0, 1.0] and mask.tolist() == [[1, 1, 1], [1, 1, 0], [1, 0, 0]]
    seq, mask, _ = group_sequences(emb, ids, times, max_length=2)
    assert seq[0, :, 0].tolist() == [3.0, 0.0]  # the two most recent documents of u
