"""Sparse word-embedding gradients with lazy AdamW rows: exact against AdamW where they must agree."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, tiny_bert_config

from bertkit import ConfigError, create_bert_with_head
from bertkit.config import TrainingConfig
from bertkit.data import TokenizedDataset, analyze_dataset, prepare_frame, read_table, tokenize_texts
from bertkit.training import Trainer
from bertkit.training.sparse_embeddings import LazyRowsAdamW, clip_gradients, use_sparse_embeddings


def _pair(sparse: bool) -> tuple[torch.nn.Embedding, torch.nn.Linear]:
    torch.manual_seed(0)
    return torch.nn.Embedding(20, 4, sparse=sparse), torch.nn.Linear(4, 1)


def _loss(emb: torch.nn.Embedding, lin: torch.nn.Linear, ids: list[int]) -> torch.Tensor:
    return lin(emb(torch.tensor([ids]))).pow(2).sum()


def test_lazy_rows_match_adamw_on_touched_rows_and_leave_the_rest() -> None:
    dense_e, dense_l = _pair(False)
    lazy_e, lazy_l = _pair(True)
    dense = torch.optim.AdamW([*dense_e.parameters(), *dense_l.parameters()], lr=0.1, weight_decay=0.0)
    lazy = LazyRowsAdamW(
        [{"params": list(lazy_l.parameters())}, {"params": [lazy_e.weight], "lazy_rows": True}],
        lr=0.1,
        weight_decay=0.0,
    )
    before = lazy_e.weight.detach().clone()
    for opt, e, lin in ((dense, dense_e, dense_l), (lazy, lazy_e, lazy_l)):
        _loss(e, lin, [3, 3, 7]).backward()  # row 3 twice: duplicate sparse rows must be summed
        opt.step()
        opt.zero_grad(set_to_none=True)
    # first step: AdamW moves only rows with gradient (zero moments elsewhere), so both agree exactly
    torch.testing.assert_close(lazy_e.weight, dense_e.weight)
    torch.testing.assert_close(lazy_l.weight, dense_l.weight)
    untouched = [r for r in range(20) if r not in (3, 7)]
    assert torch.equal(lazy_e.weight[untouched], before[untouched])
    # second step on other rows: dense AdamW keeps moving rows 3 and 7 by momentum, lazy AdamW does not
    after_first = lazy_e.weight.detach().clone()
    for opt, e, lin in ((dense, dense_e, dense_l), (lazy, lazy_e, lazy_l)):
        _loss(e, lin, [1, 2]).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    assert torch.equal(lazy_e.weight[[3, 7]], after_first[[3, 7]])
    assert not torch.equal(dense_e.weight[[3, 7]], after_first[[3, 7]])
    torch.testing.assert_close(lazy_e.weight[[1, 2]], dense_e.weight[[1, 2]], atol=1e-6, rtol=1e-5)
    assert set(lazy.state[lazy_e.weight]) == {"step", "exp_avg", "exp_avg_sq"}


def test_clip_gradients_uses_the_global_norm_of_dense_and_sparse_grads() -> None:
    dense_e, dense_l = _pair(False)
    sparse_e, sparse_l = _pair(True)
    _loss(dense_e, dense_l, [3, 3, 7]).backward()
    _loss(sparse_e, sparse_l, [3, 3, 7]).backward()
    ref = torch.nn.utils.clip_grad_norm_([*dense_e.parameters(), *dense_l.parameters()], 0.01)
    got = clip_gradients([*sparse_e.parameters(), *sparse_l.parameters()], 0.01)
    torch.testing.assert_close(got, ref)
    assert sparse_e.weight.grad is not None and sparse_e.weight.grad.is_sparse
    torch.testing.assert_close(sparse_e.weight.grad.to_dense(), dense_e.weight.grad)
    torch.testing.assert_close(sparse_l.weight.grad, dense_l.weight.grad)


def test_auto_mode_and_loud_refusals() -> None:
    emb = torch.nn.Embedding(5, 2)
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert use_sparse_embeddings(TrainingConfig(), emb, cpu, 1)
    assert not use_sparse_embeddings(TrainingConfig(), emb, cpu, 2)  # DDP
    assert not use_sparse_embeddings(TrainingConfig(adversarial="fgm"), emb, cpu, 1)
    assert not use_sparse_embeddings(TrainingConfig(torch_compile=True), emb, cpu, 1)
    assert not use_sparse_embeddings(TrainingConfig(), emb, cuda, 1)
    assert not use_sparse_embeddings(TrainingConfig(sparse_embedding_updates="off"), emb, cpu, 1)
    emb.weight.requires_grad_(False)
    assert not use_sparse_embeddings(TrainingConfig(sparse_embedding_updates="on"), emb, cpu, 1)
    with pytest.raises(ConfigError, match="adversarial"):
        use_sparse_embeddings(
            TrainingConfig(sparse_embedding_updates="on", adversarial="fgm"), torch.nn.Embedding(5, 2), cpu, 1
        )
    with pytest.raises(ConfigError):
        TrainingConfig(sparse_embedding_updates="maybe")


def test_trainer_with_sparse_embeddings_learns_and_moves_only_seen_rows(tokenizer, tmp_path) -> None:
    df = read_table(REPO_ROOT / "bertkit" / "data" / "examples" / "demo_reviews.csv").iloc[:96]
    profile = analyze_dataset(df)
    prep = prepare_frame(df, profile)
    data = TokenizedDataset(tokenize_texts(tokenizer, prep.texts_a, max_length=24), prep.targets)
    torch.manual_seed(0)
    model = create_bert_with_head(
        num_labels=2,
        label_names=profile.label_names,
        bert_config=tiny_bert_config("bert"),
        tokenizer=tokenizer,
    )
    table = model.bert.get_input_embeddings().weight.detach().clone()
    cfg = TrainingConfig(
        epochs=3, batch_size=16, learning_rate=2e-3, progress=False, device="cpu", log_every=1
    )
    result = Trainer(model, tmp_path, cfg).train(data, data)
    losses = result.history["train_loss"].dropna().to_numpy()
    assert losses[-1] < losses[0]
    after = model.bert.get_input_embeddings()
    assert after.sparse is False  # restored for later use
    seen = np.unique(np.concatenate([np.asarray(f) for f in data.features["input_ids"]]))
    moved = np.flatnonzero((after.weight.detach() != table).any(dim=1).numpy())
    assert len(moved) > 0 and set(moved) <= set(seen.tolist())
