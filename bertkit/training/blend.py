"""Blending several cross-validation runs: weights fitted on their out-of-fold predictions, applied to their
test predictions (``bertkit blend RUN_DIR RUN_DIR ... --output DIR``).

Every run folder is a ``bertkit cv`` output with ``oof.csv`` (which carries ``y_true``), ``profile.json``
and ``test_predictions.csv`` / ``test_probabilities.csv``. Classification blends probabilities, regression
blends predictions. Methods:

* ``lsq``: constrained least squares — non-negative weights summing to 1 (SLSQP, started from NNLS);
* ``ridge``: ridge regression of the target on the runs' predictions (an intercept for regression);
* ``mean``: equal weights (e.g. several seeds on the same folds);
* ``hill``: Caruana et al.'s hill climbing — repeatedly add (with replacement) the run that most improves
  the metric on OOF; weights are the counts.

OOF metrics of the blend are in-sample for its weights (a handful of weights fitted on thousands of rows is
a small optimism); compare methods on the same footing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bertkit.errors import ConfigError, DataError
from bertkit.fileio import write_json_atomic, write_with_atomic

METHODS = ("lsq", "ridge", "hill", "mean")


def _rmse(y: np.ndarray, p: np.ndarray) -> float:
    return float(np.sqrt(np.mean((np.asarray(y, float) - np.asarray(p, float).reshape(np.shape(y))) ** 2)))


def _normalise(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), 1e-7, None)
    return p / p.sum(1, keepdims=True)


def _metric_fn(metric: str, classification: bool) -> tuple[Callable[[np.ndarray, np.ndarray], float], bool]:
    """(fn(y, blended) -> score, greater_is_better)."""
    from sklearn.metrics import accuracy_score, f1_score, log_loss, mean_absolute_error

    if not classification:
        table = {
            "rmse": (_rmse, False),
            "mae": (lambda y, p: float(mean_absolute_error(y, p.reshape(np.shape(y)))), False),
        }
    else:
        table = {
            "log_loss": (
                lambda y, p: float(log_loss(y, _normalise(p), labels=range(p.shape[1]))),
                False,
            ),
            "accuracy": (lambda y, p: float(accuracy_score(y, p.argmax(1))), True),
            "macro_f1": (
                lambda y, p: float(f1_score(y, p.argmax(1), average="macro", zero_division=0)),
                True,
            ),
        }
    if metric not in table:
        raise ConfigError(f"metric='{metric}' is not valid here; choose one of: {', '.join(table)}")
    return table[metric]


@dataclass
class BlendResult:
    """Fitted blend: ``sum_i weights[i] * X_i + intercept``."""

    method: str
    weights: list[float]
    intercept: float = 0.0
    metric: str = ""
    oof_score: float = float("nan")
    run_scores: list[float] = field(default_factory=list)


def combine(preds: Sequence[np.ndarray], weights: Sequence[float], intercept: float = 0.0) -> np.ndarray:
    """Weighted sum of the runs' predictions (same shapes)."""
    return sum(w * np.asarray(p, dtype=np.float64) for w, p in zip(weights, preds)) + intercept


def _target_matrix(y: np.ndarray, classification: bool, n_classes: int) -> np.ndarray:
    return np.eye(n_classes)[np.asarray(y).astype(int)] if classification else np.asarray(y, dtype=np.float64)


def fit_lsq(preds: Sequence[np.ndarray], target: np.ndarray) -> np.ndarray:
    """Non-negative weights summing to 1 minimising ``||sum_i w_i X_i - Y||^2``."""
    from scipy.optimize import minimize, nnls

    A = np.stack([np.asarray(p, dtype=np.float64).ravel() for p in preds], axis=1)  # [N*C, K]
    b = np.asarray(target, dtype=np.float64).ravel()
    w0, _ = nnls(A, b)
    w0 = w0 / w0.sum() if w0.sum() > 0 else np.full(A.shape[1], 1.0 / A.shape[1])
    res = minimize(
        lambda w: float(np.sum((A @ w - b) ** 2)),
        w0,
        jac=lambda w: 2 * A.T @ (A @ w - b),
        method="SLSQP",
        bounds=[(0.0, 1.0)] * A.shape[1],
        constraints=[{"type": "eq", "fun": lambda w: float(w.sum() - 1.0)}],
        options={"ftol": 1e-12},
    )
    w = np.clip(res.x, 0.0, None)
    return w / w.sum()


def fit_ridge(
    preds: Sequence[np.ndarray], target: np.ndarray, intercept: bool, alpha: float = 1.0
) -> tuple[np.ndarray, float]:
    """Ridge weights (and intercept) of the target on the runs' predictions."""
    from sklearn.linear_model import Ridge

    A = np.stack([np.asarray(p, dtype=np.float64).ravel() for p in preds], axis=1)
    model = Ridge(alpha=alpha, fit_intercept=intercept).fit(A, np.asarray(target, dtype=np.float64).ravel())
    return np.asarray(model.coef_, dtype=np.float64), float(model.intercept_) if intercept else 0.0


def fit_hill(
    preds: Sequence[np.ndarray],
    y: np.ndarray,
    score: Callable[[np.ndarray, np.ndarray], float],
    greater: bool,
    iterations: int = 100,
) -> np.ndarray:
    """Hill climbing with replacement (Caruana et al. 2004): weights are how often each run was picked."""
    sign = 1.0 if greater else -1.0
    counts = np.zeros(len(preds))
    singles = [sign * score(y, np.asarray(p, float)) for p in preds]
    counts[int(np.argmax(singles))] = 1
    best = max(singles)
    for _ in range(iterations):
        trials = [
            sign * score(y, combine(preds, (counts + np.eye(len(preds))[i]) / (counts.sum() + 1)))
            for i in range(len(preds))
        ]
        i = int(np.argmax(trials))
        if trials[i] <= best + 1e-12:
            break
        counts[i] += 1
        best = trials[i]
    return counts / counts.sum()


def fit_blend(
    preds: Sequence[np.ndarray],
    y: np.ndarray,
    method: str = "lsq",
    classification: bool = False,
    metric: str | None = None,
) -> BlendResult:
    """Fit blend weights on OOF predictions.

    Args:
        preds: one array per run: ``[N]`` predictions (regression) or ``[N, C]`` probabilities.
        y: ``[N]`` targets (class indices for classification).
        method: "lsq", "ridge", "hill" or "mean".
        classification: probabilities vs regression values.
        metric: score for ``hill`` and the report ("rmse"/"mae"; "log_loss"/"accuracy"/"macro_f1").
    """
    if method not in METHODS:
        raise ConfigError(f"blend method '{method}' is not valid; choose one of: {', '.join(METHODS)}")
    metric = metric or ("log_loss" if classification else "rmse")
    score, greater = _metric_fn(metric, classification)
    n_classes = np.asarray(preds[0]).shape[1] if classification else 1
    target = _target_matrix(y, classification, n_classes)
    intercept = 0.0
    if method == "lsq":
        w = fit_lsq(preds, target)
    elif method == "ridge":
        w, intercept = fit_ridge(preds, target, intercept=not classification)
    elif method == "mean":
        w = np.full(len(preds), 1.0 / len(preds))
    else:
        w = fit_hill(preds, y, score, greater)
    blended = combine(preds, w, intercept)
    if classification:
        blended = np.clip(blended, 1e-9, None)
        blended = blended / blended.sum(1, keepdims=True)
    return BlendResult(
        method,
        [float(v) for v in w],
        intercept,
        metric,
        score(y, blended),
        [score(y, np.asarray(p, float)) for p in preds],
    )


# ------------------------------------------------------------------------------------------------ files
def _run_arrays(
    run: Path, profile: dict[str, Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, pd.DataFrame]:
    """(OOF matrix, y, test matrix or None, test id frame) of a cv run folder."""
    oof = pd.read_csv(run / "oof.csv")
    task, names, label_cols = (
        profile["task"],
        list(profile.get("label_names") or []),
        profile["label_columns"],
    )
    if "y_true" not in oof.columns:
        raise DataError(
            f"{run / 'oof.csv'} has no y_true column; rerun `bertkit cv` with this bertkit version"
        )
    if task in ("binary", "multiclass", "ordinal"):
        cols = [f"proba_{n}" for n in names]
        y = oof["y_true"].astype(str).map({n: i for i, n in enumerate(names)}).to_numpy()
        test_file = run / "test_probabilities.csv"
    elif task == "regression" and len(label_cols) == 1:
        cols = [label_cols[0]]
        y = oof["y_true"].to_numpy(dtype=np.float64)
        test_file = run / "test_predictions.csv"
    else:
        raise ConfigError(
            f"blend supports binary, multiclass, ordinal and single-target regression runs, not {task}"
        )
    missing = [c for c in cols if c not in oof.columns]
    if missing:
        raise DataError(f"{run / 'oof.csv'} lacks columns {missing}")
    X = oof[cols].to_numpy(dtype=np.float64)
    test = pd.read_csv(test_file) if test_file.is_file() else None
    Xt = test[cols].to_numpy(dtype=np.float64) if test is not None else None
    ids = test.drop(columns=[c for c in test.columns if c in cols]) if test is not None else pd.DataFrame()
    if task not in ("binary", "multiclass", "ordinal"):
        X, Xt = X[:, 0], (Xt[:, 0] if Xt is not None else None)
    return X, y, Xt, ids


def blend_runs(
    runs: Sequence[str | Path], output_dir: str | Path, method: str = "lsq", metric: str | None = None
) -> dict[str, Any]:
    """Blend cv run folders; writes ``blend.json``, ``oof_blend.csv`` and ``submission.csv`` (when every run
    has test predictions). Returns the report."""
    if len(runs) < 2:
        raise ConfigError("blend needs at least two run folders")
    paths = [Path(r) for r in runs]
    profiles = []
    for p in paths:
        if not (p / "oof.csv").is_file() or not (p / "profile.json").is_file():
            raise DataError(f"{p} is not a `bertkit cv` run folder (needs oof.csv and profile.json)")
        profiles.append(json.loads((p / "profile.json").read_text(encoding="utf-8")))
    profile = profiles[0]
    arrays = [_run_arrays(p, prof) for p, prof in zip(paths, profiles)]
    y = arrays[0][1]
    for p, a in zip(paths, arrays):
        if len(a[1]) != len(y) or not np.array_equal(a[1], y, equal_nan=True):
            raise DataError(
                f"{p} was run on other rows or labels than {paths[0]}; blend runs of the same data"
            )
    keep = ~pd.isna(y)
    y_fit = y[keep].astype(np.float64 if profile["task"] == "regression" else np.int64)
    classification = profile["task"] != "regression"
    result = fit_blend([a[0][keep] for a in arrays], y_fit, method, classification, metric)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    blended = combine([a[0] for a in arrays], result.weights, result.intercept)
    names = list(profile.get("label_names") or [])
    label = profile["label_columns"][0]
    oof = pd.DataFrame({"y_true": pd.read_csv(paths[0] / "oof.csv")["y_true"]})
    if classification:
        blended = blended / np.clip(blended.sum(1, keepdims=True), 1e-12, None)
        oof[label] = [names[i] for i in blended.argmax(1)]
        for j, n in enumerate(names):
            oof[f"proba_{n}"] = blended[:, j]
    else:
        oof[label] = blended
    write_with_atomic(out / "oof_blend.csv", lambda f: oof.to_csv(f, index=False))
    report: dict[str, Any] = {
        "runs": [str(p) for p in paths],
        "method": result.method,
        "weights": result.weights,
        "intercept": result.intercept,
        "metric": result.metric,
        "oof_score": result.oof_score,
        "run_scores": result.run_scores,
    }
    if all(a[2] is not None for a in arrays):
        test = combine([a[2] for a in arrays], result.weights, result.intercept)
        sub = arrays[0][3].copy()
        if classification:
            test = test / np.clip(test.sum(1, keepdims=True), 1e-12, None)
            sub[label] = [names[i] for i in test.argmax(1)]
            probs = sub.copy()
            for j, n in enumerate(names):
                probs[f"proba_{n}"] = test[:, j]
            write_with_atomic(out / "submission_probabilities.csv", lambda f: probs.to_csv(f, index=False))
        else:
            sub[label] = test
        write_with_atomic(out / "submission.csv", lambda f: sub.to_csv(f, index=False))
        report["submission"] = str(out / "submission.csv")
    write_json_atomic(out / "blend.json", report)
    return report
