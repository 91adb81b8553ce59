"""K-fold cross-validation: fold models, out-of-fold predictions, per-fold/overall metrics, averaged test.

Folds are stratified for classification, multilabel-stratified (iterative stratification) for multilabel,
``GroupKFold`` when a group column is given, and plain shuffled ``KFold`` for regression. Each fold's held-out
rows are its validation set (early stopping) and its OOF predictions; post-hoc calibration is switched off
inside folds so that nothing is fitted on the rows a fold predicts.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bertkit.data import DatasetProfile, TokenizedDataset, read_table
from bertkit.errors import ConfigError, DataError
from bertkit.fileio import write_json_atomic, write_text_atomic, write_with_atomic
from bertkit.model import load_tokenizer
from bertkit.runconfig import RunConfig
from bertkit.training.chunks import chunked_evaluate
from bertkit.training.postprocess import apply_postprocess, postprocess_cv
from bertkit.training.run import build_model, make_dataset, prediction_frame, profile_for
from bertkit.training.soup import finish_soup
from bertkit.training.trainer import Trainer

logger = logging.getLogger(__name__)


def make_folds(
    df: pd.DataFrame, profile: DatasetProfile, k: int, seed: int, group_column: str | None = None
) -> np.ndarray:
    """Fold index (0..k-1) for every row."""
    from sklearn.model_selection import GroupKFold, KFold, StratifiedKFold

    if k < 2:
        raise ConfigError(f"--folds must be >= 2, got {k}")
    if k > len(df):
        raise DataError(f"cannot split {len(df)} rows into {k} folds")
    folds = np.full(len(df), -1, dtype=np.int64)
    idx = np.arange(len(df))
    if group_column:
        if group_column not in df.columns:
            raise DataError(
                f"group column '{group_column}' is not in the data; columns: {', '.join(map(str, df.columns))}"
            )
        groups = df[group_column].astype(str).values
        if len(set(groups)) < k:
            raise DataError(
                f"group column '{group_column}' has {len(set(groups))} groups, fewer than {k} folds"
            )
        splits = GroupKFold(n_splits=k).split(idx, groups=groups)
    elif profile.task in ("binary", "multiclass", "ordinal"):
        y = df[profile.label_columns[0]].astype(str).values
        min_count = pd.Series(y).value_counts().min()
        if min_count < k:
            logger.warning("smallest class has %d rows < %d folds; using unstratified KFold", min_count, k)
            splits = KFold(n_splits=k, shuffle=True, random_state=seed).split(idx)
        else:
            splits = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(idx, y)
    elif profile.task == "multilabel":
        from iterstrat.ml_stratifiers import MultilabelStratifiedKFold

        from bertkit.data import prepare_frame

        y = prepare_frame(df, profile, require_labels=False).targets
        if y is None:
            y = _multilabel_matrix(df, profile)
        splits = MultilabelStratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(idx, y)
    else:
        splits = KFold(n_splits=k, shuffle=True, random_state=seed).split(idx)
    for fold, (_, valid_idx) in enumerate(splits):
        folds[valid_idx] = fold
    return folds


def _multilabel_matrix(df: pd.DataFrame, profile: DatasetProfile) -> np.ndarray:
    if profile.multilabel_delimiter:
        col = df[profile.label_columns[0]].fillna("").astype(str)
        sets = [{t.strip() for t in v.split(profile.multilabel_delimiter) if t.strip()} for v in col]
        return np.array([[int(n in s) for n in profile.label_names] for s in sets])
    return df[profile.label_columns].fillna(0).astype(float).values


def cross_validate(
    data: str | Path | pd.DataFrame,
    output_dir: str | Path,
    cfg: RunConfig,
    folds: int = 5,
    group_column: str | None = None,
    test_path: str | Path | pd.DataFrame | None = None,
    extra_train: Callable[[int, TokenizedDataset], TokenizedDataset] | None = None,
) -> dict[str, Any]:
    """Train ``folds`` models and write ``oof.csv``, ``metrics.json``, ``fold_k/`` and ``test_predictions.csv``.

    ``max_train_samples`` (when set) first takes the first N rows after a seeded shuffle, then splits those.
    ``extra_train(fold, train_ds)`` may return fold ``fold``'s training set with extra rows (pseudo-labels).
    With ``training.pseudo_file`` set, runs fold-safe pseudo-labelling rounds (``bertkit.training.pseudo``).
    Returns the metrics dict written to metrics.json.
    """
    if cfg.training.pseudo_file and extra_train is None:
        from bertkit.training.pseudo import pseudo_cross_validate

        return pseudo_cross_validate(data, output_dir, cfg, folds, group_column, test_path)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(cfg.model.backbone)
    df = read_table(data)
    n = cfg.data.max_train_samples
    fold_seed = cfg.training.seed if cfg.training.fold_seed is None else cfg.training.fold_seed
    if n is not None and n < len(df):
        order = np.random.default_rng(fold_seed).permutation(len(df))[:n]
        df = df.iloc[np.sort(order)].reset_index(drop=True)
    profile = profile_for(
        df, cfg, tokenizer, str(data) if not isinstance(data, pd.DataFrame) else "<DataFrame>"
    )
    group_column = group_column or cfg.data.group_column
    fold_of = make_folds(df, profile, folds, fold_seed, group_column)
    from accelerate import PartialState

    main = PartialState().is_main_process  # under torchrun / accelerate launch only rank 0 writes files
    if main:
        write_text_atomic(out / "config.yaml", cfg.to_yaml())
        write_json_atomic(out / "profile.json", profile.to_dict())
    fold_cfg = copy.deepcopy(cfg)
    fold_cfg.training.calibrate = False  # nothing is fitted on the rows a fold predicts
    test_df = read_table(test_path) if test_path is not None else None
    oof_outputs: dict[str, list[np.ndarray]] = {}
    oof_targets: list[np.ndarray] = []
    oof_rows: list[np.ndarray] = []
    fold_metrics: list[dict[str, Any]] = []
    test_sum: dict[str, np.ndarray] = {}
    model = None
    for fold in range(folds):
        fold_dir = out / f"fold_{fold}"
        train_df = df[fold_of != fold].reset_index(drop=True)
        valid_mask = fold_of == fold
        valid_df = df[valid_mask].reset_index(drop=True)
        logger.info("fold %d/%d: %d train, %d valid rows", fold + 1, folds, len(train_df), len(valid_df))
        model = build_model(profile, fold_cfg, tokenizer)
        train_ds, _, _ = make_dataset(train_df, profile, tokenizer, fold_cfg)
        if extra_train is not None:
            train_ds = extra_train(fold, train_ds)
        valid_ds, rows, _ = make_dataset(valid_df, profile, tokenizer, fold_cfg)
        trainer = Trainer(model, fold_dir, fold_cfg.training)
        result = trainer.train(train_ds, valid_ds)
        finish_soup(trainer, valid_ds)
        if fold_cfg.training.chunk_stride:  # sliding windows over long texts (chunks.py)
            metrics, outputs = chunked_evaluate(
                trainer, valid_df.iloc[rows], profile, fold_cfg, np.asarray(valid_ds.targets)
            )
        else:
            metrics, outputs = trainer.evaluate(valid_ds)
        fold_metrics.append(
            {
                "fold": fold,
                "rows": len(valid_ds),
                "train_seconds": round(result.train_seconds, 3),
                "train_samples_per_second": round(result.train_samples_per_second, 3),
                **metrics,
            }
        )
        positions = np.flatnonzero(valid_mask)[rows]
        oof_rows.append(positions)
        oof_targets.append(np.asarray(valid_ds.targets))
        for key, value in outputs.items():
            oof_outputs.setdefault(key, []).append(value)
        if test_df is not None:
            test_ds, test_rows, _ = make_dataset(test_df, profile, tokenizer, fold_cfg, require_labels=False)
            if fold_cfg.training.chunk_stride:
                test_out = chunked_evaluate(trainer, test_df.iloc[test_rows], profile, fold_cfg, None)[1]
            else:
                test_out = trainer.predict(test_ds)
            for key in ("probabilities", "predictions", "logits"):
                if key in test_out and np.issubdtype(test_out[key].dtype, np.floating):
                    test_sum[key] = test_sum.get(key, 0) + test_out[key] / folds
        if main:
            write_json_atomic(out / "fold_metrics.json", fold_metrics)
    assert model is not None
    # overall OOF metrics in input order
    order = np.concatenate(oof_rows)
    merged = {k: np.concatenate(v) for k, v in oof_outputs.items()}
    targets = np.concatenate(oof_targets)
    oof_metrics = model.head.compute_metrics(merged, targets)
    post_params: dict[str, Any] = {}
    if cfg.training.postprocess:  # cross-fitted: fold k's rows use parameters fitted on the other folds
        merged, post_report, post_params = postprocess_cv(
            out, model, merged, targets, fold_of[order], folds, write=main
        )
    per_fold = pd.DataFrame(fold_metrics)
    summary = {
        c: {"mean": float(per_fold[c].mean()), "std": float(per_fold[c].std(ddof=0))}
        for c in per_fold.columns
        if c not in ("fold", "rows") and pd.api.types.is_numeric_dtype(per_fold[c])
    }
    metrics_out = {
        "oof": oof_metrics,
        "folds": fold_metrics,
        "fold_summary": summary,
        "num_folds": folds,
        "train_seconds": float(per_fold["train_seconds"].sum()),
    }
    if post_params:
        metrics_out["postprocessing"] = post_report
    # oof.csv: same row order and ids as the input, with the fold and the prediction columns
    label_col = profile.label_columns[0] if len(profile.label_columns) == 1 else None
    ids = df[profile.id_column].iloc[order].tolist() if profile.id_column else None
    oof = prediction_frame(model, merged, order, len(df), ids, profile.id_column, label_col)
    proba_cols = prediction_frame(model, merged, order, len(df), None, None, None, proba=True)
    for c in proba_cols.columns:
        if c not in oof.columns:
            oof[c] = proba_cols[c]
    oof.insert(1 if profile.id_column else 0, "fold", fold_of)
    _add_true_columns(oof, model, targets, order)
    if main:
        write_with_atomic(out / "oof.csv", lambda p: oof.to_csv(p, index=False))
    if test_df is not None and test_sum and main:
        test_out = apply_postprocess(post_params, _finish_average(model, test_sum))
        test_ds, test_rows, test_ids = make_dataset(
            test_df, profile, tokenizer, fold_cfg, require_labels=False
        )
        sub = prediction_frame(
            model, test_out, test_rows, len(test_df), test_ids, profile.id_column, label_col
        )
        write_with_atomic(out / "test_predictions.csv", lambda p: sub.to_csv(p, index=False))
        if "probabilities" in test_out:  # for blending (bertkit blend)
            probs = prediction_frame(
                model, test_out, test_rows, len(test_df), test_ids, profile.id_column, None, proba=True
            )
            write_with_atomic(out / "test_probabilities.csv", lambda p: probs.to_csv(p, index=False))
    if main:
        write_json_atomic(out / "metrics.json", metrics_out)
    return metrics_out


def _add_true_columns(oof: pd.DataFrame, model: Any, targets: np.ndarray, order: np.ndarray) -> None:
    """``y_true`` (label names for classes, values for regression) or ``y_true_<label>`` columns (blending)."""
    names = model.head.label_names()
    t = np.asarray(targets)
    if t.ndim == 1:
        values = [names[int(v)] for v in t] if model.head.task in ("binary", "multiclass", "ordinal") else t
        oof["y_true"] = pd.Series(list(values), index=order).reindex(range(len(oof))).values
    elif t.ndim == 2:
        for j, name in enumerate(names[: t.shape[1]]):
            oof[f"y_true_{name}"] = pd.Series(t[:, j], index=order).reindex(range(len(oof))).values


def _finish_average(model: Any, avg: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Turn fold-averaged probabilities/predictions into decodable outputs (argmax / thresholds)."""
    out = dict(avg)
    head = model.head
    proba = out.get("probabilities")
    if head.task in ("multiclass", "ordinal") and proba is not None:
        out["predictions"] = proba.argmax(-1)
    elif head.task == "binary" and proba is not None:
        out["predictions"] = (proba[:, 1] >= float(head.threshold)).astype(np.int64)
    elif head.task == "multilabel" and proba is not None:
        out["predictions"] = (proba >= head.thresholds.cpu().numpy()).astype(np.int64)
    return out
