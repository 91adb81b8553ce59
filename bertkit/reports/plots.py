"""Plots of a training run (history, confusion matrix, reliability diagram, regression scatter, per-label bars).

Figures are ``matplotlib.figure.Figure`` objects drawn by the Agg canvas, never pyplot: nothing changes the
global backend, so reports work headless and inside notebooks without breaking inline plotting. PNGs are
written atomically.
"""

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from bertkit.fileio import atomic_path

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]

# task names and head registry names (bertkit.config.HeadType values) → plot family
_TASK_ALIASES = {"binary": "binary", "binary_classification": "binary", "multiclass": "multiclass",
                 "multiclass_classification": "multiclass", "ensemble_classification": "multiclass",
                 "hierarchical_classification": "multiclass", "ordinal": "ordinal",
                 "ordinal_regression": "ordinal", "multilabel": "multilabel",
                 "multilabel_classification": "multilabel", "regression": "regression"}  # fmt: skip


# --------------------------------------------------------------------------------------------- helpers
def _new_figure(width: float, height: float) -> Figure:
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)  # attaches the Agg canvas to the figure
    return fig


def _save(fig: Figure, out_path: PathLike) -> Path:
    """Write ``fig`` as PNG to ``out_path`` atomically and release it."""
    target = Path(out_path)
    try:
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format="png", dpi=110)
    finally:
        fig.clear()
    return target


def _as_1d(values: Any, name: str) -> np.ndarray:
    arr = np.asarray(values)
    if arr.ndim == 2 and arr.shape[1] == 1:
        arr = arr[:, 0]
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    return arr


def _check_same_length(a: np.ndarray, b: np.ndarray, names: str) -> None:
    if len(a) != len(b):
        raise ValueError(f"{names} have different lengths: {len(a)} vs {len(b)}")


def _short(text: str, limit: int = 22) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def expected_calibration_error(y_true: Any, prob_pos: Any, n_bins: int = 10) -> float:
    """Expected calibration error of positive-class probabilities.

    Equal-width bins on ``prob_pos``; ECE = Σ_b |acc_b − conf_b| · n_b / N, where ``acc_b`` is the fraction of
    positives in bin b and ``conf_b`` the mean predicted probability in it.

    Args:
        y_true: ``[N]`` 0/1 labels.
        prob_pos: ``[N]`` predicted P(positive) in [0, 1].
        n_bins: Number of equal-width bins over [0, 1].

    Returns:
        The ECE in [0, 1] (``nan`` for empty input).
    """
    y, p = _binary_inputs(y_true, prob_pos)
    if len(y) == 0:
        return float("nan")
    _, counts, acc, conf = _calibration_bins(y, p, n_bins)
    return float(np.sum(np.abs(acc - conf) * counts) / len(y))


def _binary_inputs(y_true: Any, prob_pos: Any) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(prob_pos, dtype=float)
    if p.ndim == 2 and p.shape[1] == 2:
        p = p[:, 1]
    p = _as_1d(p, "prob_pos")
    y = _as_1d(y_true, "y_true").astype(float)
    _check_same_length(y, p, "y_true and prob_pos")
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError("prob_pos must lie in [0, 1] (no NaN)")
    return y, p


def _calibration_bins(
    y: np.ndarray, p: np.ndarray, n_bins: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Return (bin index per row, count per bin, positive rate per bin, mean prob per bin); empty bins → 0."""
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    idx = np.minimum((p * n_bins).astype(int), n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins).astype(float)
    safe = np.maximum(counts, 1.0)
    acc = np.bincount(idx, weights=y, minlength=n_bins) / safe
    conf = np.bincount(idx, weights=p, minlength=n_bins) / safe
    return idx, counts, acc, conf


# --------------------------------------------------------------------------------------------- plots
def plot_history(history: pd.DataFrame | None, out_path: PathLike) -> Path | None:
    """Plot training/validation loss and validation metrics against the optimisation step.

    Args:
        history: One row per logging or evaluation event with columns ``step``, ``epoch``, ``train_loss``
            (NaN on evaluation rows), ``val_loss`` and any ``val_<metric>`` columns (NaN on training rows).
        out_path: Where to write the PNG.

    Returns:
        The written path, or ``None`` when the history is empty (nothing to plot).
    """
    if history is None or len(history) == 0:
        return None
    df = history.copy()
    x_col = "step" if "step" in df.columns else None
    df = df.sort_values(x_col) if x_col else df.reset_index(drop=True)
    x = df[x_col].to_numpy(dtype=float) if x_col else np.arange(len(df), dtype=float)
    loss_cols = [c for c in ("train_loss", "val_loss") if c in df.columns]
    metric_cols = [
        c
        for c in df.columns
        if c.startswith("val_") and c != "val_loss" and pd.api.types.is_numeric_dtype(df[c])
    ]
    has_loss = any(df[c].notna().any() for c in loss_cols)
    metric_cols = [c for c in metric_cols if df[c].notna().any()]
    if not has_loss and not metric_cols:
        return None

    n_panels = 2 if (has_loss and metric_cols) else 1
    fig = _new_figure(6.0 * n_panels, 4.2)
    axes = fig.subplots(1, n_panels, squeeze=False)[0]
    panels = [("Loss", [c for c in loss_cols if df[c].notna().any()])] if has_loss else []
    panels += [("Validation metrics", metric_cols)] if metric_cols else []
    for ax, (title, cols) in zip(axes, panels):
        for col in cols:
            y = df[col].to_numpy(dtype=float)
            ok = np.isfinite(y)
            style = {"lw": 1.2, "alpha": 0.85} if col == "train_loss" else {"lw": 1.8, "marker": "o", "ms": 4}
            label = col.replace("_", " ") if title == "Loss" else col[len("val_") :]
            ax.plot(x[ok], y[ok], label=label, **style)
        ax.set(title=title, xlabel="step", ylabel="loss" if title == "Loss" else "")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8 if len(cols) > 5 else 10)
    return _save(fig, out_path)


def _encode_labels(y: np.ndarray, label_names: Sequence[str] | None, name: str) -> np.ndarray:
    if np.issubdtype(y.dtype, np.integer):
        return y.astype(np.int64)
    if np.issubdtype(y.dtype, np.floating) or np.issubdtype(y.dtype, np.bool_):
        if not np.all(np.isfinite(y.astype(float))) or np.any(y.astype(float) % 1 != 0):
            raise ValueError(f"{name} must hold integer class ids")
        return y.astype(np.int64)
    if label_names is None:
        raise ValueError(f"{name} holds non-integer labels; pass label_names to map them to ids")
    index = {str(n): i for i, n in enumerate(label_names)}
    unknown = sorted({str(v) for v in y} - set(index))
    if unknown:
        raise ValueError(f"{name} has labels not in label_names: {unknown[:5]}")
    return np.array([index[str(v)] for v in y], dtype=np.int64)


def plot_confusion_matrix(
    y_true: Any,
    y_pred: Any,
    label_names: Sequence[str] | None,
    out_path: PathLike,
    normalize: bool = True,
) -> Path:
    """Plot an annotated confusion matrix (rows = true class, columns = predicted class).

    Args:
        y_true: ``[N]`` integer class ids (or label strings found in ``label_names``).
        y_pred: ``[N]`` integer class ids (or label strings found in ``label_names``).
        label_names: Class names indexed by id; ``None`` uses the ids.
        out_path: Where to write the PNG.
        normalize: Colour cells by the row-normalised share (each cell shows count and share); otherwise
            colour by raw counts.

    Returns:
        The written path.
    """
    yt = _encode_labels(_as_1d(y_true, "y_true"), label_names, "y_true")
    yp = _encode_labels(_as_1d(y_pred, "y_pred"), label_names, "y_pred")
    _check_same_length(yt, yp, "y_true and y_pred")
    k = max(
        len(label_names) if label_names is not None else 0,
        int(max(yt.max(initial=-1), yp.max(initial=-1))) + 1,
        1,
    )
    if (yt.size and yt.min() < 0) or (yp.size and yp.min() < 0):
        raise ValueError("class ids must be non-negative")
    names = [str(n) for n in label_names] if label_names is not None else []
    names = [_short(n) for n in names] + [str(i) for i in range(len(names), k)]
    cm = np.bincount(yt * k + yp, minlength=k * k).reshape(k, k)
    row = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, row, out=np.zeros(cm.shape, dtype=float), where=row > 0)

    side = float(np.clip(1.0 + 0.42 * k, 4.5, 15.0))
    fig = _new_figure(side + 1.4, side)
    ax = fig.add_subplot()
    shade = share if normalize else cm
    im = ax.imshow(shade, cmap="Blues", vmin=0, vmax=1 if normalize else max(int(cm.max()), 1))
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02, label="row share" if normalize else "count")
    font = 10 if k <= 8 else 8 if k <= 15 else 6 if k <= 25 else 5
    show_share = normalize and k <= 20
    for i in range(k):
        for j in range(k):
            text = f"{cm[i, j]}\n{share[i, j]:.0%}" if show_share else f"{cm[i, j]}"
            dark = shade[i, j] > 0.55 * (1 if normalize else max(int(cm.max()), 1))
            ax.text(j, i, text, ha="center", va="center", fontsize=font, color="white" if dark else "#222")
    tick_font = 10 if k <= 10 else 8 if k <= 20 else 6
    ax.set_xticks(
        range(k), names, rotation=45 if k > 4 else 0, ha="right" if k > 4 else "center", fontsize=tick_font
    )
    ax.set_yticks(range(k), names, fontsize=tick_font)
    ax.set(xlabel="predicted", ylabel="true")
    acc = float(np.trace(cm) / max(cm.sum(), 1))
    ax.set_title(f"Confusion matrix (n={int(cm.sum())}, accuracy={acc:.4f})")
    return _save(fig, out_path)


def plot_reliability_diagram(y_true: Any, prob_pos: Any, out_path: PathLike, n_bins: int = 10) -> Path:
    """Plot a reliability curve (positive rate vs mean P(positive) per bin) with a confidence histogram.

    Args:
        y_true: ``[N]`` 0/1 labels.
        prob_pos: ``[N]`` predicted P(positive) (an ``[N, 2]`` array uses column 1).
        out_path: Where to write the PNG.
        n_bins: Number of equal-width probability bins.

    Returns:
        The written path.
    """
    y, p = _binary_inputs(y_true, prob_pos)
    if len(y) == 0:
        raise ValueError("reliability diagram needs at least one prediction")
    _, counts, acc, conf = _calibration_bins(y, p, n_bins)
    ece = float(np.sum(np.abs(acc - conf) * counts) / len(y))
    filled = counts > 0

    fig = _new_figure(5.6, 6.2)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    top.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="perfect calibration")
    top.plot(conf[filled], acc[filled], marker="o", lw=2, color="#2563eb", label="model")
    top.set(xlim=(0, 1), ylim=(0, 1), ylabel="fraction positive")
    top.set_title(f"Reliability diagram (ECE = {ece:.4f}, {n_bins} bins)")
    top.grid(alpha=0.3)
    top.legend(loc="upper left")
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    bottom.bar(edges[:-1], counts, width=1.0 / n_bins, align="edge", color="#93c5fd", edgecolor="#1e40af")
    bottom.set(xlabel="predicted P(positive)", ylabel="count")
    bottom.grid(alpha=0.3)
    return _save(fig, out_path)


def plot_regression_scatter(y_true: Any, y_pred: Any, out_path: PathLike) -> Path:
    """Scatter predicted against true values with the ``y = x`` line; the title shows RMSE and Pearson r.

    Args:
        y_true: ``[N]`` true values.
        y_pred: ``[N]`` predictions.
        out_path: Where to write the PNG.

    Returns:
        The written path.
    """
    t = _as_1d(y_true, "y_true").astype(float)
    p = _as_1d(y_pred, "y_pred").astype(float)
    _check_same_length(t, p, "y_true and y_pred")
    ok = np.isfinite(t) & np.isfinite(p)
    t, p = t[ok], p[ok]
    if len(t) == 0:
        raise ValueError("regression scatter needs at least one finite (y_true, y_pred) pair")
    rmse = float(np.sqrt(np.mean((t - p) ** 2)))
    r = float(np.corrcoef(t, p)[0, 1]) if len(t) > 1 and t.std() > 0 and p.std() > 0 else float("nan")

    fig = _new_figure(5.6, 5.4)
    ax = fig.add_subplot()
    alpha = float(np.clip(30.0 / math.sqrt(len(t)), 0.15, 0.8))
    ax.scatter(t, p, s=10, alpha=alpha, color="#2563eb", edgecolors="none", rasterized=len(t) > 5000)
    lo = float(min(t.min(), p.min()))
    hi = float(max(t.max(), p.max()))
    pad = 0.03 * (hi - lo) if hi > lo else 0.5
    ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], ls="--", color="grey", lw=1, label="y = x")
    ax.set(xlim=(lo - pad, hi + pad), ylim=(lo - pad, hi + pad), xlabel="true", ylabel="predicted")
    ax.set_title(f"Predicted vs true (RMSE = {rmse:.4f}, Pearson r = {r:.4f}, n={len(t)})")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    return _save(fig, out_path)


def plot_per_label_bars(names: Sequence[str], values: Any, out_path: PathLike, title: str) -> Path:
    """Horizontal bar chart of one value per label (e.g. per-label F1 for multilabel tasks).

    Args:
        names: Label names, one per bar.
        values: ``[L]`` values, same order as ``names`` (NaN bars are drawn empty).
        out_path: Where to write the PNG.
        title: Figure title.

    Returns:
        The written path.
    """
    vals = _as_1d(values, "values").astype(float)
    labels = [_short(str(n), 30) for n in names]
    _check_same_length(np.asarray(labels, dtype=object), vals, "names and values")
    n = len(vals)
    if n == 0:
        raise ValueError("per-label bars need at least one label")
    fig = _new_figure(7.0, float(np.clip(0.32 * n + 1.4, 2.5, 40.0)))
    ax = fig.add_subplot()
    pos = np.arange(n)
    ax.barh(pos, np.nan_to_num(vals), color="#60a5fa", edgecolor="#1e40af")
    font = 9 if n <= 30 else 7
    for i, v in enumerate(vals):
        ax.text(np.nan_to_num(v), i, f" {v:.3f}" if np.isfinite(v) else " n/a", va="center", fontsize=font)
    ax.set_yticks(pos, labels, fontsize=font)
    ax.invert_yaxis()
    finite = vals[np.isfinite(vals)]
    upper = float(finite.max()) if finite.size else 1.0
    lower = min(0.0, float(finite.min()) if finite.size else 0.0)
    ax.set_xlim(lower, max(upper * 1.15, 1.12) if upper <= 1 else upper * 1.15)
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, out_path)


# --------------------------------------------------------------------------------------------- HTML
