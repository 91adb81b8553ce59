"""Multi-task model API, task sampling and weighting, type-string (MBTI) support, and the runner/CLI path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_bert_config
from typer.testing import CliRunner

from bertkit import ConfigError, create_multi_task_model, create_multi_task_nlp_head
from bertkit.encoder import BertOutput
from bertkit.multitask.data import (
    compose_types,
    dimension_metrics,
    majority_baseline,
    mask_type_names,
    split_types,
)
from bertkit.multitask.sampling import TaskSampler, UncertaintyWeighting, sampling_probabilities

TASKS = {
    "sentiment": {"head_type": "binary", "num_labels": 2},
    "topic": {"head_type": "multiclass", "label_names": ["a", "b", "c"]},
    "ner": {"head_type": "ner", "label_names": ["O", "B-PER", "I-PER"]},
}
MBTI = [["E", "I"], ["S", "N"], ["T", "F"], ["J", "P"]]


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny models run much faster on one thread of a busy machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture()
def batch(tokenizer) -> dict[str, torch.Tensor]:
    enc = tokenizer(["a short text", "a longer text with more words"], padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


# ---------------------------------------------------------------------------------------------- sampling
def test_sampling_probabilities_follow_the_formulas() -> None:
    sizes = {"big": 900, "small": 100}
    assert sampling_probabilities(sizes, "proportional") == pytest.approx({"big": 0.9, "small": 0.1})
    p = sampling_probabilities(sizes, "temperature", temperature=2.0)  # p ∝ n^(1/2): 30 : 10
    assert p == pytest.approx({"big": 0.75, "small": 0.25})
    assert sampling_probabilities(sizes, "round_robin") == {"big": 0.5, "small": 0.5}
    with pytest.raises(ConfigError):
        sampling_probabilities({"a": 0}, "proportional")


def test_task_sampler_frequencies_and_round_robin() -> None:
    s = TaskSampler({"a": 300, "b": 100}, "proportional", seed=0)
    draws = [next(s) for _ in range(4000)]
    assert draws.count("a") / len(draws) == pytest.approx(0.75, abs=0.03)
    rr = TaskSampler({"a": 300, "b": 100, "c": 5}, "round_robin")
    assert [next(rr) for _ in range(6)] == ["a", "b", "c", "a", "b", "c"]


def test_uncertainty_weighting_formula() -> None:
    w = UncertaintyWeighting(["a", "b"])
    with torch.no_grad():
        w.log_vars.copy_(torch.tensor([0.5, -1.0]))
    loss = torch.tensor(2.0)
    assert float(w("a", loss).detach()) == pytest.approx(np.exp(-0.5) * 2.0 + 0.5)
    assert w.weights()["b"] == pytest.approx(np.exp(1.0))


# ---------------------------------------------------------------------------------------------- model API
def test_multi_task_nlp_head_one_and_all_tasks() -> None:
    torch.manual_seed(0)
    head = create_multi_task_nlp_head(
        {
            "sent": {"task_type": "sentiment_analysis", "num_classes": 3},
            "tags": {"head_type": "token_classification", "label_names": ["O", "B-X", "I-X"]},
        },
        input_dim=16,
    )
    out = BertOutput(
        last_hidden_state=torch.randn(2, 5, 16), attention_mask=torch.ones(2, 5, dtype=torch.long)
    )
    one = head(out, task_name="sent")
    assert one["logits"].shape == (2, 3)
    both = head(out)
    assert set(both) == {"sent", "tags"} and both["tags"]["logits"].shape == (2, 5, 3)
    loss = head.compute_loss(one, torch.tensor([0, 2]), "sent")
    assert loss.ndim == 0
    # projections start as the identity (zero-initialised residual)
    assert torch.allclose(head.branches["sent"].project(out).last_hidden_state, out.last_hidden_state)
    plain = create_multi_task_nlp_head(
        {"s": {"head_type": "binary"}}, 16, use_task_specific_projections=False
    )
    assert plain.branches["s"].projection is None


def test_multi_task_model_forward(tokenizer, batch) -> None:
    torch.manual_seed(0)
    model = create_multi_task_model(
        TASKS, bert_name=None, bert_config=tiny_bert_config("bert"), tokenizer=tokenizer
    )
    assert model.task_names == ["sentiment", "topic", "ner"]
    out = model(**batch, task_name="sentiment", labels=torch.tensor([0, 1]))
    assert {"loss", "logits", "probabilities"} <= set(out)
    every = model(**batch)
    assert set(every) == set(TASKS) and every["ner"]["logits"].shape[:2] == batch["input_ids"].shape
    shared, per_task = model.task_parameters()
    assert shared and all(per_task.values())
    with pytest.raises(ConfigError, match="unknown task"):
        model(**batch, task_name="nope")
    with pytest.raises(ConfigError, match="task_name"):
        model(**batch, labels=torch.tensor([0, 1]))


# --------------------------------------------------------------------------------------------- type strings
def test_type_strings_split_compose_and_mask() -> None:
    y = split_types(pd.Series(["INTJ", "esfp"]), MBTI, "x")
    assert y.tolist() == [[1, 1, 0, 0], [0, 0, 1, 1]]
    assert compose_types(y, MBTI) == ["INTJ", "ESFP"]
    with pytest.raises(Exception, match="neither"):
        split_types(pd.Series(["IXTJ"]), MBTI, "file.csv")
    masked = mask_type_names(["As an INTJ (or INxJ?) I like ENFPs and Intp|||internet"], MBTI, "[MASK]")[0]
    assert "INTJ" not in masked and "ENFPs" not in masked and "Intp" not in masked and "internet" in masked
    proba = np.array([[0.9, 0.8, 0.1, 0.2], [0.2, 0.9, 0.9, 0.1]])
    m = dimension_metrics(proba, np.array([[1, 1, 0, 0], [0, 1, 0, 0]]), MBTI)
    assert m["accuracy_EI"] == 1.0 and m["accuracy_TF"] == 0.5
    assert m["all_dimensions_accuracy"] == 0.5 and m["mean_dimension_accuracy"] == pytest.approx(0.875)
    base = majority_baseline(
        np.array([[1, 0, 0, 1]] * 3 + [[0, 1, 1, 0]]), np.array([[1, 0, 0, 1], [0, 0, 0, 1]]), MBTI
    )
    assert base["majority_type"] == "ISTP" and base["all_dimensions_accuracy"] == 0.5


# ------------------------------------------------------------------------------------------- runner + CLI
def _write_tiny_data(folder: Path) -> None:
    rng = np.random.default_rng(0)
    rows = [{"text": f"this is {'good' if i % 2 else 'bad'} stuff {i}", "label": i % 2} for i in range(40)]
    pd.DataFrame(rows).to_csv(folder / "sent.csv", index=False)
    types = ["INTJ", "ESFP", "ISTP", "ENFJ"]
    mb = [
        {"text": f"{'quiet' if t[0] == 'I' else 'loud'} user {i} says {t}|||more", "type": t}
        for i, t in enumerate(types[i % 4] for i in range(40))
    ]
    pd.DataFrame(mb).to_csv(folder / "mbti.csv", index=False)
    with open(folder / "ner.conll", "w") as fh:
        for _ in range(30):
            name = ["John", "Mary", "Paris"][int(rng.integers(3))]
            fh.write(f"{name} {'B-LOC' if name == 'Paris' else 'B-PER'}\nwent O\nhome O\n\n")


def _yaml(folder: Path, **training: object) -> Path:
    import yaml

    tiny = tiny_bert_config("bert")
    cfg = {
        "model": {"backbone": None, "bert_options": tiny},
        "adapters": {"strategy": "s2"},
        "training": {
            "steps": 6,
            "batch_size": 8,
            "learning_rate": 1e-3,
            "max_length": 32,
            "progress": False,
            "eval_every": 3,
            "auto_batch_size": True,
            **training,
        },
        "tasks": {
            "sentiment": {"train": "sent.csv", "test": "sent.csv", "weight": 2.0},
            "ner": {"train": "ner.conll", "test": "ner.conll"},
            "mbti": {
                "train": "mbti.csv",
                "test": "mbti.csv",
                "type_dimensions": "mbti",
                "pos_weight": "balanced",
            },
        },
    }
    path = folder / "mt.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_cli_train_predict_evaluate_multitask(tmp_path: Path) -> None:
    from bertkit.cli import app

    _write_tiny_data(tmp_path)
    cfg = _yaml(tmp_path, sampling="temperature", gradient_surgery="pcgrad", loss_weighting="uncertainty")
    run = tmp_path / "run"
    cli = CliRunner()
    res = cli.invoke(app, ["train", str(cfg), "--output", str(run)])
    assert res.exit_code == 0, res.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert set(metrics["tasks"]) == {"sentiment", "ner", "mbti"}
    assert "f1" in metrics["tasks"]["ner"]["test"] and "accuracy" in metrics["tasks"]["sentiment"]["test"]
    mb = metrics["tasks"]["mbti"]["test"]
    assert {
        "accuracy_EI",
        "accuracy_JP",
        "all_dimensions_accuracy",
        "baseline_all_dimensions_accuracy",
    } <= set(mb)
    assert metrics["training"]["gradient_surgery"] == "pcgrad" and metrics["global_step"] == 6
    assert metrics["tasks"]["ner"]["steps"] == 6  # PCGrad: every task each step
    assert metrics["training"]["loss_weights"]["ner"] != 1.0  # learned uncertainty weights moved
    assert (run / "history.csv").is_file() and (
        run / "model" / "heads" / "mbti" / "model.safetensors"
    ).is_file()
    out = tmp_path / "types.csv"
    res = cli.invoke(app, ["predict", str(run), str(tmp_path / "mbti.csv"), "-o", str(out), "--task", "mbti"])
    assert res.exit_code == 0, res.output
    pred = pd.read_csv(out)
    assert pred["prediction"].str.fullmatch(r"[EI][SN][TF][JP]").all()
    assert np.allclose(pred["prob_E"] + pred["prob_I"], 1.0)
    res = cli.invoke(app, ["predict", str(run), str(tmp_path / "sent.csv"), "-o", str(out)])
    assert res.exit_code == 2 and "--task" in res.output
    res = cli.invoke(
        app,
        ["predict", str(run), str(tmp_path / "ner.conll"), "-o", str(tmp_path / "p.conll"), "--task", "ner"],
    )
    assert res.exit_code == 0 and len((tmp_path / "p.conll").read_text().split("\n\n")) >= 30
    res = cli.invoke(app, ["evaluate", str(run), str(cfg), "-o", str(tmp_path / "ev.json")])
    assert res.exit_code == 0, res.output
    ev = json.loads((tmp_path / "ev.json").read_text())
    assert ev["ner.f1"] == pytest.approx(
        metrics["tasks"]["ner"]["test"]["f1"]
    )  # save → load: same predictions
    assert ev["sentiment.accuracy"] == pytest.approx(metrics["tasks"]["sentiment"]["test"]["accuracy"])


def test_mbti_preset_single_task(tmp_path: Path, tokenizer) -> None:
    from bertkit.multitask import MultiTaskModel
    from bertkit.runconfig import build_run_config
    from bertkit.runners import runner_for

    _write_tiny_data(tmp_path)
    backbone = tmp_path / "tiny"
    from bertkit import create_bert_core

    torch.manual_seed(0)
    create_bert_core(config=tiny_bert_config("bert")).model.save_pretrained(backbone)
    tokenizer.save_pretrained(backbone)
    cfg = build_run_config(
        "quick",
        overrides={
            "data": {"task": "mbti"},
            "model": {"backbone": str(backbone)},
            "training": {"epochs": 1, "batch_size": 8, "max_length": 32, "progress": False},
        },
    )
    runner = runner_for(tmp_path / "mbti.csv", cfg.data.task)
    assert runner.name == "multitask"
    metrics = runner.train(tmp_path / "mbti.csv", tmp_path / "run", cfg, test=tmp_path / "mbti.csv")
    assert "mbti.all_dimensions_accuracy" in metrics["test"]
    model = MultiTaskModel.from_pretrained(tmp_path / "run")
    head = model.get_head("mbti")
    assert (
        head.config.pooling_type == "cls"
        and head.config.dropout_prob == 0.1
        and head.output.out_features == 4
    )
    out = model.predict(["a quiet INTJ person", "loud"], "mbti", return_probabilities=True)
    assert len(out[0]["prediction"]) == 4 and set(out[0]["probabilities"]) == set("EISNTFJP")


def test_multitask_test_split_is_scored_in_full_precision(tmp_path: Path, monkeypatch) -> None:
    """Validation runs under the training autocast; the test split (metrics.json) never enters it."""
    import yaml

    import bertkit.multitask.trainer as mt_trainer
    from bertkit.multitask.runner import train_multitask

    _write_tiny_data(tmp_path)
    path = _yaml(tmp_path, gradient_surgery="pcgrad", eval_every=1, steps=2, auto_batch_size=False)
    cfg = yaml.safe_load(path.read_text())
    cfg["tasks"]["sentiment"]["valid"] = "sent.csv"
    path.write_text(yaml.safe_dump(cfg))
    seen: list[tuple[str, bool]] = []
    split_now = ["?"]
    real_eval, real_outputs = mt_trainer.MultiTaskTrainer.evaluate, mt_trainer.run_outputs

    on_disk: list[int] = []

    def evaluate(self, split: str = "valid"):
        split_now[0] = split
        if split == "valid" and (tmp_path / "run" / "history.csv").is_file():  # written at each evaluation
            on_disk.append(int(pd.read_csv(tmp_path / "run" / "history.csv")["val_score"].notna().sum()))
        return real_eval(self, split)

    def outputs(*args, **kwargs):
        seen.append((split_now[0], args[6] is not None))  # (split, runs under autocast)
        return real_outputs(*args, **kwargs)

    monkeypatch.setattr(mt_trainer.MultiTaskTrainer, "evaluate", evaluate)
    monkeypatch.setattr(mt_trainer, "run_outputs", outputs)
    metrics = train_multitask(path, tmp_path / "run")
    assert ("valid", True) in seen and ("test", True) not in seen
    assert {s for s, _ in seen} == {"valid", "test"}
    assert on_disk == [1]  # the step-1 evaluation was on disk before the step-2 one ran
    history = pd.read_csv(tmp_path / "run" / "history.csv")
    # PCGrad logs each task's shared-gradient norm beside its loss
    assert {"grad_norm_sentiment", "grad_norm_ner", "grad_norm_mbti"} <= set(history.columns)
    assert (history["grad_norm_ner"].dropna() > 0).all() and metrics["global_step"] == 2
