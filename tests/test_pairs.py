"""Pair tasks: similarity / contrastive / ranking heads, the pair runner end to end, embed, bad inputs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_bert_config
from typer.testing import CliRunner

from bertkit import BertWithHead, create_bert_with_head, losses
from bertkit.cli import app
from bertkit.errors import ConfigError, DataError
from bertkit.heads.pairs import info_nce_loss, label_retrieval_metrics
from bertkit.tasks.pairs import GroupedDataset, PairCollator, PairDataset

runner = CliRunner()
FAST = [
    "--epochs",
    "1",
    "--batch-size",
    "16",
    "--max-length",
    "32",
    "--lr",
    "1e-3",
    "--set",
    "training.progress=false",
    "--set",
    "training.num_threads=1",
]
WORDS = [
    "cat",
    "dog",
    "bird",
    "fish",
    "horse",
    "lion",
    "tiger",
    "bear",
    "wolf",
    "fox",
    "sheep",
    "goat",
    "cow",
    "pig",
    "duck",
    "owl",
]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Any:
    """One torch thread: on a shared, loaded CPU two threads are many times slower for tiny models."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory: pytest.TempPathFactory, tokenizer: Any) -> Path:
    """A tiny random BERT saved as a Hugging Face folder (config + safetensors + tokenizer)."""
    from bertkit import create_bert_core

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_pair_bert")
    create_bert_core(config=tiny_bert_config("bert")).model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _sent(rng: np.random.Generator, k: int) -> str:
    return " ".join(rng.choice(WORDS, k))


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Toy STS-like scores, ranking groups (some without a positive) and anchor/positive/negative triplets."""
    rng = np.random.default_rng(0)
    out = tmp_path_factory.mktemp("pair_data")
    sts = [
        {
            "id": f"r{i}",
            "q": (a := _sent(rng, 5)),
            "a": a if i % 2 else _sent(rng, 5),
            "score": 5.0 if i % 2 else float(rng.uniform(0, 2)),
        }
        for i in range(60)
    ]
    pd.DataFrame(sts).to_csv(out / "sts.csv", index=False)
    rank = []
    for q in range(24):
        query = _sent(rng, 4)
        for c in range(4):
            pos = c == q % 4 and q % 6 != 0  # every 6th query has no positive
            rank.append(
                {
                    "query_id": f"q{q}",
                    "text_a": query,
                    "text_b": query if c == q % 4 else _sent(rng, 6),
                    "label": int(pos),
                }
            )
    pd.DataFrame(rank).to_csv(out / "rank.csv", index=False)
    trip = [
        {"anchor": (a := _sent(rng, 4)), "positive": a + " " + _sent(rng, 1), "negative": _sent(rng, 5)}
        for _ in range(48)
    ]
    pd.DataFrame(trip).to_csv(out / "triplets.csv", index=False)
    return out


def _model(head: str, tokenizer: Any, **kw: Any) -> BertWithHead:
    torch.manual_seed(0)
    return create_bert_with_head(
        head_type=head, bert_config=tiny_bert_config("bert"), tokenizer=tokenizer, **kw
    )


def _pair_batch(tokenizer: Any, n: int = 4) -> dict[str, torch.Tensor]:
    rng = np.random.default_rng(1)
    a = tokenizer([_sent(rng, 3) for _ in range(n)], padding=True, return_tensors="pt")
    b = tokenizer([_sent(rng, 6) for _ in range(n)], padding=True, return_tensors="pt")
    return {
        "input_ids": a["input_ids"],
        "attention_mask": a["attention_mask"],
        "input_ids_b": b["input_ids"],
        "attention_mask_b": b["attention_mask"],
    }


def _cli(*args: Any) -> Any:
    return runner.invoke(app, [str(a) for a in args])


# ------------------------------------------------------------------------------------------ heads
@pytest.mark.parametrize("similarity", ["cosine", "dot", "learned"])
def test_similarity_functions_and_output_contract(similarity: str, tokenizer: Any) -> None:
    model = _model("text_similarity", tokenizer, extra={"similarity": similarity}).eval()
    batch = _pair_batch(tokenizer)
    out = model(**batch)
    u, v = out["embeddings_1"], out["embeddings_2"]
    assert u.shape == v.shape == (4, 32) and out["similarity_score"].shape == (4,)
    expected = {"cosine": F.cosine_similarity(u, v, dim=-1), "dot": (u * v).sum(-1)}.get(similarity)
    if expected is not None:
        assert torch.allclose(out["similarity_score"], expected, atol=1e-5)
    else:  # learned: an MLP over [u; v; |u-v|; u*v]
        assert model.head.scorer[0].in_features == 4 * 32
    single = model(batch["input_ids"], batch["attention_mask"])
    assert set(single) == {"embeddings"} and torch.allclose(single["embeddings"], u, atol=1e-6)


@pytest.mark.parametrize("loss_type", ["cosent", "cosine_mse", "contrastive", "softmax"])
def test_similarity_losses(loss_type: str, tokenizer: Any) -> None:
    kw: dict[str, Any] = {"loss_type": loss_type, "extra": {"score_range": [0, 5]}}
    if loss_type == "softmax":
        kw.update(num_labels=2, label_names=["0", "1"])
        kw["extra"] = {}
    model = _model("text_similarity", tokenizer, **kw).train()
    batch = _pair_batch(tokenizer)
    y = torch.tensor([0.0, 1.0, 1.0, 0.0]) if loss_type == "softmax" else torch.tensor([0.0, 5.0, 2.5, 4.0])
    out = model(**batch, labels=y)
    s, u, v = out["similarity_score"], out["embeddings_1"], out["embeddings_2"]
    expected = {
        "cosent": lambda: losses.cosent_loss(s, y, scale=20.0),
        "cosine_mse": lambda: losses.cosine_mse_loss(s, y / 5),  # labels mapped to [0, 1] by score_range
        "contrastive": lambda: losses.contrastive_margin_loss(
            1 - F.cosine_similarity(u, v), (y / 5 >= 0.5).float()
        ),
        "softmax": lambda: F.cross_entropy(out["logits"], y.long()),
    }[loss_type]()
    assert torch.allclose(out["loss"], expected, atol=1e-5)
    out["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.bert.layers[-1].parameters())
    if loss_type == "softmax":
        assert model.head.classifier.in_features == 3 * 32 and out["probabilities"].shape == (4, 2)


def test_contrastive_embeddings_normalised_and_infonce() -> None:
    torch.manual_seed(0)
    a, b, neg = torch.randn(6, 8), torch.randn(6, 8), torch.randn(6, 8)
    for hard, sym in ((None, False), (neg, False), (None, True)):
        ref = losses.multiple_negatives_ranking_loss(a, b, 0.05, hard_negatives=hard, symmetric=sym)
        assert torch.allclose(
            info_nce_loss(a, b, 0.05, ids=torch.arange(6), hard_negatives=hard, symmetric=sym), ref
        )
    # a row sharing the anchor's id is not a negative: duplicating a positive no longer hurts
    b2 = b.clone()
    b2[1] = b[0]
    masked = info_nce_loss(a, b2, 0.05, ids=torch.tensor([0, 0, 1, 2, 3, 4]))
    assert masked < info_nce_loss(a, b2, 0.05)


def test_contrastive_head_normalises_and_simcse(tokenizer: Any) -> None:
    model = _model("contrastive", tokenizer, extra={"temperature": 0.1, "symmetric": True}).train()
    batch = _pair_batch(tokenizer)
    out = model(**batch, labels=torch.arange(4))
    for key in ("embeddings_1", "embeddings_2"):
        assert torch.allclose(out[key].norm(dim=-1), torch.ones(4), atol=1e-5)
    assert torch.isfinite(out["loss"])
    single = model(batch["input_ids"], batch["attention_mask"], labels=torch.arange(4))  # SimCSE: two views
    assert {"embeddings", "embeddings_2", "loss"} <= set(single)
    m = label_retrieval_metrics(
        out["embeddings_1"].detach().numpy(), out["embeddings_2"].detach().numpy(), np.arange(4)
    )
    assert set(m) == {"mrr", "recall@1", "recall@5", "recall@10"} and 0 < m["mrr"] <= 1


@pytest.mark.parametrize("loss_type", ["pointwise", "ranknet", "margin", "listwise"])
def test_ranking_objectives(loss_type: str, tokenizer: Any) -> None:
    model = _model("ranking", tokenizer, loss_type=loss_type).train()
    enc = tokenizer(
        ["q one", "q one", "q one", "q two", "q two"],
        ["a", "b c", "d", "e f", "g"],
        padding=True,
        return_tensors="pt",
    )
    groups, y = torch.tensor([0, 0, 0, 1, 1]), torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0])
    out = model(**enc, labels=y, group_ids=groups)
    assert torch.equal(out["group_ids"], groups) and out["scores"].shape == (5,)
    s = out["scores"]
    expected = {
        "pointwise": lambda: F.binary_cross_entropy_with_logits(s, y),
        "ranknet": lambda: losses.ranknet_loss(s, y, groups),
        "margin": lambda: losses.pairwise_margin_loss(s, y, groups, margin=1.0),
        "listwise": lambda: losses.listwise_softmax_loss(s, y, groups),
    }[loss_type]()
    assert torch.allclose(out["loss"], expected, atol=1e-6)
    np_out = {k: v.detach().numpy() for k, v in out.items() if k != "loss"}
    m = model.head.compute_metrics(np_out, y.numpy())
    assert {"mrr", "map", "ndcg@10", "recall@1", "recall@5", "recall@10"} <= set(m)


def test_save_load_keeps_similarity_temperature_pooling(tokenizer: Any, tmp_path: Path) -> None:
    model = _model("text_similarity", tokenizer, pooling_type="max", extra={"similarity": "dot"}).eval()
    model.save_pretrained(tmp_path / "sim")
    loaded = BertWithHead.from_pretrained(tmp_path / "sim")
    assert loaded.head.similarity == "dot" and loaded.head.pooler.pooling_type == "max"
    batch = _pair_batch(tokenizer)
    with torch.no_grad():
        assert torch.equal(model(**batch)["similarity_score"], loaded(**batch)["similarity_score"])
    con = _model("contrastive", tokenizer, pooling_type="cls", extra={"temperature": 0.07})
    con.save_pretrained(tmp_path / "con")
    again = BertWithHead.from_pretrained(tmp_path / "con")
    assert float(again.head.temperature) == pytest.approx(0.07) and again.head.pooler.pooling_type == "cls"
    with pytest.raises(ConfigError, match="similarity"):
        _model("text_similarity", tokenizer, extra={"similarity": "euclid"})


def test_collator_pads_parts_separately_and_flattens_groups() -> None:
    parts = {"": {"input_ids": [[1, 2], [1, 2, 3, 4], [5]]}, "_b": {"input_ids": [[7], [8], [9, 9, 9]]}}
    ds = PairDataset(parts, np.array([1.0, 0.0, 1.0], dtype=np.float32), np.array([3, 3, 8]))
    batch = PairCollator(0)([ds[i] for i in range(3)])
    assert batch["input_ids"].shape == (3, 4) and batch["input_ids_b"].shape == (3, 3)
    assert batch["attention_mask_b"].tolist() == [[1, 0, 0], [1, 0, 0], [1, 1, 1]]
    assert batch["group_ids"].tolist() == [3, 3, 8] and batch["labels"].dtype == torch.float32
    grouped = GroupedDataset(ds)
    assert len(grouped) == 2 and grouped.lengths == [8, 4]
    assert PairCollator(0)([grouped[0]])["group_ids"].tolist() == [3, 3]


def test_pair_inputs_reach_the_backbone_with_token_types(tokenizer: Any) -> None:
    """Cross-encoder pairs: token_type_ids (1 on the second text) reach BERT; ModernBERT gets none."""
    from bertkit.data import Collator, tokenize_texts

    feats = tokenize_texts(tokenizer, ["a question here"], ["an answer"], max_length=32)
    assert set(feats["token_type_ids"][0]) == {0, 1}
    batch = Collator(0)([{k: v[0] for k, v in feats.items()}])
    for arch, expect in (("bert", True), ("modernbert", False)):
        torch.manual_seed(0)
        model = create_bert_with_head(
            head_type="regression", num_labels=1, bert_config=tiny_bert_config(arch), tokenizer=tokenizer
        )
        seen: dict[str, Any] = {}
        hook = model.bert.model.register_forward_pre_hook(
            lambda m, a, kw, s=seen: s.update(kw), with_kwargs=True
        )
        model(**batch)
        hook.remove()
        assert ("token_type_ids" in seen) == expect
        if expect:
            assert seen["token_type_ids"].max() == 1


# ------------------------------------------------------------------------------------ runner / CLI
def test_similarity_end_to_end_predict_evaluate_embed(
    tiny_backbone: Path, data_dir: Path, tmp_path: Path
) -> None:
    run = tmp_path / "sts"
    res = _cli(
        "train",
        data_dir / "sts.csv",
        "--task",
        "similarity",
        "--text-columns",
        "q,a",
        "--test",
        data_dir / "sts.csv",
        "--output",
        run,
        "--backbone",
        tiny_backbone,
        *FAST,
    )
    assert res.exit_code == 0, res.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"spearman", "pearson"} <= set(metrics["test"]) and {"spearman", "pearson"} <= set(
        metrics["valid"]
    )
    res = _cli("predict", run, data_dir / "sts.csv", "--output", tmp_path / "p.csv")
    assert res.exit_code == 0, res.output
    pred, src = pd.read_csv(tmp_path / "p.csv"), pd.read_csv(data_dir / "sts.csv")
    assert pred["id"].tolist() == src["id"].tolist() and pred["similarity_score"].abs().max() <= 1 + 1e-5
    res = _cli("evaluate", run, data_dir / "sts.csv", "--output", tmp_path / "e.json")
    assert res.exit_code == 0 and "spearman" in json.loads((tmp_path / "e.json").read_text())
    # embed: input order preserved (a reversed file gives reversed rows), .npy and .parquet
    src.iloc[::-1].to_csv(tmp_path / "rev.csv", index=False)
    for name, data in (
        ("e.npy", data_dir / "sts.csv"),
        ("r.npy", tmp_path / "rev.csv"),
        ("e.parquet", data_dir / "sts.csv"),
    ):
        res = _cli("embed", run, data, "--output", tmp_path / name)
        assert res.exit_code == 0, res.output
    fwd, rev = np.load(tmp_path / "e.npy"), np.load(tmp_path / "r.npy")
    assert fwd.shape == (60, 32) and np.allclose(fwd, rev[::-1], atol=1e-5)
    table = pd.read_parquet(tmp_path / "e.parquet")
    assert table["id"].tolist() == src["id"].tolist() and np.allclose(np.stack(table["embedding"]), fwd)
    assert _cli("embed", run, data_dir / "sts.csv", "--output", tmp_path / "x.txt").exit_code == 2
    # the Python API reaches the same model: scores for (a, b) pairs equal the CLI's
    from bertkit import load_predictor

    predictor = load_predictor(run)
    pairs = list(zip(src["q"].astype(str), src["a"].astype(str)))
    scores = np.asarray(predictor.predict(pairs), dtype=float)
    assert np.allclose(scores, pred["similarity_score"].to_numpy(), atol=1e-5)


def test_contrastive_triplets_detected_and_normalised(
    tiny_backbone: Path, data_dir: Path, tmp_path: Path
) -> None:
    res = _cli("analyze", data_dir / "triplets.csv", "--backbone", tiny_backbone)
    assert res.exit_code == 0 and "contrastive" in res.output and "negative" in res.output
    run = tmp_path / "con"
    res = _cli("train", data_dir / "triplets.csv", "--output", run, "--backbone", tiny_backbone, *FAST)
    assert res.exit_code == 0, res.output
    valid = json.loads((run / "metrics.json").read_text())["valid"]
    assert {"mrr", "recall@1", "negative_similarity"} <= set(valid)
    from bertkit.inference.embed import embed_texts

    emb = embed_texts(run, ["a cat", "a dog and a bird"])
    assert np.allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize(("head", "loss"), [("ranking", "listwise"), ("ranking_bi_encoder", "pointwise")])
def test_ranking_end_to_end(
    head: str, loss: str, tiny_backbone: Path, data_dir: Path, tmp_path: Path
) -> None:
    res = _cli("analyze", data_dir / "rank.csv", "--backbone", tiny_backbone)
    assert res.exit_code == 0 and "ranking" in res.output and "without_positive=4" in res.output
    run = tmp_path / "rank"
    with pytest.warns(UserWarning, match=r"\d+ of \d+ training queries \(\d+ rows\) have no positive"):
        res = _cli(
            "train",
            data_dir / "rank.csv",
            "--group-column",
            "query_id",
            "--head",
            head,
            "--test",
            data_dir / "rank.csv",
            "--output",
            run,
            "--backbone",
            tiny_backbone,
            "--set",
            f"model.head_options.loss_type={loss}",
            *FAST,
        )
    assert res.exit_code == 0, res.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"mrr", "map", "ndcg@10", "recall@1", "recall@5", "recall@10"} <= set(metrics["test"])
    assert (
        metrics["test"]["num_queries_without_positive"] == 4
        and metrics["data"]["train_queries_without_positive"]
    )
    res = _cli("predict", run, data_dir / "rank.csv", "--output", tmp_path / "ranked.csv")
    assert res.exit_code == 0, res.output
    ranked = pd.read_csv(tmp_path / "ranked.csv")
    assert list(ranked.columns[:3]) == ["query_id", "rank", "score"] and len(ranked) == 96
    assert ranked["query_id"].drop_duplicates().tolist() == [f"q{i}" for i in range(24)]
    for _, g in ranked.groupby("query_id"):
        assert g["rank"].tolist() == [1, 2, 3, 4] and g["score"].is_monotonic_decreasing


def test_ranking_cv_and_strict_groups(tiny_backbone: Path, data_dir: Path, tmp_path: Path) -> None:
    res = _cli(
        "cv",
        data_dir / "rank.csv",
        "--folds",
        "2",
        "--task",
        "ranking",
        "--output",
        tmp_path / "cv",
        "--backbone",
        tiny_backbone,
        "--set",
        "model.head_options.loss_type=ranknet",
        *FAST,
    )
    assert res.exit_code == 0, res.output
    oof = pd.read_csv(tmp_path / "cv" / "oof.csv")
    assert len(oof) == 96 and set(oof["fold"]) == {0, 1} and oof["score"].notna().all()
    assert "mrr" in json.loads((tmp_path / "cv" / "metrics.json").read_text())["oof"]
    res = _cli(
        "train",
        data_dir / "rank.csv",
        "--task",
        "ranking",
        "--strict",
        "--output",
        tmp_path / "s",
        "--backbone",
        tiny_backbone,
        *FAST,
    )
    assert res.exit_code == 2 and "have no positive candidate" in res.output


@pytest.mark.parametrize(
    ("task", "keys"),
    [("regression", {"spearman", "pearson"}), ("binary", {"accuracy", "f1"}), ("ordinal", {"accuracy"})],
)
def test_cross_encoder_pairs_through_sequence_pipeline(
    task: str, keys: set, tiny_backbone: Path, data_dir: Path, tmp_path: Path
) -> None:
    """Two named text columns become one cross-encoder input for every sequence-level head."""
    frame = pd.read_csv(data_dir / "sts.csv")
    if task != "regression":
        frame["score"] = (
            (frame["score"] > 2.5).astype(int) if task == "binary" else frame["score"].round().astype(int)
        )
    frame.to_csv(tmp_path / "pairs.csv", index=False)
    run = tmp_path / task
    res = _cli(
        "train",
        tmp_path / "pairs.csv",
        "--text-columns",
        "q,a",
        "--label-column",
        "score",
        "--task",
        task,
        "--test",
        tmp_path / "pairs.csv",
        "--output",
        run,
        "--backbone",
        tiny_backbone,
        *FAST,
    )
    assert res.exit_code == 0, res.output
    assert keys <= set(json.loads((run / "metrics.json").read_text())["test"])
    profile = json.loads((run / "profile.json").read_text())
    assert profile["is_pair"] and profile["text_columns"] == ["q", "a"]


def test_bad_inputs_are_reported_with_counts(tiny_backbone: Path, data_dir: Path, tmp_path: Path) -> None:
    res = _cli(
        "train",
        data_dir / "sts.csv",
        "--task",
        "similarity",
        "--text-columns",
        "q,zzz",
        "--output",
        tmp_path / "r1",
        "--backbone",
        tiny_backbone,
        *FAST,
    )
    assert res.exit_code == 2 and "second text column 'zzz'" in res.output
    res = _cli(
        "train",
        data_dir / "sts.csv",
        "--task",
        "similarity",
        "--text-columns",
        "q,a",
        "--output",
        tmp_path / "r2",
        "--backbone",
        tiny_backbone,
        "--set",
        "model.head_options.extra.score_range=[0,1]",
        *FAST,
    )
    assert res.exit_code == 2 and "outside the declared range [0, 1]" in res.output
    assert "rows have scores outside" in res.output and " of " in res.output
    frame = pd.read_csv(data_dir / "sts.csv")
    frame.loc[[1, 4, 7], "a"] = ""
    frame.to_csv(tmp_path / "holes.csv", index=False)
    res = _cli(
        "train",
        tmp_path / "holes.csv",
        "--task",
        "similarity",
        "--text-columns",
        "q,a",
        "--strict",
        "--output",
        tmp_path / "r3",
        "--backbone",
        tiny_backbone,
        *FAST,
    )
    assert res.exit_code == 2 and "3 of" in res.output and "empty second text" in res.output
    from bertkit.tasks.pairs import analyze_pairs, check_frame

    prof = analyze_pairs(tmp_path / "holes.csv", task="similarity", text_columns=["q", "a"])
    assert prof.empty_texts == {"q": 0, "a": 3}
    with pytest.warns(UserWarning, match="dropped 3 of 60 rows: 3 empty second text"):
        keep, report = check_frame(frame, prof, require_labels=True, strict=False)
    assert keep.sum() == 57 and report["empty_second_text"] == 3
    with pytest.raises(DataError, match="no second text column"):
        analyze_pairs(pd.DataFrame({"text": ["a"], "label": [1]}), task="similarity")


def test_contrastive_with_binary_labels_trains_on_positive_pairs_only(tokenizer: Any) -> None:
    from bertkit.tasks.pairs import analyze_pairs, prepare_pairs

    frame = pd.DataFrame(
        {"text_a": ["a b", "c d", "a b", "e f"], "text_b": ["a", "x", "b", "e"], "label": [1, 0, 1, 1]}
    )
    prof = analyze_pairs(frame, task="contrastive")
    prep = prepare_pairs(frame, prof, tokenizer, max_length=16, cross_encoder=False)
    assert prep.report["non_positive_pairs"] == 1 and prep.row_index.tolist() == [0, 2, 3]
    assert prep.dataset.targets.tolist() == [0, 0, 1]  # same anchor text -> same id (never a negative)
    assert set(prep.dataset[0]) >= {"input_ids", "input_ids_b", "labels"}
