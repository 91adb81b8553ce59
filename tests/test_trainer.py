"""Trainer: learning, schedules, LLRD groups, early stopping, history, exact resume after SIGKILL."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO_ROOT, tiny_bert_config

from bertkit import ConfigError, create_bert_with_head
from bertkit.config import TrainingConfig
from bertkit.data import TokenizedDataset, analyze_dataset, prepare_frame, read_table, tokenize_texts
from bertkit.training import EnhancedTrainer, Trainer
from bertkit.training.optim import build_param_groups, schedule_factor

DEMO = REPO_ROOT / "bertkit" / "data" / "examples" / "demo_reviews.csv"


def _demo_data(tokenizer, rows: slice = slice(0, 160)):
    df = read_table(DEMO).iloc[rows].reset_index(drop=True)
    profile = analyze_dataset(df)
    prep = prepare_frame(df, profile)
    return TokenizedDataset(tokenize_texts(tokenizer, prep.texts_a, max_length=32), prep.targets), profile


def _tiny(tokenizer, profile, arch: str = "bert"):
    torch.manual_seed(0)
    return create_bert_with_head(
        num_labels=2, label_names=profile.label_names, bert_config=tiny_bert_config(arch), tokenizer=tokenizer
    )


def test_training_lowers_loss_and_writes_history(tokenizer, tmp_path: Path) -> None:
    train, profile = _demo_data(tokenizer)
    valid, _ = _demo_data(tokenizer, slice(400, 480))
    model = _tiny(tokenizer, profile)
    cfg = TrainingConfig(epochs=3, batch_size=16, learning_rate=2e-3, progress=False, log_every=2)
    result = EnhancedTrainer(model=model, output_dir=tmp_path, config=cfg).train(train, valid)
    hist = pd.read_csv(tmp_path / "history.csv")
    losses = hist["train_loss"].dropna().values
    assert losses[-1] < losses[0]
    assert "val_accuracy" in hist.columns and result.metric_name == "accuracy"
    assert (tmp_path / "model" / "model_metadata.json").is_file()
    assert result.train_samples_per_second > 0 and result.global_step == 30


def test_early_stopping_and_best_model(tokenizer, tmp_path: Path) -> None:
    train, profile = _demo_data(tokenizer)
    model = _tiny(tokenizer, profile)
    # a metric that can only get worse after the first evaluation stops after `patience` evaluations
    cfg = TrainingConfig(
        epochs=10,
        batch_size=16,
        learning_rate=1e-3,
        progress=False,
        eval_strategy="steps",
        eval_steps=2,
        early_stopping_patience=2,
        metric_for_best_model="loss",
    )
    result = Trainer(model, tmp_path, cfg).train(train, train)
    assert result.global_step < 100  # stopped early or converged; never ran all 100 steps without improving
    hist = pd.read_csv(tmp_path / "history.csv")
    best = hist["val_loss"].dropna().min()
    assert math.isclose(result.best_metric, best, rel_tol=1e-6)


def test_param_groups_llrd_and_head_lr(tokenizer) -> None:
    _, profile = _demo_data(tokenizer, slice(0, 10))
    model = _tiny(tokenizer, profile)
    cfg = TrainingConfig(
        learning_rate=1e-4, head_learning_rate=1e-3, layerwise_lr_decay=0.5, weight_decay=0.1
    )
    groups = build_param_groups(model, cfg)
    lr_of = {id(p): g["lr"] for g in groups for p in g["params"]}
    wd_of = {id(p): g["weight_decay"] for g in groups for p in g["params"]}
    bert = model.bert
    assert lr_of[id(bert.layers[1].attention.self.query.weight)] == pytest.approx(1e-4)  # top layer
    assert lr_of[id(bert.layers[0].attention.self.query.weight)] == pytest.approx(5e-5)
    assert lr_of[id(bert.model.embeddings.word_embeddings.weight)] == pytest.approx(2.5e-5)
    assert lr_of[id(model.head.output.weight)] == pytest.approx(1e-3)
    assert wd_of[id(model.head.output.bias)] == 0.0 and wd_of[id(model.head.output.weight)] == 0.1
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_schedules() -> None:
    assert schedule_factor(0, 100, 10, "linear") == pytest.approx(0.1)
    assert schedule_factor(9, 100, 10, "linear") == pytest.approx(1.0)
    assert schedule_factor(55, 100, 10, "linear") == pytest.approx(0.5)
    assert schedule_factor(55, 100, 10, "cosine") == pytest.approx(0.5)
    assert schedule_factor(99, 100, 10, "constant") == 1.0
    with pytest.raises(ConfigError, match="scheduler='cosinus' is not valid"):
        TrainingConfig(scheduler="cosinus")
    with pytest.raises(ConfigError, match="did you mean 'epochs'"):
        TrainingConfig.from_dict({"epoch": 3})


def test_freezing_schedule(tokenizer) -> None:
    _, profile = _demo_data(tokenizer, slice(0, 10))
    model = _tiny(tokenizer, profile)
    trainer = Trainer(
        model, None, TrainingConfig(freeze_encoder_epochs=1, gradual_unfreeze=True, progress=False)
    )
    trainer._apply_freezing(model, 0)
    assert not any(p.requires_grad for p in model.bert.parameters())
    trainer._apply_freezing(model, 1)  # top layer opens first
    assert all(p.requires_grad for p in model.bert.layers[1].parameters())
    assert not any(p.requires_grad for p in model.bert.layers[0].parameters())
    trainer._apply_freezing(model, 2)
    assert all(p.requires_grad for p in model.bert.parameters())


def _weights(folder: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    out = {}
    for part in ("bert", "head"):
        out.update({f"{part}.{k}": v for k, v in load_file(str(folder / part / "model.safetensors")).items()})
    return out


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "Ctrl-C"])
def test_interrupt_then_resume_is_bitwise_identical(sig: int, tmp_path: Path) -> None:
    child = [sys.executable, str(REPO_ROOT / "tests" / "_resume_child.py")]
    env = dict(os.environ, PYTHONHASHSEED="0")
    subprocess.run([*child, str(tmp_path / "full"), "fresh", "0"], check=True, env=env, timeout=300)
    proc = subprocess.Popen([*child, str(tmp_path / "killed"), "fresh", "0.15"], env=env)
    ckpts = tmp_path / "killed" / "checkpoints"
    deadline = time.time() + 240
    while time.time() < deadline and not (
        ckpts.is_dir() and any(p.name == "step-6" for p in ckpts.iterdir())
    ):
        time.sleep(0.05)
        assert proc.poll() is None, "the child finished before it could be killed"
    proc.send_signal(sig)
    code = proc.wait(timeout=120)
    assert code != 0
    assert not (tmp_path / "killed" / "model").exists()  # it really stopped mid-run (24 steps in all)
    if sig == signal.SIGINT:  # Ctrl-C writes a checkpoint at the step where it stopped
        steps = sorted(int(p.name[5:]) for p in ckpts.iterdir() if p.name.startswith("step-"))
        assert steps[-1] >= 6
    # nothing visible in the run folder is half-written
    for path in (tmp_path / "killed").rglob("*"):
        if (
            path.is_file()
            and not path.name.startswith(".")
            and not any(p.startswith(".") for p in path.parts[-3:-1])
        ):
            if path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".safetensors":
                from safetensors.torch import load_file

                load_file(str(path))
    subprocess.run([*child, str(tmp_path / "killed"), "resume", "0"], check=True, env=env, timeout=300)
    a, b = _weights(tmp_path / "full" / "model"), _weights(tmp_path / "killed" / "model")
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert np.isfinite(pd.read_csv(tmp_path / "killed" / "history.csv")["train_loss"].dropna()).all()


def test_one_process_trains_with_different_precisions_in_turn(tokenizer, tmp_path: Path) -> None:
    """Accelerate's process-wide state must not pin the first run's mixed precision (notebooks, ablate)."""
    train, profile = _demo_data(tokenizer, slice(0, 32))
    seen = []
    for precision in ("no", "bf16", "no"):
        cfg = TrainingConfig(
            epochs=1, batch_size=16, device="cpu", mixed_precision=precision, progress=False, log_every=1
        )
        trainer = Trainer(_tiny(tokenizer, profile), tmp_path / precision, cfg)
        seen.append(trainer.accelerator.mixed_precision)
        result = trainer.train(train, train)
        assert result.global_step == 2 and np.isfinite(result.val_metrics["loss"])
    assert seen == ["no", "bf16", "no"]


def test_final_scores_use_full_precision(tokenizer, tmp_path: Path) -> None:
    """Validation runs under the training autocast; final scoring (full_precision) never enters it."""
    data, profile = _demo_data(tokenizer, slice(0, 40))
    trainer = EnhancedTrainer(
        model=_tiny(tokenizer, profile), output_dir=tmp_path, config=TrainingConfig(progress=False)
    )
    entered: list[int] = []
    real = trainer.accelerator.autocast

    def spy(*args, **kwargs):
        entered.append(1)
        return real(*args, **kwargs)

    trainer.accelerator.autocast = spy
    metrics, _ = trainer.evaluate(data)
    assert entered  # training precision
    entered.clear()
    again, _ = trainer.evaluate(data, full_precision=True)
    assert not entered and set(again) == set(metrics)
