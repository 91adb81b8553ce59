"""Training tricks on tiny models: adversarial steps, weight averages, soup, re-init, poolings, post-processing,
blending, chunks, pre-training, the ablation runner — and the fold-leakage checks of pseudo-labelling and
threshold tuning."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO_ROOT, tiny_bert_config
from torch import nn

from bertkit import ConfigError, create_bert_with_head
from bertkit.config import TrainingConfig
from bertkit.pooling import Pooler
from bertkit.training import postprocess as pp
from bertkit.training.blend import fit_blend
from bertkit.training.tricks import AWP, EMA, FGM, SWA, SoupCollector, build_tricks

DEMO = REPO_ROOT / "bertkit" / "data" / "examples" / "demo_reviews.csv"


class _Acc:
    """Minimal accelerator stand-in: plain backward."""

    @staticmethod
    def backward(loss: torch.Tensor) -> None:
        loss.backward()


@pytest.fixture()
def tiny(tokenizer):
    torch.manual_seed(0)
    return create_bert_with_head(
        num_labels=2, label_names=["neg", "pos"], bert_config=tiny_bert_config("bert"), tokenizer=tokenizer
    )


@pytest.fixture()
def labelled_batch(batch):
    return {**batch, "labels": torch.tensor([0, 1, 1])}


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory, tokenizer) -> Path:
    from bertkit import create_bert_core

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_bert")
    core = create_bert_core(config=tiny_bert_config("bert"))
    core.model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _params(model: nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


# ------------------------------------------------------------------------------------------ adversarial
def test_fgm_perturbs_embeddings_along_gradient_and_restores_exactly(tiny, labelled_batch) -> None:
    tiny.train()
    emb = tiny.bert.get_input_embeddings().weight
    tiny(**labelled_batch)["loss"].backward()
    clean_grad, before = emb.grad.clone(), _params(tiny)
    seen: dict[str, torch.Tensor] = {}
    original_forward = tiny.forward

    def spy(**kw):
        seen["emb"] = emb.detach().clone()
        return original_forward(**kw)

    tiny.forward = spy  # the adversarial forward sees the perturbed table
    FGM(epsilon=0.5).after_backward(tiny, labelled_batch, epoch=0, accelerator=_Acc())
    expected = before["bert.model.embeddings.word_embeddings.weight"] + 0.5 * clean_grad / clean_grad.norm()
    assert torch.allclose(seen["emb"], expected, atol=1e-7)
    after = _params(tiny)
    assert all(torch.equal(before[n], after[n]) for n in before)  # restored bit for bit
    assert not torch.equal(emb.grad, clean_grad)  # adversarial gradients were added
    tiny.forward = original_forward
    grad_now = emb.grad.clone()
    FGM(epsilon=0.5, start_epoch=2).after_backward(tiny, labelled_batch, epoch=1, accelerator=_Acc())
    assert torch.equal(emb.grad, grad_now)  # before start_epoch: nothing happens


def test_awp_perturbs_weights_inside_the_box_and_restores_exactly(tiny, labelled_batch) -> None:
    tiny.train()
    tiny(**labelled_batch)["loss"].backward()
    before = _params(tiny)
    seen: dict[str, dict[str, torch.Tensor]] = {}
    original_forward = tiny.forward

    def spy(**kw):
        seen["w"] = _params(tiny)
        return original_forward(**kw)

    tiny.forward = spy
    AWP(lr=1.0, epsilon=0.01).after_backward(tiny, labelled_batch, epoch=0, accelerator=_Acc())
    tiny.forward = original_forward
    name = "bert.model.encoder.layer.0.attention.self.query.weight"
    delta = seen["w"][name] - before[name]
    assert delta.abs().max() > 0
    assert torch.all(delta.abs() <= 0.01 * before[name].abs() + 1e-7)
    assert torch.equal(
        seen["w"]["bert.model.encoder.layer.0.attention.self.query.bias"],
        before["bert.model.encoder.layer.0.attention.self.query.bias"],
    )  # biases untouched
    after = _params(tiny)
    assert all(torch.equal(before[n], after[n]) for n in before)


# -------------------------------------------------------------------------------------- weight averages
def _nudge(model: nn.Module, value: float) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(value)


def test_ema_weights_follow_the_formula_and_are_used_for_evaluation(tiny) -> None:
    ema = EMA(decay=0.9)
    ema.on_train_begin(tiny, TrainingConfig(), total_steps=5, steps_per_epoch=5)
    name = "head.output.weight"
    expected = tiny.state_dict()[name].clone()
    for t in range(5):
        _nudge(tiny, 0.1)
        ema.after_step(tiny, t + 1, 0)
        d = min(0.9, (1 + t) / (10 + t))
        expected = d * expected + (1 - d) * tiny.state_dict()[name]
    assert torch.allclose(ema.shadow[name], expected, atol=1e-6)
    live = tiny.state_dict()[name].clone()
    with ema.eval_weights(tiny):
        assert torch.allclose(tiny.state_dict()[name], expected, atol=1e-6)
    assert torch.equal(tiny.state_dict()[name], live)
    ema.on_train_end(tiny)
    assert torch.allclose(tiny.state_dict()[name], expected, atol=1e-6)


def test_swa_averages_the_last_epochs_snapshots(tiny) -> None:
    swa = SWA(epochs=1, snapshots_per_epoch=2)
    swa.on_train_begin(tiny, TrainingConfig(), total_steps=6, steps_per_epoch=3)
    name = "head.output.weight"
    snaps = []
    for step in range(1, 7):
        _nudge(tiny, 1.0)
        swa.after_step(tiny, step, (step - 1) // 3)
        if step in swa.snapshot_steps:
            snaps.append(tiny.state_dict()[name].clone())
    assert swa.snapshot_steps == {5, 6} and len(snaps) == 2
    with swa.eval_weights(tiny):  # the last evaluation sees the average
        assert torch.allclose(tiny.state_dict()[name], (snaps[0] + snaps[1]) / 2)
    swa.on_train_end(tiny)
    assert torch.allclose(tiny.state_dict()[name], (snaps[0] + snaps[1]) / 2)


def test_greedy_soup_keeps_only_improving_checkpoints() -> None:
    from bertkit.training.soup import greedy_soup

    model = nn.Linear(1, 1, bias=False)
    ingredients = [{"weight": torch.tensor([[w]])} for w in (1.0, 3.0, 10.0, 2.5)]
    score = lambda m: -abs(m.weight.item() - 2.0)  # noqa: E731 — best weight is 2.0
    result = greedy_soup(model, ingredients, score, greater_is_better=True)
    # 2.5 is best alone (0.5 away); adding 1.0 gives 1.75 (better); 3.0 -> 2.17 (better); 10 -> worse
    assert result.chosen == [3, 0, 1]
    assert model.weight.item() == pytest.approx((2.5 + 1.0 + 3.0) / 3)


def test_build_tricks_and_validation() -> None:
    tricks = build_tricks(TrainingConfig(adversarial="awp", ema_decay=0.99, soup_size=2))
    assert [type(t) for t in tricks] == [AWP, EMA, SoupCollector]
    assert build_tricks(TrainingConfig()) == []
    with pytest.raises(ConfigError, match="adversarial='pgd' is not valid"):
        TrainingConfig(adversarial="pgd")
    with pytest.raises(ConfigError, match="two weight averages"):
        TrainingConfig(ema_decay=0.9, swa_epochs=1)


def test_trainer_runs_with_fgm_and_ema(tiny, tokenizer) -> None:
    from bertkit.data import TokenizedDataset, analyze_dataset, prepare_frame, read_table, tokenize_texts
    from bertkit.training import Trainer

    df = read_table(DEMO).iloc[:48].reset_index(drop=True)
    prep = prepare_frame(df, analyze_dataset(df))
    ds = TokenizedDataset(tokenize_texts(tokenizer, prep.texts_a, max_length=24), prep.targets)
    cfg = TrainingConfig(
        epochs=1,
        batch_size=16,
        learning_rate=1e-3,
        progress=False,
        adversarial="fgm",
        ema_decay=0.9,
        device="cpu",
    )
    trainer = Trainer(tiny, None, cfg)
    result = trainer.train(ds, ds)
    ema = next(t for t in trainer.tricks if isinstance(t, EMA))
    assert result.global_step == 3 and ema.num_updates == 3
    assert torch.allclose(tiny.state_dict()["head.output.weight"], ema.shadow["head.output.weight"])


# ---------------------------------------------------------------------------------------- model changes
def test_reinit_changes_only_the_top_layers(tiny) -> None:
    from bertkit.training.reinit import reinit_top_layers

    before = _params(tiny.bert)
    names = reinit_top_layers(tiny.bert, 1, seed=3)
    after = _params(tiny.bert)
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed and all(".layer.1." in n or "pooler" in n for n in changed)
    assert set(names) >= changed and all(".layer.0." not in n and "embeddings" not in n for n in names)
    assert torch.equal(
        after["model.encoder.layer.1.output.LayerNorm.weight"],
        torch.ones_like(after["model.encoder.layer.1.output.LayerNorm.weight"]),
    )
    with pytest.raises(ConfigError, match="out of range"):
        reinit_top_layers(tiny.bert, 3)


@pytest.mark.parametrize("kind", ["gem", "layer_cls", "layer_cls_weighted"])
def test_gem_and_layer_cls_pooling_shapes_and_masking(kind: str) -> None:
    torch.manual_seed(0)
    pool = Pooler(kind, hidden_size=4, num_layers=2)
    layers = tuple(torch.randn(2, 5, 4) for _ in range(3))  # embeddings + 2 layers
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    a = pool(layers[-1], mask, all_hidden_states=layers)
    assert a.shape == (2, 4)
    changed = tuple(h.clone() for h in layers)
    for h in changed:
        h[0, 3:] = 1e4  # padded positions
    changed[0][:] = 7.0  # a layer below the last k=2
    b = pool(changed[-1], mask, all_hidden_states=changed)
    assert torch.allclose(a, b)  # neither padding nor layers below the last k matter
    if kind == "layer_cls":  # starts as the mean of the last k CLS states
        assert torch.allclose(a, (layers[1][:, 0] + layers[2][:, 0]) / 2, atol=1e-6)


def test_layer_cls_model_turns_on_hidden_states(tokenizer, batch) -> None:
    torch.manual_seed(0)
    model = create_bert_with_head(
        num_labels=3,
        bert_config=tiny_bert_config("bert"),
        tokenizer=tokenizer,
        pooling_type="layer_cls_weighted",
        extra={"pooling_layers": 2},
    )
    assert model.bert.config.output_hidden_states
    out = model(**batch)
    assert out["logits"].shape == (3, 3)


# -------------------------------------------------------------------------------------- post-processing
def test_postprocess_fit_and_apply_per_task() -> None:
    rng = np.random.default_rng(0)
    y = (rng.random(400) < 0.2).astype(int)
    p1 = np.where(y == 1, 0.15 + 0.3 * rng.random(400), 0.2 * rng.random(400))  # under-confident positives
    params = pp.fit_postprocess("binary", {"probabilities": np.stack([1 - p1, p1], 1)}, y)
    assert params["kind"] == "binary_threshold" and params["threshold"] < 0.5
    out = pp.apply_postprocess(
        params, {"probabilities": np.stack([1 - p1, p1], 1), "predictions": (p1 >= 0.5) * 1}
    )
    assert (out["predictions"] == (p1 >= params["threshold"])).all()
    # ordinal: a score squeezed towards the middle; cut-points fitted for QWK beat rounding
    y_ord = rng.integers(0, 5, 500)
    proba = np.eye(5)[np.clip(np.round(2 + 0.5 * (y_ord - 2) + rng.normal(0, 0.3, 500)), 0, 4).astype(int)]
    proba = 0.7 * proba + 0.3 / 5
    cuts = pp.fit_postprocess("ordinal", {"probabilities": proba}, y_ord)
    tuned = pp.apply_postprocess(cuts, {"probabilities": proba, "predictions": proba.argmax(1)})[
        "predictions"
    ]
    from bertkit.metrics import ordinal_metrics

    assert ordinal_metrics(y_ord, tuned)["qwk"] > ordinal_metrics(y_ord, proba.argmax(1))["qwk"]
    clip = pp.fit_postprocess("regression", {"predictions": np.zeros(3)}, np.array([-1.0, 0.5, 2.0]))
    assert pp.apply_postprocess(clip, {"predictions": np.array([-5.0, 1.0, 9.0])})[
        "predictions"
    ].tolist() == [-1, 1, 2]


def test_predict_applies_the_saved_postprocessing(tiny, tmp_path: Path) -> None:
    from bertkit.inference import load_predictor

    tiny.save_pretrained(tmp_path / "model")
    texts = ["good", "bad", "fine", "meh"]
    pp.save_postprocess(tmp_path / "model", {"kind": "binary_threshold", "threshold": 0.0})
    assert load_predictor(tmp_path).predict(texts) == ["pos"] * 4
    pp.save_postprocess(tmp_path / "model", {"kind": "binary_threshold", "threshold": 1.01})
    predictor = load_predictor(tmp_path)
    assert predictor.predict(texts) == ["neg"] * 4 and float(predictor.model.head.threshold) == pytest.approx(
        1.01
    )


# ------------------------------------------------------------------------------ leakage (the key test)
def test_threshold_tuning_never_fits_on_the_fold_it_is_applied_to() -> None:
    rng = np.random.default_rng(1)
    n, folds = 90, np.arange(90) % 3
    row_id = np.arange(n, dtype=np.float64)
    outputs = {
        "probabilities": np.stack([1 - rng.random(n), rng.random(n)], 1),
        "row": row_id,
        "predictions": np.zeros(n, dtype=np.int64),
    }
    targets = rng.integers(0, 2, n)
    used: list[set[int]] = []

    def spy_fit(task, outs, y):
        used.append({int(r) for r in outs["row"]})
        return pp.fit_postprocess(task, outs, y)

    _, per_fold = pp.crossfit_postprocess("binary", outputs, targets, folds, fit_fn=spy_fit)
    assert len(used) == 3 == len(per_fold)
    for k, rows in enumerate(used):
        assert rows and not rows & set(np.flatnonzero(folds == k).tolist())


def test_pseudo_labels_for_a_fold_come_only_from_models_that_never_saw_its_validation_rows(
    monkeypatch, tmp_path: Path
) -> None:
    from bertkit.runconfig import build_run_config
    from bertkit.training import pseudo

    n, k = 30, 3
    df = pd.DataFrame(
        {"text": [f"labelled text number {i}" for i in range(n)], "label": np.linspace(0, 1, n)}
    )
    unl = tmp_path / "unlabelled.csv"
    pd.DataFrame({"text": [f"unlabelled {i}" for i in range(12)]}).to_csv(unl, index=False)
    fold_of = np.arange(n) % k
    knowledge: dict[
        tuple[int, int], set[int]
    ] = {}  # labelled rows a model learnt from, directly or via teachers

    def fake_cv(data, out, cfg, folds, group_column=None, test_path=None, extra_train=None):
        r = int(Path(out).name.split("_")[1])
        for fold in range(folds):
            from bertkit.data import TokenizedDataset

            train_rows = np.flatnonzero(fold_of != fold)
            base = TokenizedDataset(
                {"input_ids": [[101, 102]] * len(train_rows)}, train_rows.astype(np.float32)
            )
            seen = set(train_rows.tolist())
            if extra_train is not None:
                merged = extra_train(fold, base)
                codes = np.asarray(merged.targets)[len(train_rows) :]
                for code in set(codes.tolist()):  # each pseudo target encodes its teacher (round, fold)
                    seen |= knowledge[(int(code) // 100, int(code) % 100)]
            knowledge[(r, fold)] = seen
        return {"fold_summary": {}, "oof": {}}

    def fake_predict(model_dir, features, batch_size=64):
        r, fold = int(model_dir.parents[1].name.split("_")[1]), int(model_dir.parent.name.split("_")[1])
        return {"predictions": np.full(len(features["input_ids"]), 100 * r + fold, dtype=np.float32)}

    monkeypatch.setattr(pseudo.cv_module, "cross_validate", fake_cv)
    monkeypatch.setattr(pseudo, "predict_model_dir", fake_predict)
    cfg = build_run_config(
        "quick", sets=[f"training.pseudo_file={unl}", "training.pseudo_rounds=2", "data.task=regression"]
    )
    result = pseudo.pseudo_cross_validate(df, tmp_path / "run", cfg, folds=k)
    assert {(r, f) for r in range(3) for f in range(k)} == set(knowledge)
    for (r, fold), seen in knowledge.items():
        valid = set(np.flatnonzero(fold_of == fold).tolist())
        assert not seen & valid, f"round {r} fold {fold} learnt from its own validation rows"
    assert [e["teacher_fold"] for e in result["pseudo"]["pseudo_rows"]] == [0, 1, 2, 0, 1, 2]


# ------------------------------------------------------------------------------------ blending & chunks
def test_constrained_least_squares_recovers_a_known_mix() -> None:
    rng = np.random.default_rng(0)
    a, b, c = rng.normal(size=500), rng.normal(size=500), rng.normal(size=500)
    y = 0.7 * a + 0.3 * b
    res = fit_blend([a, b, c], y, "lsq")
    assert np.allclose(res.weights, [0.7, 0.3, 0.0], atol=1e-4) and res.oof_score < 1e-3
    ridge = fit_blend([a, b, c], y, "ridge")
    assert np.allclose(ridge.weights, [0.7, 0.3, 0.0], atol=0.02)
    hill = fit_blend([a, b, c], y, "hill")
    assert hill.weights[0] > hill.weights[1] > hill.weights[2] == 0 and hill.oof_score < min(hill.run_scores)
    labels = rng.integers(0, 3, 300)
    good = 0.8 * np.eye(3)[labels] + 0.2 / 3
    noise = rng.dirichlet(np.ones(3), 300)
    cls = fit_blend([good, noise], labels, "lsq", classification=True, metric="accuracy")
    assert cls.weights[0] > 0.9


def test_sliding_windows_cover_long_texts_and_aggregate(tokenizer) -> None:
    from bertkit.training.chunks import aggregate_windows, chunk_features

    texts = ["short one", " ".join(f"word{i}" for i in range(60))]
    feats, doc = chunk_features(tokenizer, texts, max_length=16, stride=4)
    assert doc[0] == 0 and (doc[1:] == 1).all() and all(len(x) <= 16 for x in feats["input_ids"])
    body = [tid for x, d in zip(feats["input_ids"], doc) if d == 1 for tid in x[1:-1]]
    full = tokenizer(texts[1], add_special_tokens=False)["input_ids"]
    assert set(full) <= set(body) and feats["input_ids"][-1][-2] == full[-1]
    vals = np.array([[1.0, 0.0], [0.2, 0.8], [0.6, 0.4]])
    d = np.array([0, 1, 1])
    assert np.allclose(aggregate_windows(vals, d, 2, "mean")[1], [0.4, 0.6])
    assert np.allclose(aggregate_windows(vals, d, 2, "max", renormalise=True)[1], [0.6 / 1.4, 0.8 / 1.4])
    att = aggregate_windows(vals, d, 2, "attention", confidence=vals.max(1))
    assert att[1, 1] > 0.6  # the more confident window weighs more


# -------------------------------------------------------------------------------- end-to-end (tiny)
def test_ablate_then_blend_on_a_tiny_backbone(tiny_backbone: Path, tmp_path: Path) -> None:
    from bertkit.training.ablate import ablate
    from bertkit.training.blend import blend_runs

    sets = [
        "training.epochs=1",
        "training.max_length=24",
        "training.batch_size=16",
        "training.learning_rate=0.001",
        "training.progress=false",
        "data.max_train_samples=48",
        "training.device=cpu",
    ]
    table = ablate(
        DEMO,
        tmp_path / "abl",
        ["postprocess"],
        folds=2,
        base="quick",
        sets=sets,
        overrides={"model": {"backbone": str(tiny_backbone)}},
    )
    assert table["variant"].tolist() == ["base", "postprocess"]
    assert {"mean", "std", "delta", "wall_seconds"} <= set(table.columns)
    assert (tmp_path / "abl" / "ablation.csv").is_file() and "Ablation" in (
        tmp_path / "abl" / "report.html"
    ).read_text()
    assert (tmp_path / "abl" / "postprocess" / "fold_0" / "model" / "postprocess.json").is_file()
    metrics = json.loads((tmp_path / "abl" / "postprocess" / "metrics.json").read_text())
    assert "oof_after" in metrics["postprocessing"]
    report = blend_runs(
        [tmp_path / "abl" / "base", tmp_path / "abl" / "postprocess"], tmp_path / "blend", "lsq"
    )
    assert len(report["weights"]) == 2 and sum(report["weights"]) == pytest.approx(1.0)
    assert len(pd.read_csv(tmp_path / "blend" / "oof_blend.csv")) == 48
    from typer.testing import CliRunner

    from bertkit.cli import app

    res = CliRunner().invoke(
        app,
        [
            "blend",
            str(tmp_path / "abl" / "base"),
            str(tmp_path / "abl" / "postprocess"),
            "--method",
            "hill",
            "--metric",
            "accuracy",
            "--output",
            str(tmp_path / "hill"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert "hill weights" in res.output and (tmp_path / "hill" / "blend.json").is_file()


def test_pretrain_output_is_a_usable_backbone(tiny_backbone: Path, tmp_path: Path) -> None:
    from bertkit import create_bert_core
    from bertkit.training.pretrain import PretrainConfig, pretrain

    texts = tmp_path / "texts.txt"
    texts.write_text("\n".join(pd.read_csv(DEMO)["text"].head(40)), encoding="utf-8")
    report = pretrain(
        texts,
        tmp_path / "mlm",
        PretrainConfig(backbone=str(tiny_backbone), max_steps=3, batch_size=4, max_length=32),
    )
    assert report["steps"] == 3 and (tmp_path / "mlm" / "pretrain.json").is_file()
    core = create_bert_core(str(tmp_path / "mlm"))
    assert core.hidden_size == 32


def test_chunked_outputs_and_predictor_use_sliding_windows(tiny, tmp_path: Path) -> None:
    from bertkit.inference import load_predictor
    from bertkit.training.chunks import chunked_outputs

    texts = ["tiny", " ".join(["a rather long review that keeps going"] * 12)]
    out = chunked_outputs(tiny, texts, max_length=16, stride=4, method="attention")
    assert out["probabilities"].shape == (2, 2) and np.allclose(out["probabilities"].sum(1), 1, atol=1e-5)
    tiny.metadata.update({"max_length": 16, "chunk_stride": 4, "chunk_aggregation": "mean"})
    tiny.save_pretrained(tmp_path / "model")
    predictor = load_predictor(tmp_path)
    assert predictor.chunk_stride == 4
    mean = chunked_outputs(tiny, texts, max_length=16, stride=4, method="mean")
    assert np.allclose(predictor.outputs(texts)["probabilities"], mean["probabilities"], atol=1e-5)
