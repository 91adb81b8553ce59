"""ONNX export: every registered head matches PyTorch within 1e-4, int8 decodes, the CLI runs export folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import REPO_ROOT, tiny_bert_config
from typer.testing import CliRunner

from bertkit import BertWithHead, create_bert_with_head, get_head_class, list_heads
from bertkit.cli import app
from bertkit.data import analyze_dataset, read_table
from bertkit.inference import load_predictor
from bertkit.inference.export import ExportError, export_model
from bertkit.inference.onnx_predictor import OnnxPredictor, is_export_dir

pytest.importorskip("onnxruntime")

DEMO = REPO_ROOT / "bertkit" / "data" / "examples" / "demo_reviews.csv"
DEMO_TEST = REPO_ROOT / "bertkit" / "data" / "examples" / "demo_reviews_test.csv"
TEXTS = [
    "first text",
    "the second text is a good deal longer than the first one, with a comma",
    "third",
    "a fourth example text",
    "yet another sentence that has a different number of tokens",
]
ATOL = 1e-4


def _tiny(head_name: str, tokenizer: Any) -> BertWithHead:
    torch.manual_seed(0)
    model = create_bert_with_head(
        head_type=head_name,
        bert_config=tiny_bert_config("bert"),
        head_config=get_head_class(head_name).example_config(),
        tokenizer=tokenizer,
    )
    return model.eval()


def _torch_outputs(model: BertWithHead, texts: list[str]) -> dict[str, np.ndarray]:
    from bertkit.inference.predictor import Predictor

    return Predictor(model, batch_size=2, device="cpu").outputs(texts)


def _assert_close(ref: dict[str, np.ndarray], got: dict[str, np.ndarray]) -> float:
    worst = 0.0
    for key, value in ref.items():
        assert key in got, key
        assert got[key].shape == value.shape, (key, got[key].shape, value.shape)
        if value.dtype.kind == "f":
            finite = np.isfinite(value)
            diff = float(np.max(np.abs(got[key][finite] - value[finite]), initial=0.0))
            assert diff <= ATOL, f"{key} differs by {diff}"
            worst = max(worst, diff)
        else:
            assert np.array_equal(got[key], value), key
    return worst


@pytest.mark.parametrize("head_name", list_heads())
def test_every_head_exports_and_matches_pytorch(head_name: str, tokenizer: Any, tmp_path: Path) -> None:
    if get_head_class(head_name).level == "bi_encoder":
        pytest.skip(
            "bi-encoder heads encode two texts per example (two graphs); export covers one-pass heads"
        )
    model = _tiny(head_name, tokenizer)
    result = export_model(model, tmp_path / "export", optimize=False)
    assert is_export_dir(result.output_dir)
    assert all(d <= ATOL for d in result.max_abs_diff.values()), result.max_abs_diff
    if (
        head_name == "token_classification"
    ):  # CRF Viterbi is a Python loop over positions: head runs in PyTorch
        assert result.graph == "encoder"
    # the folder serves on its own, in batches (length-sorted, sizes 2 and 1) that differ from the trace
    predictor = OnnxPredictor(result.output_dir, batch_size=2)
    _assert_close(_torch_outputs(model, TEXTS), predictor.outputs(TEXTS))
    cols = predictor.model.head.format_predictions(predictor.outputs(TEXTS[:2]))
    assert cols and all(len(v) == 2 for v in cols.values())


def test_fused_int8_export_decodes_with_the_heads_own_logic(tokenizer: Any, tmp_path: Path) -> None:
    model = _tiny("multilabel_classification", tokenizer)
    model.head.thresholds.fill_(0.3)  # a tuned threshold must survive the export
    result = export_model(model, tmp_path / "export", quantize="int8")
    info = json.loads((result.output_dir / "export.json").read_text())
    assert info["default"] == "int8" and set(info["files"]) == {"fp32", "int8"}
    # the first layer's attention is fused; the last runs the [CLS] query alone (bertkit/first_token.py)
    assert info["ort_fusions"] and info["ort_fusions"].get("Attention") == 1
    assert (result.output_dir / "model.int8.onnx").is_file()
    fp32 = OnnxPredictor(result.output_dir, precision="fp32")
    assert _assert_close(_torch_outputs(model, TEXTS), fp32.outputs(TEXTS)) <= ATOL
    int8 = OnnxPredictor(result.output_dir)
    assert int8.precision == "int8"
    preds = int8.predict(TEXTS)
    assert len(preds) == len(TEXTS) and all(len(p) == 4 and set(p) <= set("EISNTFJP") for p in preds)
    out = int8.outputs(TEXTS)
    assert np.array_equal(out["predictions"], (out["probabilities"] >= 0.3).astype(out["predictions"].dtype))
    assert np.max(np.abs(out["probabilities"] - fp32.outputs(TEXTS)["probabilities"])) < 0.1


def test_encoder_graph_and_bad_options(tokenizer: Any, tmp_path: Path) -> None:
    model = _tiny("binary_classification", tokenizer)
    result = export_model(model, tmp_path / "enc", graph="encoder", optimize=False)
    assert result.graph == "encoder" and result.outputs[0] == "last_hidden_state"
    _assert_close(_torch_outputs(model, TEXTS), OnnxPredictor(result.output_dir).outputs(TEXTS))
    with pytest.raises(ValueError, match="quantize"):
        export_model(model, tmp_path / "x", quantize="int4")
    with pytest.raises(ExportError, match="does not reproduce"):
        export_model(model, tmp_path / "y", atol=-1.0, optimize=False)  # nothing can be closer than -1
    assert not (tmp_path / "y").exists()
    bi = create_bert_with_head(
        head_type="text_similarity",
        bert_config=tiny_bert_config("bert"),
        head_config=get_head_class("text_similarity").example_config(),
        tokenizer=tokenizer,
    )
    with pytest.raises(ExportError, match="twice per example"):
        export_model(bi, tmp_path / "z")


@pytest.fixture(scope="module")
def trained_like_model(tmp_path_factory: Any, tokenizer: Any) -> Path:
    """A tiny binary model with the data profile of the demo reviews, saved as a model folder."""
    df = read_table(DEMO)
    profile = analyze_dataset(df)
    torch.manual_seed(0)
    model = create_bert_with_head(
        num_labels=2,
        label_names=profile.label_names,
        bert_config=tiny_bert_config("bert"),
        tokenizer=tokenizer,
        metadata={"data": profile.to_dict(), "max_length": 32},
    )
    folder = tmp_path_factory.mktemp("model") / "model"
    model.save_pretrained(folder)
    return folder


def test_cli_export_then_predict_and_evaluate_with_onnxruntime(
    trained_like_model: Path, tmp_path: Path
) -> None:
    runner = CliRunner()
    export_dir = tmp_path / "export"
    res = runner.invoke(
        app, ["export", str(trained_like_model), "--format", "onnx", "--output", str(export_dir)]
    )
    assert res.exit_code == 0, res.output
    assert "fp32 max |ONNX - PyTorch|" in res.output
    for folder, out in ((trained_like_model, tmp_path / "torch.csv"), (export_dir, tmp_path / "onnx.csv")):
        res = runner.invoke(
            app, ["predict", str(folder), str(DEMO_TEST), "--output", str(out), "--id-column", "id"]
        )
        assert res.exit_code == 0, res.output
    torch_sub, onnx_sub = pd.read_csv(tmp_path / "torch.csv"), pd.read_csv(tmp_path / "onnx.csv")
    assert list(onnx_sub.columns) == ["id", "label"] and len(onnx_sub) == 120
    pd.testing.assert_frame_equal(torch_sub, onnx_sub)
    res = runner.invoke(
        app, ["evaluate", str(export_dir), str(DEMO_TEST), "--output", str(tmp_path / "m.json")]
    )
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "m.json").read_text())
    reference = load_predictor(trained_like_model).evaluate(DEMO_TEST)
    assert metrics["accuracy"] == pytest.approx(reference["accuracy"])
    assert metrics["loss"] == pytest.approx(reference["loss"], abs=1e-4)
    proba = load_predictor(export_dir).predict_proba(["great food", "awful"])
    assert set(proba[0]) == {"negative", "positive"}


def test_cli_export_error_is_one_line(tmp_path: Path) -> None:
    res = CliRunner().invoke(app, ["export", str(tmp_path / "missing"), "--output", str(tmp_path / "e")])
    assert res.exit_code == 2 and "does not exist" in res.output
