"""Document sequences through the CLI: --group-column + --time-column train the sequence (time-series) heads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import tiny_bert_config
from typer.testing import CliRunner

from bertkit import ConfigError
from bertkit.cli import app

runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:
    from bertkit import create_bert_core

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_bert")
    create_bert_core(config=tiny_bert_config("bert")).model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _ok(*args: object):
    res = runner.invoke(app, [str(a) for a in args])
    assert res.exit_code == 0, res.output + (repr(res.exception) if res.exception else "")
    return res


def _order_data(path: Path, groups: int, seed: int) -> Path:
    """Label "early" when the group's 'alpha' post comes before its 'omega' post. Every group holds the same
    bag of posts, so only the order tells the labels apart (a bag-of-embeddings model sits at chance)."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(groups):
        posts = ["alpha alpha", "omega omega", "filler text", "filler text"]
        order = rng.permutation(4)
        texts = [posts[i] for i in order]
        label = "early" if texts.index("alpha alpha") < texts.index("omega omega") else "late"
        days = rng.permutation(30)[:4]
        days.sort()
        # rows shuffled in the file: the runner must sort them by date
        for t, day in rng.permutation(list(zip(texts, days))):
            rows.append(
                {"user": f"u{seed}_{g}", "date": f"2026-01-{int(day) + 1:02d}", "post": t, "label": label}
            )
    pd.DataFrame(rows).sample(frac=1.0, random_state=seed).to_csv(path, index=False)
    return path


def fast(epochs: int = 6) -> list[str]:
    return [
        "--epochs",
        str(epochs),
        "--batch-size",
        "8",
        "--lr",
        "3e-3",
        "--max-length",
        "8",
        "--set",
        "training.progress=false",
        "--set",
        "training.warmup_ratio=0.0",
    ]


def test_order_dependent_labels_are_learned(tiny_backbone: Path, tmp_path: Path) -> None:
    train = _order_data(tmp_path / "train.csv", 160, seed=0)
    test = _order_data(tmp_path / "test.csv", 60, seed=1)
    prof = json.loads(
        _ok("analyze", train, "--group-column", "user", "--time-column", "date", "--json").output
    )
    assert prof["task"] == "timeseries_classification" and prof["groups"] == 160 and prof["documents"] == 640
    run = tmp_path / "run"
    _ok(
        "train", train, "--test", test, "-o", run, "--backbone", tiny_backbone,
        "--group-column", "user", "--time-column", "date", "--label-column", "label", *fast(),
    )  # fmt: skip
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["accuracy"] >= 0.75, metrics["test"]  # chance is about 0.5
    pred = tmp_path / "pred.csv"
    _ok("predict", run, test, "-o", pred, "--proba")
    frame = pd.read_csv(pred)
    assert len(frame) == 60 and {"user", "prediction", "proba_early", "proba_late"} <= set(frame.columns)
    truth = pd.read_csv(test).groupby("user")["label"].first()
    acc = float((frame.set_index("user")["prediction"] == truth.reindex(frame["user"]).values).mean())
    assert abs(acc - metrics["test"]["accuracy"]) < 1e-9
    from bertkit import load_predictor

    with pytest.raises(ConfigError, match="groups of documents"):
        load_predictor(run)
    _ok("evaluate", run, test, "-o", tmp_path / "ev.json")
    ev = json.loads((tmp_path / "ev.json").read_text())
    assert abs(ev["accuracy"] - metrics["test"]["accuracy"]) < 1e-9


def _series(path: Path, groups: int, steps: int, seed: int) -> Path:
    """Each post says whether the next value goes up or down: the forecast depends on the latest post."""
    rng = np.random.default_rng(seed)
    rows = []
    for g in range(groups):
        value = float(rng.integers(10, 20))
        for t in range(steps):
            move = rng.choice(["rise", "fall"])
            rows.append({"shop": f"s{g}", "week": t, "note": f"sales will {move}", "sales": value})
            value += 2.0 if move == "rise" else -2.0
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_forecasting_with_history_cv_predict(tiny_backbone: Path, tmp_path: Path) -> None:
    data = _series(tmp_path / "sales.csv", 24, 8, seed=0)
    run = tmp_path / "run"
    args = ["--group-column", "shop", "--time-column", "week", "--label-column", "sales"]
    _ok(
        "train", data, "-o", run, "--backbone", tiny_backbone, "--task", "timeseries_regression", *args,
        *fast(8), "--set", "model.head_options.extra.history=true",
        "--set", "model.head_options.extra.max_documents=4",
    )  # fmt: skip
    metrics = json.loads((run / "metrics.json").read_text())
    valid = metrics["valid"]
    assert {"rmse", "mae", "mape", "smape", "directional_accuracy"} <= set(valid)
    assert valid["directional_accuracy"] >= 0.7, valid  # the latest post gives the direction
    assert metrics["train_windows"] > metrics["train_rows"]  # rolling origins: several windows per shop
    out = tmp_path / "forecast.csv"
    _ok("predict", run, data, "-o", out)
    frame = pd.read_csv(out)
    assert len(frame) == 24 and {"shop", "origin", "prediction_1"} <= set(frame.columns)
    assert (frame["origin"] == 7).all()  # forecasts start after each shop's last week
    cv = tmp_path / "cv"
    _ok(
        "cv", data, "-o", cv, "--folds", "2", "--backbone", tiny_backbone, "--task", "timeseries_regression",
        *args, *fast(2),
    )  # fmt: skip
    assert "rmse" in json.loads((cv / "metrics.json").read_text())["oof"]
    assert len(pd.read_csv(cv / "oof.csv")) > 24  # one row per forecast origin


def test_time_column_errors_are_one_line(tiny_backbone: Path, tmp_path: Path) -> None:
    from bertkit.runconfig import build_run_config

    with pytest.raises(ConfigError, match="group_column"):
        build_run_config("quick", overrides={"data": {"time_column": "date"}})
    with pytest.raises(ConfigError, match="does not fit"):
        build_run_config(
            "quick", overrides={"data": {"time_column": "d", "group_column": "g", "task": "binary"}}
        )
    data = _order_data(tmp_path / "d.csv", 4, seed=0)
    res = runner.invoke(
        app,
        ["train", str(data), "-o", str(tmp_path / "r"), "--group-column", "person", "--time-column", "date"],
    )
    assert res.exit_code == 2 and "lacks the column(s) ['person']" in res.output
