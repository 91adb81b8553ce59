"""Evaluation metrics: thin, exact wrappers over scikit-learn, scipy and seqeval.

Every function takes numpy arrays (or array-likes) and returns plain Python floats, mostly as a
``dict[str, float]``. A metric that is undefined for the given data (ROC-AUC with one class, a
correlation with a constant side, ...) is ``nan``; it never raises. Shapes are noted as ``[N]``
(examples), ``[N, C]`` (classes), ``[N, L]`` (labels), ``[N, K]`` (regression targets) and ``[N, H]``
(forecast horizon).

Span-level metrics (SQuAD, NER, span extraction, ranking) live in :mod:`bertkit._metrics_spans` and are
re-exported here, so ``bertkit.metrics`` is the single import point.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import stats
from sklearn import metrics as skm

from bertkit._metrics_spans import (
    entity_metrics,
    ranking_metrics,
    span_metrics,
    squad_exact_match,
    squad_f1,
    squad_metrics,
    squad_normalize_answer,
)
from bertkit.errors import ConfigError, DataError

__all__ = [
    "best_binary_threshold",
    "binary_metrics",
    "entity_metrics",
    "expected_calibration_error",
    "macro_f1_excluding",
    "multiclass_metrics",
    "multilabel_metrics",
    "ordinal_metrics",
    "ranking_metrics",
    "regression_metrics",
    "reliability_curve",
    "span_metrics",
    "squad_exact_match",
    "squad_f1",
    "squad_metrics",
    "squad_normalize_answer",
    "timeseries_metrics",
    "tune_thresholds",
]

DEFAULT_THRESHOLD_GRID = np.arange(0.05, 0.951, 0.01)
NAN = float("nan")


# ----------------------------------------------------------------------------------------------- helpers
def _f(x: float | np.floating) -> float:
    """Cast a numpy scalar to a plain Python float."""
    return float(x)


def _same_len(name_a: str, a: np.ndarray, name_b: str, b: np.ndarray) -> None:
    if a.shape[0] != b.shape[0]:
        raise DataError(
            f"{name_a} has {a.shape[0]} rows but {name_b} has {b.shape[0]}; pass arrays of the same length."
        )


def _check_proba_rows(proba: np.ndarray) -> np.ndarray:
    """Return ``proba`` [N, C] as float64 with rows renormalised; raise if rows are clearly not probabilities."""
    proba = np.asarray(proba, dtype=np.float64)
    sums = proba.sum(axis=1)
    if np.any(np.abs(sums - 1.0) > 1e-3) or np.any(proba < 0):
        raise DataError("proba rows must be probabilities summing to 1; apply softmax to the logits first.")
    return proba / sums[:, None]  # removes float32 rounding so sklearn sees exact probabilities


def _labels_to_1d_int(y: np.ndarray, name: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1:
        raise DataError(f"{name} must be 1-D [N], got shape {y.shape}; flatten it or pass class indices.")
    return y.astype(np.int64)


def _bin_stats(
    y_true: np.ndarray, prob_pos: np.ndarray, n_bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equal-width binning on [0, 1]: per-bin mean confidence, fraction positive, count (each [n_bins])."""
    if n_bins < 1:
        raise ConfigError(f"n_bins must be >= 1, got {n_bins}; use e.g. n_bins=15.")
    y_true = np.asarray(y_true, dtype=np.float64).ravel()  # [N]
    prob_pos = np.asarray(prob_pos, dtype=np.float64).ravel()  # [N]
    _same_len("y_true", y_true, "prob_pos", prob_pos)
    # bin i holds (i/n, (i+1)/n]; bin 0 also holds 0.0, so p=1.0 lands in the last bin
    idx = np.clip(np.ceil(prob_pos * n_bins).astype(np.int64) - 1, 0, n_bins - 1)  # [N]
    count = np.bincount(idx, minlength=n_bins).astype(np.int64)  # [n_bins]
    conf_sum = np.bincount(idx, weights=prob_pos, minlength=n_bins)
    pos_sum = np.bincount(idx, weights=y_true, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        conf = np.where(count > 0, conf_sum / np.maximum(count, 1), np.nan)
        acc = np.where(count > 0, pos_sum / np.maximum(count, 1), np.nan)
    return conf, acc, count


# ------------------------------------------------------------------------------------------ calibration
def expected_calibration_error(y_true: np.ndarray, prob_pos: np.ndarray, n_bins: int = 15) -> float:
    """Expected calibration error of positive-class probabilities.

    Bins are ``n_bins`` equal-width intervals of [0, 1]. Per bin, the mean predicted probability is
    compared with the observed fraction of positives; ECE is the count-weighted mean absolute gap.

    Args:
        y_true: [N] 0/1 labels.
        prob_pos: [N] predicted probability of the positive class.
        n_bins: Number of equal-width bins.

    Returns:
        ECE in [0, 1]; ``nan`` for empty input.
    """
    conf, acc, count = _bin_stats(y_true, prob_pos, n_bins)
    total = count.sum()
    if total == 0:
        return NAN
    nonempty = count > 0
    return _f(np.sum(count[nonempty] * np.abs(conf[nonempty] - acc[nonempty])) / total)


def reliability_curve(
    y_true: np.ndarray, prob_pos: np.ndarray, n_bins: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Reliability-diagram data over ``n_bins`` equal-width bins of [0, 1].

    Args:
        y_true: [N] 0/1 labels.
        prob_pos: [N] predicted probability of the positive class.
        n_bins: Number of bins.

    Returns:
        ``(bin_confidence, bin_accuracy, bin_count)``, each [n_bins]: mean predicted probability, observed
        fraction of positives (``nan`` for empty bins, which matplotlib skips) and number of examples.
    """
    return _bin_stats(y_true, prob_pos, n_bins)


# ---------------------------------------------------------------------------------------- classification
def binary_metrics(y_true: np.ndarray, prob_pos: np.ndarray, threshold: float = 0.5) -> dict[str, float]:
    """Binary classification metrics from positive-class probabilities.

    Args:
        y_true: [N] 0/1 labels.
        prob_pos: [N] predicted probability of class 1; predicted label is ``prob_pos >= threshold``.
        threshold: Decision threshold.

    Returns:
        ``accuracy, precision, recall, f1`` (zero_division=0), ``roc_auc`` (``nan`` with one class),
        ``log_loss`` and ``ece`` (15 bins).
    """
    y_true = np.asarray(y_true).astype(np.int64).ravel()  # [N]
    prob_pos = np.asarray(prob_pos, dtype=np.float64).ravel()  # [N]
    _same_len("y_true", y_true, "prob_pos", prob_pos)
    if y_true.size == 0:
        return {k: NAN for k in ("accuracy", "precision", "recall", "f1", "roc_auc", "log_loss", "ece")}
    y_pred = (prob_pos >= threshold).astype(np.int64)
    out = {
        "accuracy": _f(skm.accuracy_score(y_true, y_pred)),
        "precision": _f(skm.precision_score(y_true, y_pred, labels=[0, 1], zero_division=0)),
        "recall": _f(skm.recall_score(y_true, y_pred, labels=[0, 1], zero_division=0)),
        "f1": _f(skm.f1_score(y_true, y_pred, labels=[0, 1], zero_division=0)),
    }
    out["roc_auc"] = _f(skm.roc_auc_score(y_true, prob_pos)) if np.unique(y_true).size == 2 else NAN
    out["log_loss"] = _f(skm.log_loss(y_true, prob_pos, labels=[0, 1]))
    out["ece"] = expected_calibration_error(y_true, prob_pos, n_bins=15)
    return out


def multiclass_metrics(
    y_true: np.ndarray, proba: np.ndarray, label_names: Sequence[str] | None = None
) -> dict[str, float]:
    """Single-label multiclass metrics from class probabilities.

    Args:
        y_true: [N] int class indices in ``[0, C)``.
        proba: [N, C] class probabilities (rows sum to 1).
        label_names: Optional C names; when given, per-class F1 is added as ``f1_<name>``.

    Returns:
        ``accuracy, macro_f1, weighted_f1, log_loss`` over all C classes (absent classes count in the
        macro average with F1 0), and ``top3_accuracy`` / ``top5_accuracy`` when C > 3 / C > 5.
    """
    y_true = _labels_to_1d_int(y_true, "y_true")  # [N]
    proba = _check_proba_rows(proba)  # [N, C]
    _same_len("y_true", y_true, "proba", proba)
    n_classes = proba.shape[1]
    if label_names is not None and len(label_names) != n_classes:
        raise ConfigError(
            f"label_names has {len(label_names)} names for {n_classes} classes; pass one per class."
        )
    labels = list(range(n_classes))
    y_pred = proba.argmax(axis=1)  # [N]
    out = {
        "accuracy": _f(skm.accuracy_score(y_true, y_pred)),
        "macro_f1": _f(skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": _f(skm.f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "log_loss": _f(skm.log_loss(y_true, proba, labels=labels)),
    }
    for k in (3, 5):
        if n_classes > k:
            out[f"top{k}_accuracy"] = _f(skm.top_k_accuracy_score(y_true, proba, k=k, labels=labels))
    if label_names is not None:
        per_class = skm.f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
        for name, value in zip(label_names, per_class):
            out[f"f1_{name}"] = _f(value)
    return out


def _thresholds_vector(thresholds: float | np.ndarray, n_labels: int) -> np.ndarray:
    thr = np.asarray(thresholds, dtype=np.float64)
    if thr.ndim == 0:
        return np.full(n_labels, float(thr))
    if thr.shape != (n_labels,):
        raise ConfigError(
            f"thresholds has shape {thr.shape}; pass a float or one threshold per label ({n_labels})."
        )
    return thr


def multilabel_metrics(
    y_true: np.ndarray,
    proba: np.ndarray,
    thresholds: float | np.ndarray = 0.5,
    label_names: Sequence[str] | None = None,
) -> dict[str, float]:
    """Multi-label metrics; a label is predicted when ``proba >= threshold`` for that label.

    Args:
        y_true: [N, L] 0/1 indicator matrix.
        proba: [N, L] independent per-label probabilities.
        thresholds: One float, or [L] per-label thresholds (see :func:`tune_thresholds`).
        label_names: Optional L names used in ``accuracy_<name>``; default ``label_0, label_1, ...``.

    Returns:
        ``subset_accuracy, hamming_loss, micro_f1, macro_f1, micro_precision, micro_recall``,
        ``accuracy_<name>`` per label and ``mean_label_accuracy`` (= 1 - hamming_loss).
    """
    y_true = np.asarray(y_true).astype(np.int64)  # [N, L]
    proba = np.asarray(proba, dtype=np.float64)  # [N, L]
    if y_true.ndim != 2 or proba.shape != y_true.shape:
        raise DataError(
            f"y_true {y_true.shape} and proba {proba.shape} must both be [N, L]; pass 2-D arrays."
        )
    n_labels = y_true.shape[1]
    names = list(label_names) if label_names is not None else [f"label_{j}" for j in range(n_labels)]
    if len(names) != n_labels:
        raise ConfigError(f"label_names has {len(names)} names for {n_labels} labels; pass one per label.")
    y_pred = (proba >= _thresholds_vector(thresholds, n_labels)[None, :]).astype(np.int64)  # [N, L]
    out = {
        "subset_accuracy": _f(skm.accuracy_score(y_true, y_pred)),
        "hamming_loss": _f(skm.hamming_loss(y_true, y_pred)),
        "micro_f1": _f(skm.f1_score(y_true, y_pred, average="micro", zero_division=0)),
        "macro_f1": _f(skm.f1_score(y_true, y_pred, average="macro", zero_division=0)),
        "micro_precision": _f(skm.precision_score(y_true, y_pred, average="micro", zero_division=0)),
        "micro_recall": _f(skm.recall_score(y_true, y_pred, average="micro", zero_division=0)),
    }
    per_label = (y_true == y_pred).mean(axis=0) if y_true.shape[0] else np.full(n_labels, np.nan)  # [L]
    for name, acc in zip(names, per_label):
        out[f"accuracy_{name}"] = _f(acc)
    out["mean_label_accuracy"] = _f(per_label.mean()) if n_labels else NAN
    return out


# ------------------------------------------------------------------------------------------- thresholds
def _f1_over_grid(y_true: np.ndarray, prob: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """F1 (zero_division=0) of ``prob >= t`` for each t in grid; y_true/prob [N], returns [G]."""
    pred = prob[:, None] >= grid[None, :]  # [N, G]
    pos = y_true[:, None].astype(bool)  # [N, 1]
    tp = np.sum(pred & pos, axis=0)
    fp = np.sum(pred & ~pos, axis=0)
    fn = np.sum(~pred & pos, axis=0)
    denom = 2 * tp + fp + fn
    return np.where(denom > 0, 2 * tp / np.maximum(denom, 1), 0.0)


def tune_thresholds(y_true: np.ndarray, proba: np.ndarray, grid: np.ndarray | None = None) -> np.ndarray:
    """Per-label decision thresholds that maximise each label's own F1 on the given data.

    Args:
        y_true: [N, L] 0/1 indicator matrix.
        proba: [N, L] per-label probabilities.
        grid: Candidate thresholds; default ``np.arange(0.05, 0.951, 0.01)``. Ties pick the smallest.

    Returns:
        [L] float thresholds; labels without any positive keep 0.5.
    """
    y_true = np.asarray(y_true).astype(np.int64)
    proba = np.asarray(proba, dtype=np.float64)
    if y_true.ndim == 1:
        y_true, proba = y_true[:, None], proba.reshape(-1, 1)
    if proba.shape != y_true.shape:
        raise DataError(
            f"y_true {y_true.shape} and proba {proba.shape} must both be [N, L]; pass same shapes."
        )
    grid = DEFAULT_THRESHOLD_GRID if grid is None else np.asarray(grid, dtype=np.float64).ravel()
    out = np.full(y_true.shape[1], 0.5)
    for j in range(y_true.shape[1]):
        if y_true[:, j].sum() == 0:
            continue
        out[j] = grid[int(np.argmax(_f1_over_grid(y_true[:, j], proba[:, j], grid)))]
    return out


_BINARY_THRESHOLD_METRICS = {
    "f1": lambda t, p: skm.f1_score(t, p, labels=[0, 1], zero_division=0),
    "accuracy": skm.accuracy_score,
    "balanced_accuracy": skm.balanced_accuracy_score,
    "mcc": skm.matthews_corrcoef,
}


def best_binary_threshold(
    y_true: np.ndarray, prob: np.ndarray, metric: str = "f1", grid: np.ndarray | None = None
) -> float:
    """Decision threshold maximising a binary metric over a grid.

    Args:
        y_true: [N] 0/1 labels.
        prob: [N] positive-class probabilities; predicted label is ``prob >= threshold``.
        metric: ``"f1"``, ``"accuracy"``, ``"balanced_accuracy"`` or ``"mcc"``.
        grid: Candidate thresholds; default ``np.arange(0.05, 0.951, 0.01)``. Ties pick the smallest.

    Returns:
        The best threshold; 0.5 when ``y_true`` has no positive.
    """
    if metric not in _BINARY_THRESHOLD_METRICS:
        raise ConfigError(f"unknown metric {metric!r}; use one of {sorted(_BINARY_THRESHOLD_METRICS)}.")
    y_true = np.asarray(y_true).astype(np.int64).ravel()
    prob = np.asarray(prob, dtype=np.float64).ravel()
    _same_len("y_true", y_true, "prob", prob)
    if y_true.sum() == 0:
        return 0.5
    grid = DEFAULT_THRESHOLD_GRID if grid is None else np.asarray(grid, dtype=np.float64).ravel()
    if metric == "f1":
        scores = _f1_over_grid(y_true, prob, grid)
    else:
        fn = _BINARY_THRESHOLD_METRICS[metric]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scores = np.array([fn(y_true, (prob >= t).astype(np.int64)) for t in grid])
    return _f(grid[int(np.argmax(scores))])


def macro_f1_excluding(y_true: np.ndarray, y_pred: np.ndarray, exclude_labels: Sequence[int]) -> float:
    """Macro-F1 over every label seen in ``y_true`` or ``y_pred`` except ``exclude_labels``.

    Used for relation extraction, where the "Other" / no-relation class is left out of the average
    (predictions of "Other" still count as misses for the true class).

    Args:
        y_true: [N] int labels.
        y_pred: [N] int labels.
        exclude_labels: Labels left out of the average.

    Returns:
        Macro-F1 (zero_division=0); ``nan`` when no label remains.
    """
    y_true = _labels_to_1d_int(y_true, "y_true")
    y_pred = _labels_to_1d_int(y_pred, "y_pred")
    _same_len("y_true", y_true, "y_pred", y_pred)
    excluded = {int(x) for x in exclude_labels}
    labels = [int(x) for x in np.union1d(y_true, y_pred) if int(x) not in excluded]
    if not labels:
        return NAN
    return _f(skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0))


# -------------------------------------------------------------------------------------------- regression
def _corr(fn: Callable[..., Any], a: np.ndarray, b: np.ndarray) -> float:
    """Correlation statistic, ``nan`` when fewer than 2 points or either side is constant."""
    if a.size < 2 or np.all(a == a[0]) or np.all(b == b[0]):
        return NAN
    return _f(fn(a, b)[0])


def _nanmean(values: list[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return float(np.mean(finite)) if finite else NAN


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Regression metrics for one target [N] or K targets [N, K].

    Args:
        y_true: [N] or [N, K] targets.
        y_pred: Same shape as ``y_true``.

    Returns:
        ``mse, rmse, mae, r2`` (sklearn, uniform average over targets; rmse is the mean of per-target
        RMSEs), ``pearson, spearman`` (mean over targets whose correlation is defined; ``nan`` when a side
        is constant). For K > 1, also per-target ``rmse_<i>``. ``r2`` is ``nan`` for a constant target.
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape or y_true.ndim not in (1, 2):
        raise DataError(f"y_true {y_true.shape} and y_pred {y_pred.shape} must share a [N] or [N, K] shape.")
    y_t = y_true.reshape(y_true.shape[0], -1)  # [N, K]
    y_p = y_pred.reshape(y_pred.shape[0], -1)  # [N, K]
    n_targets = y_t.shape[1]
    if y_t.shape[0] == 0:
        return {k: NAN for k in ("mse", "rmse", "mae", "r2", "pearson", "spearman")}
    per_rmse = np.sqrt(skm.mean_squared_error(y_t, y_p, multioutput="raw_values"))  # [K]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # r2 with a single sample warns and returns nan
        r2 = [_f(skm.r2_score(y_t[:, k], y_p[:, k], force_finite=False)) for k in range(n_targets)]
    out = {
        "mse": _f(skm.mean_squared_error(y_t, y_p)),
        "rmse": _f(np.mean(per_rmse)),
        "mae": _f(skm.mean_absolute_error(y_t, y_p)),
        "r2": _nanmean(r2),
        "pearson": _nanmean([_corr(stats.pearsonr, y_t[:, k], y_p[:, k]) for k in range(n_targets)]),
        "spearman": _nanmean([_corr(stats.spearmanr, y_t[:, k], y_p[:, k]) for k in range(n_targets)]),
    }
    if n_targets > 1:
        for k, value in enumerate(per_rmse):
            out[f"rmse_{k}"] = _f(value)
    return out


def ordinal_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, num_classes: int | None = None
) -> dict[str, float]:
    """Metrics for ordinal labels (ratings, grades).

    Args:
        y_true: [N] int labels.
        y_pred: [N] int predicted labels.
        num_classes: If given, QWK and macro-F1 use labels ``range(num_classes)``; otherwise the labels seen.

    Returns:
        ``accuracy, mae, kendall_tau`` (tau-b; ``nan`` if a side is constant), ``qwk`` (quadratic weighted
        Cohen's kappa; ``nan`` when undefined) and ``macro_f1`` (zero_division=0).
    """
    y_true = _labels_to_1d_int(y_true, "y_true")
    y_pred = _labels_to_1d_int(y_pred, "y_pred")
    _same_len("y_true", y_true, "y_pred", y_pred)
    if y_true.size == 0:
        return {k: NAN for k in ("accuracy", "mae", "kendall_tau", "qwk", "macro_f1")}
    labels = list(range(num_classes)) if num_classes is not None else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # undefined kappa warns and returns nan
        qwk = _f(skm.cohen_kappa_score(y_true, y_pred, labels=labels, weights="quadratic"))
    return {
        "accuracy": _f(skm.accuracy_score(y_true, y_pred)),
        "mae": _f(skm.mean_absolute_error(y_true, y_pred)),
        "kendall_tau": _corr(stats.kendalltau, y_true.astype(np.float64), y_pred.astype(np.float64)),
        "qwk": qwk,
        "macro_f1": _f(skm.f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
    }


def timeseries_metrics(
    y_true: np.ndarray, y_pred: np.ndarray, last_value: np.ndarray | None = None
) -> dict[str, float]:
    """Forecast metrics over all N x H predicted points.

    Args:
        y_true: [N, H] (or [N] for H=1) actual future values.
        y_pred: Same shape, forecasts.
        last_value: Optional [N] last observed value before the horizon (the forecast origin).

    Returns:
        ``mape`` (sklearn, a fraction, not %), ``smape`` (mean of 2|y-p|/(|y|+|p|), 0 where both are 0;
        range [0, 2]), ``rmse``, ``mae`` and ``directional_accuracy``: with ``last_value``, the share of
        points where sign(y - last_value) == sign(p - last_value); without it and H > 1, the share of steps
        h >= 1 where sign(y[h] - y[h-1]) == sign(p[h] - y[h-1]) (mean directional accuracy); else ``nan``.
    """
    y_true = np.asarray(y_true, dtype=np.float64)
    y_pred = np.asarray(y_pred, dtype=np.float64)
    if y_true.shape != y_pred.shape or y_true.ndim not in (1, 2):
        raise DataError(f"y_true {y_true.shape} and y_pred {y_pred.shape} must share a [N, H] shape.")
    y_t = y_true.reshape(y_true.shape[0], -1)  # [N, H]
    y_p = y_pred.reshape(y_pred.shape[0], -1)  # [N, H]
    if y_t.size == 0:
        return {k: NAN for k in ("mape", "smape", "rmse", "mae", "directional_accuracy")}
    flat_t, flat_p = y_t.ravel(), y_p.ravel()  # [N*H]
    denom = np.abs(flat_t) + np.abs(flat_p)
    smape = np.where(denom > 0, 2.0 * np.abs(flat_t - flat_p) / np.where(denom > 0, denom, 1.0), 0.0)
    if last_value is not None:
        ref = np.asarray(last_value, dtype=np.float64).reshape(-1, 1)  # [N, 1]
        _same_len("y_true", y_t, "last_value", ref)
        direction = np.mean(np.sign(y_t - ref) == np.sign(y_p - ref))
    elif y_t.shape[1] > 1:
        prev = y_t[:, :-1]  # [N, H-1]
        direction = np.mean(np.sign(y_t[:, 1:] - prev) == np.sign(y_p[:, 1:] - prev))
    else:
        direction = NAN
    return {
        "mape": _f(skm.mean_absolute_percentage_error(flat_t, flat_p)),
        "smape": _f(np.mean(smape)),
        "rmse": _f(np.sqrt(skm.mean_squared_error(flat_t, flat_p))),
        "mae": _f(skm.mean_absolute_error(flat_t, flat_p)),
        "directional_accuracy": _f(direction),
    }
