"""The CLI end to end with a tiny local backbone folder (the `--backbone PATH` code path), and its errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import REPO_ROOT, tiny_bert_config
from typer.testing import CliRunner

from bertkit.cli import app

DEMO = REPO_ROOT / "bertkit" / "data" / "examples" / "demo_reviews.csv"
DEMO_TEST = REPO_ROOT / "bertkit" / "data" / "examples" / "demo_reviews_test.csv"
runner = CliRunner()


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory, tokenizer) -> Path:
    """A tiny random BERT saved as a Hugging Face folder (config + safetensors + tokenizer)."""
    from bertkit import create_bert_core

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_bert")
    core = create_bert_core(config=tiny_bert_config("bert"))
    core.model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _invoke(*args: str):
    result = runner.invoke(app, [str(a) for a in args])
    return result


def _train_args(backbone: Path, out: Path) -> list[str]:
    return [
        "train",
        str(DEMO),
        "--test",
        str(DEMO_TEST),
        "--output",
        str(out),
        "--backbone",
        str(backbone),
        "--epochs",
        "1",
        "--batch-size",
        "16",
        "--max-length",
        "32",
        "--lr",
        "1e-3",
        "--max-train-samples",
        "120",
        "--set",
        "training.progress=false",
    ]


def test_train_predict_evaluate(tiny_backbone: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    res = _invoke(*_train_args(tiny_backbone, run))
    assert res.exit_code == 0, res.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"valid", "test", "train_seconds", "train_samples_per_second"} <= set(metrics)
    assert {"accuracy", "f1", "roc_auc"} <= set(metrics["test"])
    assert metrics["train_rows"] == 120 and metrics["valid_rows"] == 48  # left-over rows, 10% of 480
    for name in (
        "config.yaml",
        "history.csv",
        "report.html",
        "model/model_metadata.json",
        "test_predictions.csv",
    ):
        assert (run / name).is_file(), name
    html = (run / "report.html").read_text()
    assert "data:image/png;base64," in html and "accuracy" in html
    sub = tmp_path / "sub.csv"
    res = _invoke("predict", run, DEMO_TEST, "--output", sub, "--id-column", "id")
    assert res.exit_code == 0, res.output
    frame = pd.read_csv(sub)
    test = pd.read_csv(DEMO_TEST)
    assert list(frame.columns) == ["id", "label"] and frame["id"].tolist() == test["id"].tolist()
    assert set(frame["label"]) <= {"positive", "negative"}
    res = _invoke("predict", run, DEMO_TEST, "--output", tmp_path / "p.csv", "--proba")
    assert res.exit_code == 0 and {"proba_negative", "proba_positive"} <= set(pd.read_csv(tmp_path / "p.csv"))
    res = _invoke("evaluate", run, DEMO_TEST, "--output", tmp_path / "e.json")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "e.json").read_text())["accuracy"] == pytest.approx(
        metrics["test"]["accuracy"]
    )
    # the rerun config in config.yaml reproduces the run's settings
    cfg = (run / "config.yaml").read_text()
    assert "max_train_samples: 120" in cfg and "learning_rate: 0.001" in cfg


def test_cv_writes_oof_in_input_order(tiny_backbone: Path, tmp_path: Path) -> None:
    run = tmp_path / "cv"
    res = _invoke(
        "cv",
        DEMO,
        "--folds",
        "2",
        "--output",
        run,
        "--backbone",
        tiny_backbone,
        "--epochs",
        "1",
        "--max-train-samples",
        "60",
        "--max-length",
        "32",
        "--test",
        DEMO_TEST,
        "--set",
        "training.progress=false",
    )
    assert res.exit_code == 0, res.output
    oof = pd.read_csv(run / "oof.csv")
    assert len(oof) == 60 and set(oof["fold"]) == {0, 1}
    assert {"id", "label", "proba_positive"} <= set(oof.columns) and oof["id"].notna().all()
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["folds"]) == 2 and "accuracy" in metrics["oof"]
    assert "accuracy" in metrics["fold_summary"]
    assert (run / "fold_0" / "model" / "model_metadata.json").is_file()
    sub = pd.read_csv(run / "test_predictions.csv")
    assert len(sub) == 120 and sub["id"].tolist() == pd.read_csv(DEMO_TEST)["id"].tolist()


def test_analyze_and_heads() -> None:
    res = _invoke("analyze", DEMO, "--json")
    assert res.exit_code == 0, res.output
    prof = json.loads(res.output)
    assert prof["task"] == "binary" and prof["id_column"] == "id"
    res = _invoke("heads")
    assert res.exit_code == 0 and "binary_classification" in res.output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["analyze", "/no/such/file.csv"], "does not exist"),
        (["analyze", str(DEMO), "--label-column", "nope"], "nope"),
        (["train", str(DEMO), "--output", "/tmp/x", "--set", "training.epoch=2"], "did you mean 'epochs'"),
        (["train", str(DEMO), "--output", "/tmp/x", "--set", "training.scheduler=cosinus"], "choose one of"),
        (["train", str(DEMO), "--output", "/tmp/x", "--preset", "fast"], "quick, default, competition"),
        (["train", str(DEMO), "--output", "/tmp/x", "--set", "epochs=2"], "needs a section"),
        (["predict", "/tmp", str(DEMO), "--output", "/tmp/y.csv"], "not a bertkit model folder"),
        (["evaluate", "/no/such/run", str(DEMO)], "does not exist"),
    ],
)
def test_bad_input_gives_one_line(args: list[str], message: str) -> None:
    res = runner.invoke(app, args)
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert len([line for line in res.output.strip().splitlines() if line.startswith("error:")]) == 1


def test_unseen_labels_and_missing_columns(tiny_backbone: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    assert _invoke(*_train_args(tiny_backbone, run)).exit_code == 0
    bad = tmp_path / "bad.csv"
    pd.DataFrame({"id": [1, 2], "text": ["good", "bad"], "label": ["positive", "meh"]}).to_csv(
        bad, index=False
    )
    res = _invoke("evaluate", run, bad)
    assert res.exit_code == 2 and "unseen" in res.output and "meh" in res.output
    nocol = tmp_path / "nocol.csv"
    pd.DataFrame({"id": [1], "body": ["x"]}).to_csv(nocol, index=False)
    res = _invoke("predict", run, nocol, "--output", tmp_path / "o.csv")
    assert res.exit_code == 2 and "text" in res.output
    res = _invoke("predict", run, DEMO_TEST, "--output", tmp_path / "o.csv", "--id-column", "nope")
    assert res.exit_code == 2 and "nope" in res.output
