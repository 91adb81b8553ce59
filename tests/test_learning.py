"""Learning on real data with the bundled MiniLM (slow; skipped without ../shared/data)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import shared_data
from typer.testing import CliRunner

from bertkit import create_bert_with_head
from bertkit.cli import app
from bertkit.config import TrainingConfig
from bertkit.data import TokenizedDataset, analyze_dataset, prepare_frame, read_table, tokenize_texts
from bertkit.training import Trainer

pytestmark = pytest.mark.slow


def test_minilm_multiclass_learns_trec(tmp_path: Path) -> None:
    """300 TREC rows: training loss goes down and held-out accuracy beats the majority class."""
    folder = shared_data("trec")
    df = read_table(folder / "train.csv").sample(frac=1.0, random_state=0).reset_index(drop=True)
    train_df, test_df = df.iloc[:300], df.iloc[300:500]
    profile = analyze_dataset(train_df)
    assert profile.task == "multiclass"
    torch.manual_seed(0)
    model = create_bert_with_head(
        head_type="multiclass_classification",
        num_labels=len(profile.label_names),
        label_names=profile.label_names,
        bert_name="minilm",
    )
    tok = model.tokenizer

    def ds(frame: pd.DataFrame) -> TokenizedDataset:
        prep = prepare_frame(frame, profile)
        return TokenizedDataset(tokenize_texts(tok, prep.texts_a, max_length=48), prep.targets)

    train, test = ds(train_df), ds(test_df)
    cfg = TrainingConfig(
        epochs=4, batch_size=16, learning_rate=1e-4, progress=False, log_every=5, calibrate=False
    )
    trainer = Trainer(model, tmp_path, cfg)
    result = trainer.train(train, None)
    losses = result.history["train_loss"].dropna().values
    assert losses[-3:].mean() < losses[:3].mean() * 0.7
    metrics, _ = trainer.evaluate(test)
    majority = np.bincount(test.targets).max() / len(test)
    assert metrics["accuracy"] > majority + 0.15, (metrics["accuracy"], majority)


@pytest.mark.parametrize(
    ("name", "task", "extra"),
    [
        ("trec", "multiclass", []),
        ("semeval2018_ec", "multilabel", []),
        ("commonlit", "regression", []),
        ("yelp_stars", "ordinal", []),
        ("stsb", "regression", []),
    ],
)
def test_end_to_end_on_real_data(name: str, task: str, extra: list[str], tmp_path: Path) -> None:
    """analyze (task detected without overrides) → train → cv --folds 3 on a subset → predict."""
    folder = shared_data(name)
    runner = CliRunner()
    res = runner.invoke(app, ["analyze", str(folder / "train.csv"), "--json"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["task"] == task
    common = ["--epochs", "1", "--max-length", "64", "--batch-size", "16", "--set", "training.progress=false"]
    res = runner.invoke(
        app,
        [
            "train",
            str(folder / "train.csv"),
            "--output",
            str(tmp_path / "run"),
            "--max-train-samples",
            "200",
            *common,
            *extra,
        ],
    )
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app,
        [
            "cv",
            str(folder / "train.csv"),
            "--folds",
            "3",
            "--output",
            str(tmp_path / "cv"),
            "--max-train-samples",
            "150",
            *common,
            *extra,
        ],
    )
    assert res.exit_code == 0, res.output
    oof = pd.read_csv(tmp_path / "cv" / "oof.csv")
    assert len(oof) == 150 and set(oof["fold"]) == {0, 1, 2}
    test_file = folder / "test.csv"
    res = runner.invoke(
        app, ["predict", str(tmp_path / "run"), str(test_file), "--output", str(tmp_path / "s.csv")]
    )
    assert res.exit_code == 0, res.output
    assert len(pd.read_csv(tmp_path / "s.csv")) == len(read_table(test_file))
