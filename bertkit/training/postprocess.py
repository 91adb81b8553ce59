"""Post-processing fitted on out-of-fold (or validation) outputs, saved with the run, applied by ``predict``.

* binary: the decision threshold on P(positive) that maximises F1;
* multilabel: one threshold per label maximising that label's F1;
* ordinal: cut-points on the expected class ``sum_k k * p_k`` that maximise quadratic weighted kappa;
* regression: clipping of predictions to the range of the targets.

Fold safety: the OOF metrics after post-processing are **cross-fitted** — the parameters applied to fold k's
rows are fitted on the other folds' OOF rows only, so no fold's validation rows fit anything applied to
that same fold. The parameters fitted on all OOF rows are the ones saved for test data (``postprocess.json``
in the run folder and in each ``fold_k/model``). Switch: ``training.postprocess: true``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bertkit import metrics as M
from bertkit.fileio import write_json_atomic

POSTPROCESS_FILE = "postprocess.json"
FitFn = Callable[[str, dict[str, np.ndarray], np.ndarray], dict[str, Any]]


def expected_class(proba: np.ndarray) -> np.ndarray:
    """``sum_k k * p_k`` per row ``[N]``."""
    return np.asarray(proba, dtype=np.float64) @ np.arange(proba.shape[1], dtype=np.float64)


def fit_cutpoints(
    score: np.ndarray, y: np.ndarray, num_classes: int, sweeps: int = 3, grid: int = 40
) -> list[float]:
    """Increasing cut-points on a continuous score maximising QWK (coordinate search, starts at k + 0.5)."""
    y = np.asarray(y).astype(int)
    cuts = np.arange(num_classes - 1, dtype=np.float64) + 0.5

    def qwk(c: np.ndarray) -> float:
        v = M.ordinal_metrics(y, np.digitize(score, c), num_classes)["qwk"]
        return -1.0 if np.isnan(v) else v

    best = qwk(cuts)
    for _ in range(sweeps):
        for j in range(len(cuts)):
            lo = cuts[j - 1] if j > 0 else min(score.min(), cuts[j]) - 0.5
            hi = cuts[j + 1] if j + 1 < len(cuts) else max(score.max(), cuts[j]) + 0.5
            for c in np.linspace(lo, hi, grid + 2)[1:-1]:
                trial = cuts.copy()
                trial[j] = c
                value = qwk(trial)
                if value > best + 1e-12:
                    best, cuts = value, trial
    return [float(c) for c in cuts]


def fit_postprocess(task: str, outputs: dict[str, np.ndarray], targets: np.ndarray) -> dict[str, Any]:
    """Fit the task's post-processing on (OOF) outputs and targets; ``{}`` when the task has none."""
    targets = np.asarray(targets)
    if task == "binary" and "probabilities" in outputs:
        return {
            "kind": "binary_threshold",
            "threshold": M.best_binary_threshold(targets.astype(int), outputs["probabilities"][:, 1], "f1"),
        }
    if task == "multilabel" and "probabilities" in outputs:
        return {
            "kind": "label_thresholds",
            "thresholds": [float(t) for t in M.tune_thresholds(targets, outputs["probabilities"])],
        }
    if task == "ordinal" and "probabilities" in outputs:
        proba = outputs["probabilities"]
        return {
            "kind": "ordinal_cutpoints",
            "cutpoints": fit_cutpoints(expected_class(proba), targets, proba.shape[1]),
        }
    if task == "regression" and "predictions" in outputs:
        t = targets.astype(np.float64).reshape(len(targets), -1)
        return {"kind": "clip", "low": t.min(0).tolist(), "high": t.max(0).tolist()}
    return {}


def apply_postprocess(params: dict[str, Any] | None, outputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A copy of ``outputs`` whose ``predictions`` follow the fitted post-processing."""
    if not params:
        return outputs
    out = dict(outputs)
    kind = params["kind"]
    if kind == "binary_threshold":
        out["predictions"] = (outputs["probabilities"][:, 1] >= params["threshold"]).astype(np.int64)
    elif kind == "label_thresholds":
        out["predictions"] = (outputs["probabilities"] >= np.asarray(params["thresholds"])).astype(np.int64)
    elif kind == "ordinal_cutpoints":
        out["predictions"] = np.digitize(
            expected_class(outputs["probabilities"]), params["cutpoints"]
        ).astype(np.int64)
    elif kind == "clip":
        pred = np.asarray(outputs["predictions"], dtype=np.float64)
        low, high = np.asarray(params["low"]), np.asarray(params["high"])
        shaped = pred.reshape(len(pred), -1)
        out["predictions"] = (
            np.clip(shaped, low, high).reshape(pred.shape).astype(outputs["predictions"].dtype)
        )
    return out


def apply_to_model(model: Any, params: dict[str, Any] | None) -> None:
    """Put thresholds into the head's buffers so the head's own predictions and metrics use them."""
    if not params:
        return
    head = model.head
    if params["kind"] == "binary_threshold" and hasattr(head, "threshold"):
        head.threshold.fill_(float(params["threshold"]))
    elif (
        params["kind"] == "label_thresholds"
        and hasattr(head, "thresholds")
        and torch.is_tensor(head.thresholds)
    ):
        head.thresholds.copy_(torch.as_tensor(params["thresholds"], dtype=head.thresholds.dtype))


def crossfit_postprocess(
    task: str,
    outputs: dict[str, np.ndarray],
    targets: np.ndarray,
    folds: np.ndarray,
    fit_fn: FitFn = fit_postprocess,
) -> tuple[dict[str, np.ndarray], list[dict[str, Any]]]:
    """Post-processed OOF outputs where fold k's rows use parameters fitted on the other folds' rows only.

    Args:
        task: the head's task.
        outputs: OOF outputs (row-aligned with ``targets`` and ``folds``).
        targets: OOF targets.
        folds: fold index of every row.
        fit_fn: the fitting function (``fit_postprocess``; injectable for tests).

    Returns:
        (post-processed outputs, the parameters used for each fold).
    """
    folds = np.asarray(folds)
    result = {k: np.array(v, copy=True) for k, v in outputs.items()}
    per_fold: list[dict[str, Any]] = []
    for k in np.unique(folds):
        fit_rows, apply_rows = folds != k, folds == k
        params = fit_fn(task, {n: v[fit_rows] for n, v in outputs.items()}, np.asarray(targets)[fit_rows])
        per_fold.append(params)
        applied = apply_postprocess(params, {n: v[apply_rows] for n, v in outputs.items()})
        if "predictions" in applied:
            result["predictions"][apply_rows] = applied["predictions"]
    return result, per_fold


def prediction_metrics(task: str, outputs: dict[str, np.ndarray], targets: np.ndarray) -> dict[str, float]:
    """Metrics from the ``predictions`` themselves (heads recompute binary/multilabel predictions)."""
    from sklearn.metrics import accuracy_score, f1_score

    y, pred = np.asarray(targets), np.asarray(outputs["predictions"])
    if task == "binary":
        return {
            "f1": float(f1_score(y.astype(int), pred, zero_division=0)),
            "accuracy": float(accuracy_score(y, pred)),
        }
    if task == "multilabel":
        y = y.astype(int)
        return {
            "micro_f1": float(f1_score(y, pred, average="micro", zero_division=0)),
            "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0)),
        }
    if task == "ordinal":
        return M.ordinal_metrics(y.astype(int), pred.astype(int), outputs["probabilities"].shape[1])
    if task == "regression":
        return M.regression_metrics(y, pred.reshape(np.shape(y)))
    return {}


def save_postprocess(folder: str | Path, params: dict[str, Any]) -> Path:
    """Write ``folder/postprocess.json``."""
    path = Path(folder) / POSTPROCESS_FILE
    write_json_atomic(path, params)
    return path


def load_postprocess(folder: str | Path) -> dict[str, Any] | None:
    """Read ``postprocess.json`` from a model folder; None when absent."""
    path = Path(folder) / POSTPROCESS_FILE
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8")) or None
    return None


def postprocess_cv(
    out_dir: Path,
    model: Any,
    merged: dict[str, np.ndarray],
    targets: np.ndarray,
    folds: np.ndarray,
    num_folds: int,
    write: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, Any], dict[str, Any]]:
    """The cross-validation step: cross-fitted OOF outputs, metrics before/after, and the all-OOF parameters
    saved in ``out_dir`` and each ``fold_k/model`` (when ``write``: rank 0 only under DDP).
    Returns (OOF outputs, report, all-OOF parameters)."""
    task = model.head.task
    params = fit_postprocess(task, merged, targets)
    if not params:
        return merged, {}, {}
    crossfit, per_fold = crossfit_postprocess(task, merged, targets, folds)
    report = {
        "params": params,
        "per_fold_params": per_fold,
        "oof_before": prediction_metrics(task, merged, targets),
        "oof_after": prediction_metrics(task, crossfit, targets),
    }
    if not write:
        return crossfit, report, params
    save_postprocess(out_dir, params)
    for k in range(num_folds):
        if (out_dir / f"fold_{k}" / "model").is_dir():
            save_postprocess(out_dir / f"fold_{k}" / "model", params)
    return crossfit, report, params


def fit_run_postprocess(model_dir: Path, model: Any, trainer: Any, valid_dataset: Any) -> dict[str, Any]:
    """``train`` (one split): fit on the validation outputs, save next to the model, set the head's buffers.

    The validation metrics after this are optimistic (fitted on those rows); test metrics are not.
    """
    if valid_dataset is None or valid_dataset.targets is None:
        return {}
    outputs = trainer.predict(valid_dataset)
    outputs.pop("loss", None)
    params = fit_postprocess(model.head.task, outputs, np.asarray(valid_dataset.targets))
    if params:
        apply_to_model(model, params)
        if model_dir.is_dir():
            save_postprocess(model_dir, params)
    return params
