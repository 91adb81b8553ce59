"""The main job: from a data file to a run folder (model, metrics, history, predictions, report).

``train_run`` is what ``bertkit train`` calls; ``cross_validate`` (cv.py) reuses its pieces per fold.
"""

from __future__ import annotations

import logging
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd

from bertkit.data import (
    DatasetProfile,
    TokenizedDataset,
    analyze_dataset,
    prepare_frame,
    read_table,
    tokenize_texts,
)
from bertkit.errors import DataError
from bertkit.factory import create_bert_with_head
from bertkit.fileio import write_json_atomic, write_text_atomic, write_with_atomic
from bertkit.model import BertWithHead, load_tokenizer
from bertkit.runconfig import RunConfig
from bertkit.training.chunks import chunked_evaluate
from bertkit.training.postprocess import apply_postprocess, fit_run_postprocess, prediction_metrics
from bertkit.training.soup import finish_soup
from bertkit.training.trainer import Trainer, TrainResult

logger = logging.getLogger(__name__)


@dataclass
class RunResult:
    """What ``train_run`` returns (and writes as metrics.json)."""

    output_dir: Path
    metrics: dict[str, Any]
    profile: DatasetProfile
    model: BertWithHead
    train_result: TrainResult


def profile_for(df: pd.DataFrame, cfg: RunConfig, tokenizer: Any, source: str) -> DatasetProfile:
    """Analyse the training frame with the config's overrides."""
    profile = analyze_dataset(df, tokenizer, **cfg.data.analyze_overrides())
    profile.source = source
    return profile


def select_rows(
    df: pd.DataFrame, cfg: RunConfig, profile: DatasetProfile, has_valid: bool
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Training rows (the first N after a seeded shuffle) and, without a validation file, validation rows.

    Validation comes from the rows left over (up to ``valid_fraction`` of the data); when none are left, a
    stratified ``valid_fraction`` split is taken from the training rows first.
    """
    seed = cfg.training.seed
    order = np.random.default_rng(seed).permutation(len(df))
    shuffled = df.iloc[order].reset_index(drop=True)
    n = cfg.data.max_train_samples
    n_valid = max(1, int(round(cfg.data.valid_fraction * len(df))))
    if n is not None and n < len(shuffled):
        train, rest = shuffled.iloc[:n], shuffled.iloc[n:]
        valid = None if has_valid else rest.iloc[:n_valid]
        return train.reset_index(drop=True), None if valid is None else valid.reset_index(drop=True)
    if has_valid:
        return shuffled, None
    from sklearn.model_selection import train_test_split

    strat = None
    if profile.task in ("binary", "multiclass", "ordinal") and len(profile.label_columns) == 1:
        labels = shuffled[profile.label_columns[0]].astype(str)
        counts = labels.value_counts()
        if counts.min() >= 2 and n_valid >= len(counts):
            strat = labels
    train, valid = train_test_split(shuffled, test_size=n_valid, random_state=seed, stratify=strat)
    return train.reset_index(drop=True), valid.reset_index(drop=True)


def make_dataset(
    df: pd.DataFrame, profile: DatasetProfile, tokenizer: Any, cfg: RunConfig, require_labels: bool = True
) -> tuple[TokenizedDataset, np.ndarray, list | None]:
    """Prepare texts/targets and tokenize them; returns (dataset, kept row positions, ids)."""
    prepared = prepare_frame(
        df,
        profile,
        require_labels=require_labels,
        strict=cfg.data.strict,
        sep_token=tokenizer.sep_token or "[SEP]",
    )
    if cfg.data.cache_dir:  # memory-mapped token cache; same len/lengths/targets/__getitem__ contract
        from bertkit.data.cache import cached_dataset_from_texts

        cached = cached_dataset_from_texts(
            prepared.texts_a,
            prepared.texts_b,
            prepared.targets,
            tokenizer,
            cfg.data.cache_dir,
            max_length=cfg.training.max_length,
            truncation=cfg.training.truncation,
        )
        return cast(TokenizedDataset, cached), prepared.row_index, prepared.ids
    features = tokenize_texts(
        tokenizer,
        prepared.texts_a,
        prepared.texts_b,
        max_length=cfg.training.max_length,
        truncation=cfg.training.truncation,
    )
    return TokenizedDataset(features, prepared.targets), prepared.row_index, prepared.ids


def build_model(profile: DatasetProfile, cfg: RunConfig, tokenizer: Any) -> BertWithHead:
    """The model for a profile: the configured (or recommended) head with the profile's labels."""
    head = cfg.model.head or profile.recommended_head
    opts = dict(cfg.model.head_options)
    pooling = cfg.model.pooling
    if pooling is None and "pooling_type" not in opts and not cfg.model.head:
        pooling = profile.recommended_pooling
    if profile.task == "regression":
        num_labels = max(1, len(profile.label_columns))
        label_names = list(profile.label_columns)
    else:
        num_labels, label_names = len(profile.label_names), list(profile.label_names)
    if profile.task == "binary" and head == "binary_classification":
        num_labels = 2
    bert_config = dict(cfg.model.bert_options)
    if profile.task == "regression" and cfg.model.regression_dropout is not None:
        opts["dropout_prob"] = cfg.model.regression_dropout
        for key in ("hidden_dropout_prob", "attention_probs_dropout_prob"):
            bert_config.setdefault(key, cfg.model.regression_dropout)
    model = create_bert_with_head(
        head_type=head,
        num_labels=num_labels,
        label_names=label_names,
        bert_name=cfg.model.backbone if not bert_config.get("model_name_or_path") else None,
        bert_config=bert_config or None,
        pooling_type=pooling,
        tokenizer=tokenizer,
        freeze_bert_layers=cfg.model.freeze_bert_layers,
        metadata={
            "data": profile.to_dict(),
            "max_length": cfg.training.max_length,
            "truncation": cfg.training.truncation,
            "chunk_stride": cfg.training.chunk_stride,
            "chunk_aggregation": cfg.training.chunk_aggregation,
        },
        **opts,
    )
    if cfg.training.reinit_layers:
        from bertkit.training.reinit import reinit_top_layers

        reinit_top_layers(model.bert, cfg.training.reinit_layers, seed=cfg.training.seed)
    return model


def split_outputs_for_report(model: BertWithHead, outputs: dict[str, np.ndarray]) -> dict[str, Any]:
    """y_pred/proba arrays in the form reports.build_run_report expects."""
    return {"y_pred": outputs.get("predictions"), "proba": outputs.get("probabilities")}


def prediction_frame(
    model: BertWithHead,
    outputs: dict[str, np.ndarray],
    row_index: np.ndarray,
    n_rows: int,
    ids: list | None,
    id_column: str | None,
    label_column: str | None,
    proba: bool = False,
) -> pd.DataFrame:
    """A submission-style frame in input order: id column (when known) + prediction column(s)."""
    cols = model.head.format_predictions(outputs, proba=proba)
    frame = pd.DataFrame(cols)
    if label_column and "prediction" in frame.columns:
        frame = frame.rename(columns={"prediction": label_column})
    frame.index = row_index
    frame = frame.reindex(range(n_rows))  # dropped rows (empty text) stay as empty predictions
    if id_column and ids is not None:
        full_ids = pd.Series([None] * n_rows, dtype=object)
        full_ids.iloc[row_index] = ids
        frame.insert(0, id_column, full_ids.values)
    return frame.reset_index(drop=True)


def train_run(
    train_path: str | Path | pd.DataFrame,
    output_dir: str | Path,
    cfg: RunConfig,
    valid_path: str | Path | pd.DataFrame | None = None,
    test_path: str | Path | pd.DataFrame | None = None,
    resume: bool = False,
    write_report: bool = True,
) -> RunResult:
    """Train one model from files and write the run folder.

    Run folder: ``model/``, ``config.yaml``, ``metrics.json``, ``history.csv``, ``profile.json``,
    ``valid_predictions.csv`` / ``test_predictions.csv``, ``plots/`` and ``report.html``.
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = load_tokenizer(cfg.model.backbone if not cfg.model.bert_options.get("model_type") else None)
    df = read_table(train_path)
    source = str(train_path) if not isinstance(train_path, pd.DataFrame) else "<DataFrame>"
    profile = profile_for(df, cfg, tokenizer, source)
    train_df, valid_df = select_rows(df, cfg, profile, has_valid=valid_path is not None)
    if valid_path is not None:
        valid_df = read_table(valid_path)
    model = build_model(profile, cfg, tokenizer)
    train_ds, _, _ = make_dataset(train_df, profile, tokenizer, cfg)
    valid_ds = None
    if valid_df is not None and len(valid_df):
        valid_ds, _, _ = make_dataset(valid_df, profile, tokenizer, cfg)
    trainer = Trainer(model, out, cfg.training)
    main = trainer.is_main  # under DDP (accelerate launch / torchrun) only rank 0 writes files
    if main:
        write_text_atomic(out / "config.yaml", cfg.to_yaml())
        write_json_atomic(out / "profile.json", profile.to_dict())
    result = trainer.train(train_ds, valid_ds, resume_from="auto" if resume else None)
    soup = finish_soup(trainer, valid_ds)
    post = fit_run_postprocess(out / "model", model, trainer, valid_ds) if cfg.training.postprocess else {}
    metrics: dict[str, Any] = {
        "valid": result.val_metrics,
        "train_seconds": round(result.train_seconds, 3),
        "train_samples_per_second": round(result.train_samples_per_second, 3),
        "train_tokens_per_second": round(result.train_tokens_per_second, 3),
        "train_rows": len(train_ds),
        "valid_rows": len(valid_ds) if valid_ds is not None else 0,
    }
    if result.postprocessing:
        metrics["postprocessing"] = result.postprocessing
    if post:
        metrics["postprocess"] = post
    if soup:
        metrics["soup"] = soup
    report_data: dict[str, Any] = {}
    for split, frame_src in (("valid", valid_df if valid_ds is not None else None), ("test", test_path)):
        if frame_src is None:
            continue
        frame = frame_src if isinstance(frame_src, pd.DataFrame) else read_table(frame_src)
        has_labels = all(c in frame.columns for c in profile.label_columns)
        ds, rows, ids = make_dataset(frame, profile, tokenizer, cfg, require_labels=has_labels)
        windows = cfg.training.chunk_stride > 0  # sliding-window inference over long texts (chunks.py)
        if has_labels:
            split_metrics, outputs = (
                chunked_evaluate(trainer, frame.iloc[rows], profile, cfg, np.asarray(ds.targets))
                if windows
                else trainer.evaluate(ds, full_precision=True)  # as `bertkit evaluate` scores the saved model
            )
            if post:
                outputs = apply_postprocess(post, outputs)
                pp = prediction_metrics(model.head.task, outputs, np.asarray(ds.targets))
                split_metrics.update({f"{k}_postprocessed": v for k, v in pp.items()})
            if split == "test":
                metrics["test"] = split_metrics
            report_data = {"y_true": ds.targets, **split_outputs_for_report(model, outputs)}
        else:
            raw_out = (
                chunked_evaluate(trainer, frame.iloc[rows], profile, cfg, None)[1]
                if windows
                else trainer.predict(ds, full_precision=True)
            )
            outputs = apply_postprocess(post, raw_out)
        pred = prediction_frame(
            model,
            outputs,
            rows,
            len(frame),
            ids,
            profile.id_column,
            profile.label_columns[0] if len(profile.label_columns) == 1 else None,
        )
        if main:
            write_with_atomic(out / f"{split}_predictions.csv", lambda p, f=pred: f.to_csv(p, index=False))
    if main:
        write_json_atomic(out / "metrics.json", metrics)
    if write_report and main:
        _write_report(out, model, metrics, cfg, result.history, report_data)
    return RunResult(out, metrics, profile, model, result)


def _write_report(
    out: Path,
    model: BertWithHead,
    metrics: dict,
    cfg: RunConfig,
    history: pd.DataFrame,
    report_data: dict[str, Any],
) -> None:
    from bertkit.reports import build_run_report

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            build_run_report(
                out,
                task=model.head.task,
                metrics={k: v for k, v in metrics.items() if isinstance(v, dict)},
                config=cfg.to_dict(),
                history=history,
                label_names=model.head.label_names(),
                **report_data,
            )
    except Exception as exc:  # a report must never lose a finished run
        logger.warning("report could not be written: %s", exc)


def timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    """Call ``fn`` and return (result, seconds)."""
    t0 = time.perf_counter()
    res = fn(*args, **kwargs)
    return res, time.perf_counter() - t0


def check_not_empty(frame: pd.DataFrame, what: str) -> None:
    """Raise a DataError when a frame has no rows."""
    if not len(frame):
        raise DataError(f"{what} has no rows")
