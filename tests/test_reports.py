"""Tests for bertkit.reports: PNG plots, the self-contained HTML report and build_run_report."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from bertkit import reports

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def assert_png(path: Path | None) -> None:
    assert path is not None
    path = Path(path)
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert len(data) > 1000
    assert not list(path.parent.glob(f".{path.name}.*.tmp")), "temporary file left behind"


@pytest.fixture
def history() -> pd.DataFrame:
    nan = np.nan
    return pd.DataFrame(
        {
            "step": [10, 20, 20, 30, 40, 40],
            "epoch": [0.5, 1.0, 1.0, 1.5, 2.0, 2.0],
            "train_loss": [0.70, 0.60, nan, 0.50, 0.40, nan],
            "val_loss": [nan, nan, 0.55, nan, nan, 0.45],
            "val_f1": [nan, nan, 0.70, nan, nan, 0.80],
            "val_accuracy": [nan, nan, 0.72, nan, nan, 0.81],
        }
    )


# ------------------------------------------------------------------------------------------ plots
def test_plot_history_writes_png(tmp_path: Path, history: pd.DataFrame) -> None:
    out = reports.plot_history(history, tmp_path / "h.png")
    assert out == tmp_path / "h.png"
    assert_png(out)


def test_plot_history_empty_returns_none(tmp_path: Path, history: pd.DataFrame) -> None:
    assert reports.plot_history(history.iloc[:0], tmp_path / "h.png") is None
    assert reports.plot_history(None, tmp_path / "h.png") is None
    assert not (tmp_path / "h.png").exists()


def test_plot_history_loss_only(tmp_path: Path) -> None:
    df = pd.DataFrame({"step": [1, 2, 3], "epoch": [0, 0, 0], "train_loss": [1.0, 0.8, 0.7]})
    assert_png(reports.plot_history(df, tmp_path / "h.png"))


def test_plot_confusion_matrix(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60)
    pred = np.where(rng.random(60) < 0.7, y, rng.integers(0, 3, 60))
    for normalize in (True, False):
        out = reports.plot_confusion_matrix(
            y, pred, ["a", "b", "c"], tmp_path / f"cm{normalize}.png", normalize
        )
        assert_png(out)


def test_plot_confusion_matrix_many_classes_and_string_labels(tmp_path: Path) -> None:
    names = [f"a_rather_long_class_name_{i}" for i in range(12)]
    y = np.arange(120) % 12
    assert_png(reports.plot_confusion_matrix(y, (y + 1) % 12, names, tmp_path / "cm12.png"))
    assert_png(
        reports.plot_confusion_matrix(["x", "y", "y"], ["x", "x", "y"], ["x", "y"], tmp_path / "s.png")
    )


def test_plot_confusion_matrix_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="different lengths"):
        reports.plot_confusion_matrix([0, 1, 1], [0, 1], ["a", "b"], tmp_path / "cm.png")
    with pytest.raises(ValueError):
        reports.plot_confusion_matrix([0, -1], [0, 1], ["a", "b"], tmp_path / "cm.png")
    assert not (tmp_path / "cm.png").exists()


def test_plot_reliability_diagram(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    p = rng.random(200)
    y = (rng.random(200) < p).astype(int)
    assert_png(reports.plot_reliability_diagram(y, p, tmp_path / "rel.png", n_bins=8))
    assert_png(reports.plot_reliability_diagram(y, np.stack([1 - p, p], 1), tmp_path / "rel2.png"))


def test_expected_calibration_error_matches_hand_computation() -> None:
    y = np.array([0, 1, 1, 1, 0])
    p = np.array([0.05, 0.15, 0.85, 0.95, 0.9])
    # bins (10 equal-width): [0.0,0.1): y=0 p=.05 -> |0-.05|*1; [0.1,0.2): |1-.15|*1;
    # [0.8,0.9): |1-.85|*1; [0.9,1.0]: mean y=.5, mean p=.925 -> |.5-.925|*2
    expected = (0.05 + 0.85 + 0.15 + 0.425 * 2) / 5
    assert reports.expected_calibration_error(y, p, 10) == pytest.approx(expected)
    assert reports.expected_calibration_error([0, 1], [0.0, 1.0]) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        reports.expected_calibration_error([0, 1], [0.5, 1.5])


def test_plot_regression_scatter(tmp_path: Path) -> None:
    rng = np.random.default_rng(2)
    t = rng.normal(size=100)
    assert_png(reports.plot_regression_scatter(t, t + rng.normal(scale=0.3, size=100), tmp_path / "r.png"))
    # constant predictions (undefined Pearson r) must still plot
    assert_png(reports.plot_regression_scatter(t, np.zeros(100), tmp_path / "r0.png"))


def test_plot_per_label_bars(tmp_path: Path) -> None:
    out = reports.plot_per_label_bars(
        ["toxic", "obscene", "insult"], [0.8, np.nan, 0.3], tmp_path / "b.png", "F1"
    )
    assert_png(out)
    with pytest.raises(ValueError):
        reports.plot_per_label_bars(["a", "b"], [0.1], tmp_path / "bad.png", "F1")


# ------------------------------------------------------------------------------------------ HTML
def _report(tmp_path: Path, history: pd.DataFrame, **kwargs: object) -> str:
    img = reports.plot_history(history, tmp_path / "plots" / "training_curves.png")
    out = reports.write_html_report(
        tmp_path,
        title="Run <1>",
        metrics={"valid": {"f1_macro": 0.912345, "n_rows": 120}, "test": {"f1_macro": 0.8, "auc": 0.95}},
        config={"model": {"name": "bert-base<script>alert(1)</script>", "lr": 2e-5}, "path": Path("/d")},
        images=[img],
        **kwargs,  # type: ignore[arg-type]
    )
    assert out == tmp_path / "report.html"
    return out.read_text(encoding="utf-8")


def test_html_report_content(tmp_path: Path, history: pd.DataFrame) -> None:
    page = _report(tmp_path, history)
    for text in ("f1_macro", "0.9123", "n_rows", "120", "auc", "0.9500", "valid", "test", "Training curves"):
        assert text in page
    assert "0.912345" not in page  # floats rounded to 4 decimals
    assert page.count("data:image/png;base64,") == 1
    assert "Run &lt;1&gt;" in page


def test_html_report_is_self_contained_and_escaped(tmp_path: Path, history: pd.DataFrame) -> None:
    page = _report(tmp_path, history)
    assert "<script" not in page.lower()
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)
    assert "@import" not in page
    assert "bert-base&lt;script&gt;" in page
    assert "lr: 2.0e-05" in page and "path: /d" in page


def test_html_report_extra_tables_and_missing_image(tmp_path: Path, history: pd.DataFrame) -> None:
    table = pd.DataFrame({"label": ["<b>x</b>", "y"], "f1": [0.123456, 0.5]})
    page = _report(tmp_path, history, extra_tables={"Per-class <metrics>": table}, warnings=["note <x>"])
    assert "Per-class &lt;metrics&gt;" in page
    assert "&lt;b&gt;x&lt;/b&gt;" in page and "<b>x</b>" not in page
    assert "0.1235" in page
    assert "note &lt;x&gt;" in page
    out = reports.write_html_report(tmp_path, title="t", metrics={"acc": 1.0}, config={}, images=["gone.png"])
    assert "gone.png could not be embedded" in out.read_text(encoding="utf-8")


def test_html_report_flat_metrics(tmp_path: Path) -> None:
    out = reports.write_html_report(
        tmp_path,
        title="t",
        metrics={"rmse": np.float32(0.25), "epochs": 3, "nan": float("nan")},
        config={},
        images=[],
    )
    page = out.read_text(encoding="utf-8")
    assert "0.2500" in page and ">3<" in page and ">nan<" in page


# ------------------------------------------------------------------------------------------ build_run_report
def _plots(run_dir: Path) -> set[str]:
    return {p.name for p in (run_dir / "plots").glob("*.png")}


def test_build_run_report_binary(tmp_path: Path, history: pd.DataFrame) -> None:
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 80)
    proba = np.clip(0.6 * y + 0.4 * rng.random(80), 0, 1)
    out = reports.build_run_report(
        tmp_path, task="binary", metrics={"valid": {"f1": 0.9}}, config={"task": "binary"}, history=history,
        y_true=y, proba=proba, label_names=["negative", "positive"],
    )  # fmt: skip
    assert _plots(tmp_path) == {"history.png", "confusion_matrix.png", "reliability_diagram.png"}
    for name in _plots(tmp_path):
        assert_png(tmp_path / "plots" / name)
    page = out.read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == 3
    assert "Warnings" not in page


@pytest.mark.parametrize(
    ("task", "expected"),
    [
        ("multiclass", {"confusion_matrix.png"}),
        ("ordinal_regression", {"confusion_matrix.png"}),
        ("multilabel", {"per_label_f1.png"}),
        ("regression", {"regression_scatter.png"}),
    ],
)
def test_build_run_report_tasks(tmp_path: Path, task: str, expected: set[str]) -> None:
    rng = np.random.default_rng(4)
    kwargs: dict[str, Any] = {}
    if task == "multilabel":
        y = rng.integers(0, 2, (50, 4))
        kwargs = {"y_true": y, "proba": rng.random((50, 4)), "label_names": list("abcd")}
    elif task == "regression":
        y = rng.normal(size=(50, 2))
        kwargs = {"y_true": y, "y_pred": y + 0.1}
    else:
        kwargs = {"y_true": rng.integers(0, 4, 50), "proba": rng.random((50, 4))}
    reports.build_run_report(tmp_path, task=task, metrics={"m": 1.0}, config={}, history=None, **kwargs)
    assert _plots(tmp_path) == expected
    page = (tmp_path / "report.html").read_text(encoding="utf-8")
    assert page.count("data:image/png;base64,") == len(expected)


def test_build_run_report_survives_failing_plot(tmp_path: Path, history: pd.DataFrame) -> None:
    out = reports.build_run_report(
        tmp_path, task="multiclass", metrics={"valid": {"accuracy": 0.5}}, config={}, history=history,
        y_true=[0, 1, 2, 1], y_pred=[0, 1],  # mismatched lengths
    )  # fmt: skip
    assert out.exists()
    page = out.read_text(encoding="utf-8")
    assert "confusion matrix plot failed" in page and "different lengths" in page
    assert "accuracy" in page and "0.5000" in page
    assert _plots(tmp_path) == {"history.png"}
    assert page.count("data:image/png;base64,") == 1


def test_build_run_report_without_predictions_or_history(tmp_path: Path) -> None:
    out = reports.build_run_report(tmp_path, task="binary", metrics={}, config={"a": 1}, history=None)
    page = out.read_text(encoding="utf-8")
    assert "No metrics recorded" in page and "data:image" not in page
