"""Tests for bertkit.metrics against hand-computed values on small arrays."""

from __future__ import annotations

import math

import numpy as np
import pytest

from bertkit import metrics as M
from bertkit.errors import ConfigError, DataError


def _all_plain_floats(d: dict) -> bool:
    return all(type(v) is float for v in d.values())


# ------------------------------------------------------------------------------------ calibration / binary
def test_ece_zero_on_perfectly_calibrated_toy() -> None:
    y = np.array([1, 0, 0, 0, 1, 1, 1, 0])
    p = np.array([0.25] * 4 + [0.75] * 4)
    assert M.expected_calibration_error(y, p) == pytest.approx(0.0, abs=1e-12)


def test_ece_overconfident() -> None:
    y = np.array([1, 1, 0, 1, 1])  # 80% positive, all predicted 0.9
    p = np.full(5, 0.9)
    assert M.expected_calibration_error(y, p) == pytest.approx(0.1)


def test_reliability_curve_shapes_and_empty_bins() -> None:
    conf, acc, count = M.reliability_curve([0, 1, 1], [0.05, 0.95, 1.0], n_bins=10)
    assert conf.shape == acc.shape == count.shape == (10,)
    assert count.tolist() == [1, 0, 0, 0, 0, 0, 0, 0, 0, 2]
    assert conf[9] == pytest.approx(0.975) and acc[9] == 1.0 and acc[0] == 0.0
    assert np.isnan(acc[1])


def test_binary_metrics_hand_values() -> None:
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.6, 0.4, 0.9])
    out = M.binary_metrics(y, p)
    assert _all_plain_floats(out)
    assert set(out) == {"accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "ece"}
    assert out["accuracy"] == 0.5 and out["precision"] == 0.5 and out["recall"] == 0.5 and out["f1"] == 0.5
    assert out["roc_auc"] == pytest.approx(0.75)
    assert out["log_loss"] == pytest.approx(-(2 * math.log(0.9) + 2 * math.log(0.4)) / 4)
    assert M.binary_metrics(y, p, threshold=0.35)["recall"] == 1.0


def test_binary_metrics_one_class_gives_nan_auc() -> None:
    out = M.binary_metrics([1, 1, 1], [0.2, 0.7, 0.9])
    assert math.isnan(out["roc_auc"])
    assert out["accuracy"] == pytest.approx(2 / 3)
    assert math.isfinite(out["log_loss"])


# ----------------------------------------------------------------------------------------- classification
def test_multiclass_missing_class_and_topk() -> None:
    y = np.array([0, 1, 1, 0])  # classes 2 and 3 never appear
    proba = np.array(
        [[0.7, 0.1, 0.1, 0.1], [0.2, 0.5, 0.2, 0.1], [0.1, 0.2, 0.3, 0.4], [0.1, 0.6, 0.2, 0.1]],
        dtype=np.float32,
    )
    out = M.multiclass_metrics(y, proba, label_names=["a", "b", "c", "d"])
    assert _all_plain_floats(out)
    assert out["accuracy"] == 0.5
    # class 0: tp1 fp0 fn1 -> 2/3; class 1: tp1 fp1 fn1 -> 1/2; classes 2, 3: 0
    assert out["macro_f1"] == pytest.approx((2 / 3 + 0.5) / 4)
    assert out["weighted_f1"] == pytest.approx((2 / 3 + 0.5) / 2)
    assert out["f1_a"] == pytest.approx(2 / 3) and out["f1_d"] == 0.0
    assert out["log_loss"] == pytest.approx(-np.mean(np.log([0.7, 0.5, 0.2, 0.1])), rel=1e-5)
    assert out["top3_accuracy"] == 0.75  # row 4: class 0 has the lowest probability
    assert "top5_accuracy" not in out


def test_multiclass_rejects_logits() -> None:
    with pytest.raises(DataError):
        M.multiclass_metrics([0, 1], np.array([[2.0, -1.0], [0.5, 3.0]]))


def test_multilabel_metrics_hand_values() -> None:
    y = np.array([[1, 0, 1], [0, 1, 0]])
    proba = np.array([[0.9, 0.2, 0.4], [0.1, 0.8, 0.3]])
    out = M.multilabel_metrics(y, proba, label_names=["x", "y", "z"])
    # predictions [[1,0,0],[0,1,0]]: one error (row 0, label z)
    assert out["subset_accuracy"] == 0.5
    assert out["hamming_loss"] == pytest.approx(1 / 6)
    assert out["micro_precision"] == 1.0 and out["micro_recall"] == pytest.approx(2 / 3)
    assert out["micro_f1"] == pytest.approx(0.8)
    assert out["macro_f1"] == pytest.approx(2 / 3)
    assert out["accuracy_x"] == 1.0 and out["accuracy_z"] == 0.5
    assert out["mean_label_accuracy"] == pytest.approx(5 / 6)
    per_label = M.multilabel_metrics(y, proba, thresholds=np.array([0.5, 0.5, 0.35]))
    assert per_label["subset_accuracy"] == 1.0 and "accuracy_label_2" in per_label
    with pytest.raises(ConfigError):
        M.multilabel_metrics(y, proba, thresholds=np.array([0.5, 0.5]))


def test_tune_thresholds_and_best_binary_threshold() -> None:
    y = np.array([[1, 0], [1, 0], [0, 0], [0, 0]])
    proba = np.array([[0.35, 0.9], [0.4, 0.1], [0.2, 0.3], [0.1, 0.2]])
    thr = M.tune_thresholds(y, proba)
    assert thr.shape == (2,)
    assert thr[0] <= 0.35 and np.array_equal(proba[:, 0] >= thr[0], y[:, 0] == 1)  # perfect separation
    assert thr[1] == 0.5  # no positives: unchanged
    t = M.best_binary_threshold(y[:, 0], proba[:, 0])
    assert t == pytest.approx(thr[0])
    assert M.best_binary_threshold(y[:, 0], proba[:, 0], metric="accuracy") == pytest.approx(t)
    with pytest.raises(ConfigError):
        M.best_binary_threshold(y[:, 0], proba[:, 0], metric="auc")


def test_macro_f1_excluding_other() -> None:
    y_true = [0, 1, 2, 2, 0]
    y_pred = [0, 1, 2, 0, 1]
    # label 1: tp1 fp1 fn0 -> 2/3; label 2: tp1 fp0 fn1 -> 2/3; label 0 excluded
    assert M.macro_f1_excluding(y_true, y_pred, exclude_labels=[0]) == pytest.approx(2 / 3)
    assert math.isnan(M.macro_f1_excluding([0, 0], [0, 0], exclude_labels=[0]))


# ------------------------------------------------------------------------------------ regression / ordinal
def test_regression_metrics_hand_values() -> None:
    out = M.regression_metrics(np.array([1.0, 2.0, 3.0, 4.0]), np.array([1.0, 2.0, 3.0, 6.0]))
    assert _all_plain_floats(out)
    assert out["mse"] == 1.0 and out["rmse"] == 1.0 and out["mae"] == 0.5
    assert out["r2"] == pytest.approx(1 - 4 / 5)
    assert out["spearman"] == pytest.approx(1.0)
    assert 0.9 < out["pearson"] < 1.0


def test_regression_metrics_multi_target_and_constant() -> None:
    y = np.array([[1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    p = np.array([[1.0, 1.0], [2.0, 1.0], [3.0, 1.0]])
    out = M.regression_metrics(y, p)
    assert out["rmse_0"] == 0.0 and out["rmse_1"] == 1.0 and out["rmse"] == 0.5
    assert out["pearson"] == pytest.approx(1.0)  # target 1 is constant, so only target 0 counts
    single = M.regression_metrics(y[:, 1], p[:, 1])
    assert math.isnan(single["pearson"]) and math.isnan(single["spearman"])
    assert "rmse_0" not in single


def test_ordinal_metrics_known_qwk() -> None:
    out = M.ordinal_metrics([0, 0, 1, 1], [0, 1, 1, 1])
    assert out["qwk"] == pytest.approx(0.5)
    assert out["accuracy"] == 0.75 and out["mae"] == 0.25
    assert M.ordinal_metrics([0, 1, 2], [0, 2, 2])["qwk"] == pytest.approx(0.8)
    perfect = M.ordinal_metrics([0, 1, 2, 3], [0, 1, 2, 3])
    assert perfect["qwk"] == pytest.approx(1.0) and perfect["kendall_tau"] == pytest.approx(1.0)
    assert perfect["macro_f1"] == 1.0
    assert math.isnan(M.ordinal_metrics([1, 1], [1, 1])["kendall_tau"])


def test_timeseries_metrics_hand_values() -> None:
    y = np.array([[2.0, 4.0], [1.0, 1.0]])
    p = np.array([[1.0, 5.0], [1.0, 2.0]])
    out = M.timeseries_metrics(y, p, last_value=np.array([3.0, 0.0]))
    assert out["mae"] == pytest.approx(0.75)
    assert out["rmse"] == pytest.approx(math.sqrt(3 / 4))
    assert out["mape"] == pytest.approx((0.5 + 0.25 + 0 + 1.0) / 4)
    assert out["smape"] == pytest.approx((2 / 3 + 2 / 9 + 0 + 2 / 3) / 4)
    # signs vs last value: row0 true (-,+) pred (-,+); row1 true (+,+) pred (+,+)
    assert out["directional_accuracy"] == 1.0
    # previous-step mode: row0 true up (4-2), pred up (5-2); row1 true flat, pred up
    assert M.timeseries_metrics(y, p)["directional_accuracy"] == 0.5
    assert math.isnan(M.timeseries_metrics(y[:, :1], p[:, :1])["directional_accuracy"])


# --------------------------------------------------------------------------------------------------- spans
def test_squad_normalisation_and_scores() -> None:
    assert M.squad_normalize_answer("The  Cat!") == "cat"
    assert M.squad_normalize_answer("a, an & the apple") == "apple"
    assert M.squad_normalize_answer("Theory of  Relativity.") == "theory of relativity"
    assert M.squad_exact_match("the cat", ["Cat", "dog"]) == 1.0
    assert M.squad_f1("the black cat", ["cat"]) == pytest.approx(2 / 3)
    assert M.squad_f1("", []) == 1.0 and M.squad_exact_match("", ["", "  "]) == 1.0  # unanswerable
    assert M.squad_f1("cat", []) == 0.0 and M.squad_f1("", ["cat"]) == 0.0


def test_squad_metrics_corpus() -> None:
    preds = {"q1": "Cat", "q2": "dog"}
    refs = {"q1": ["the cat"], "q2": ["a big dog"], "q3": ["x"]}  # q3 has no prediction: scores 0
    out = M.squad_metrics(preds, refs)
    assert out["exact_match"] == pytest.approx(100 / 3)
    assert out["f1"] == pytest.approx(100 * (1 + 2 / 3) / 3)


def test_entity_metrics_seqeval() -> None:
    y_true = [["O", "O", "O", "B-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    y_pred = [["O", "O", "B-MISC", "I-MISC", "I-MISC", "I-MISC", "O"], ["B-PER", "I-PER", "O"]]
    out = M.entity_metrics(y_true, y_pred)
    assert out["f1"] == 0.5 and out["precision"] == 0.5 and out["recall"] == 0.5
    assert out["report"]["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert out["report"]["MISC"]["f1"] == 0.0
    lenient = M.entity_metrics([["B-PER", "I-PER"]], [["I-PER", "I-PER"]])
    strict = M.entity_metrics([["B-PER", "I-PER"]], [["I-PER", "I-PER"]], mode="strict", scheme="IOB2")
    assert lenient["f1"] == 1.0 and strict["f1"] == 0.0
    with pytest.raises(ConfigError):
        M.entity_metrics(y_true, y_pred, mode="strict", scheme="XYZ")


def test_span_metrics() -> None:
    true = [{(0, 2, "PER"), (5, 6, "LOC")}, set()]
    pred = [{(0, 2, "PER"), (5, 6, "ORG")}, {(1, 1, "PER")}]
    out = M.span_metrics(true, pred)
    assert out["precision"] == pytest.approx(1 / 3) and out["recall"] == 0.5
    assert out["f1"] == pytest.approx(0.4)
    assert M.span_metrics([set()], [set()]) == {"precision": 0.0, "recall": 0.0, "f1": 0.0}


def test_ranking_metrics_two_queries() -> None:
    groups = np.array(["A", "A", "A", "B", "B", "B", "C", "C"])
    labels = np.array([0, 1, 0, 1, 0, 1, 0, 0])
    scores = np.array([0.9, 0.8, 0.1, 0.2, 0.5, 0.9, 0.3, 0.4])
    out = M.ranking_metrics(groups, labels, scores, ks=(1, 10))
    # A: relevant at rank 2; B: relevant at ranks 1 and 3; C has no positive
    assert out["mrr"] == pytest.approx((0.5 + 1.0) / 2)
    assert out["map"] == pytest.approx((0.5 + (1 + 2 / 3) / 2) / 2)
    assert out["recall@1"] == pytest.approx(0.25) and out["recall@10"] == 1.0
    assert out["ndcg@1"] == pytest.approx(0.5)
    ndcg_a = 1 / math.log2(3)
    ndcg_b = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))
    assert out["ndcg@10"] == pytest.approx((ndcg_a + ndcg_b) / 2)
    assert out["num_queries"] == 3 and out["num_queries_without_positive"] == 1
    none = M.ranking_metrics([1, 1], [0, 0], [0.1, 0.2])
    assert math.isnan(none["mrr"]) and none["num_queries_without_positive"] == 1
