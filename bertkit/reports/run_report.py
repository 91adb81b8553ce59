"""The report of a run: the plots that fit its task, then the HTML page."""

import logging
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bertkit.reports.html import write_html_report
from bertkit.reports.plots import (
    _TASK_ALIASES,
    PathLike,
    _as_1d,
    plot_confusion_matrix,
    plot_history,
    plot_per_label_bars,
    plot_regression_scatter,
    plot_reliability_diagram,
)

logger = logging.getLogger(__name__)


# task names and head registry names (bertkit.config.HeadType values) → plot family
def _normalise_task(task: Any) -> str:
    key = str(getattr(task, "value", task)).lower()
    return _TASK_ALIASES.get(key, key)


def _hard_predictions(kind: str, y_pred: Any, proba: Any) -> np.ndarray:
    """``y_pred`` if given, else predictions derived from ``proba`` (0.5 threshold / argmax)."""
    if y_pred is not None:
        return np.asarray(y_pred)
    p = np.asarray(proba, dtype=float)
    if kind == "binary":
        p = p[:, 1] if p.ndim == 2 and p.shape[1] == 2 else _as_1d(p, "proba")
    if kind in ("binary", "multilabel"):
        return (p >= 0.5).astype(int)
    if p.ndim != 2:
        raise ValueError(f"{kind} proba must be [N, C], got shape {p.shape}")
    return p.argmax(axis=1)


def _multilabel_f1(y_true: Any, y_pred: Any) -> np.ndarray:
    t, p = np.asarray(y_true).astype(bool), np.asarray(y_pred).astype(bool)
    if t.ndim != 2 or t.shape != p.shape:
        raise ValueError(f"multilabel y_true/y_pred must be [N, L] of one shape, got {t.shape} and {p.shape}")
    tp = (t & p).sum(0)
    denom = 2 * tp + (~t & p).sum(0) + (t & ~p).sum(0)
    return np.divide(2.0 * tp, denom, out=np.zeros(t.shape[1]), where=denom > 0)


# Task plots: (name, fn(kind, plots_dir, y_true, y_pred, proba, label_names) -> Path | None); None = skipped.
_Job = Callable[..., "Path | None"]


def _confusion_job(kind: str, plots: Path, y_true: Any, y_pred: Any, proba: Any, names: Any) -> Path | None:
    if y_pred is None and proba is None:
        return None
    names = ["0", "1"] if names is None and kind == "binary" else names
    pred = _hard_predictions(kind, y_pred, proba)
    return plot_confusion_matrix(y_true, pred, names, plots / "confusion_matrix.png")


def _reliability_job(kind: str, plots: Path, y_true: Any, y_pred: Any, proba: Any, names: Any) -> Path | None:
    return (
        None if proba is None else plot_reliability_diagram(y_true, proba, plots / "reliability_diagram.png")
    )


def _per_label_job(kind: str, plots: Path, y_true: Any, y_pred: Any, proba: Any, names: Any) -> Path | None:
    if y_pred is None and proba is None:
        return None
    f1 = _multilabel_f1(y_true, _hard_predictions(kind, y_pred, proba))
    names = list(names) if names is not None else [f"label_{i}" for i in range(len(f1))]
    return plot_per_label_bars(names, f1, plots / "per_label_f1.png", "Per-label F1")


def _scatter_job(kind: str, plots: Path, y_true: Any, y_pred: Any, proba: Any, names: Any) -> Path | None:
    if y_pred is None:
        return None
    t, p = np.asarray(y_true, dtype=float), np.asarray(y_pred, dtype=float)
    t, p = (t[:, 0] if t.ndim == 2 else t), (p[:, 0] if p.ndim == 2 else p)
    return plot_regression_scatter(t, p, plots / "regression_scatter.png")


_TASK_PLOTS: dict[str, list[tuple[str, _Job]]] = {
    "binary": [("confusion matrix", _confusion_job), ("reliability diagram", _reliability_job)],
    "multiclass": [("confusion matrix", _confusion_job)],
    "ordinal": [("confusion matrix", _confusion_job)],
    "multilabel": [("per-label F1", _per_label_job)],
    "regression": [("regression scatter", _scatter_job)],
}


def build_run_report(
    run_dir: PathLike,
    *,
    task: str,
    metrics: Mapping[str, Any],
    config: Mapping[str, Any] | None,
    history: pd.DataFrame | None,
    y_true: Any = None,
    y_pred: Any = None,
    proba: Any = None,
    label_names: Sequence[str] | None = None,
) -> Path:
    """Draw the plots that fit ``task`` into ``run_dir/plots/`` and write ``run_dir/report.html``.

    Plots: ``history.png`` (when the history is non-empty); ``binary`` → ``confusion_matrix.png`` and
    ``reliability_diagram.png`` (needs ``proba``); ``multiclass``/``ordinal`` → ``confusion_matrix.png``;
    ``multilabel`` → ``per_label_f1.png``; ``regression`` → ``regression_scatter.png`` (first target if 2-D).
    Head registry names (``binary_classification``, ...) work too; a missing ``y_pred`` is derived from
    ``proba`` (0.5 threshold / argmax). A failing plot is logged and shown as a warning in the report: it
    never stops the report from being written.

    Args:
        run_dir: Run folder.
        task: Task family.
        metrics: Metrics, flat or ``{split: {...}}``.
        config: Run configuration, shown as YAML.
        history: Training history (see :func:`plot_history`) or ``None``.
        y_true: Evaluation targets: ``[N]`` ids or values; ``[N, L]`` for multilabel / multi-target.
        y_pred: Predictions in the layout of ``y_true``.
        proba: ``binary``: P(positive) ``[N]`` or ``[N, 2]``; otherwise ``[N, C]`` / ``[N, L]``.
        label_names: Class or label names indexed by id.

    Returns:
        The path of ``report.html``.
    """
    run_dir = Path(run_dir)
    plots = run_dir / "plots"
    kind = _normalise_task(task)
    warnings: list[str] = []
    images: list[Path] = []
    jobs: list[tuple[str, Callable[[], Path | None]]] = [
        ("training history", partial(plot_history, history, plots / "history.png"))
    ]
    if y_true is not None:
        if kind not in _TASK_PLOTS:
            warnings.append(f"no task-specific plots for task '{task}'")
        for name, fn in _TASK_PLOTS.get(kind, []):
            jobs.append((name, partial(fn, kind, plots, y_true, y_pred, proba, label_names)))
    for name, job in jobs:
        try:
            out = job()
        except Exception as exc:  # a plot must never lose the run
            logger.warning("report: %s plot failed: %s: %s", name, type(exc).__name__, exc)
            warnings.append(f"{name} plot failed: {type(exc).__name__}: {exc}")
            continue
        if out is not None:
            images.append(Path(out))
    title = f"bertkit run report — {run_dir.name or 'run'} ({kind})"
    return write_html_report(
        run_dir, title=title, metrics=metrics, config=config, images=images, warnings=warnings
    )
