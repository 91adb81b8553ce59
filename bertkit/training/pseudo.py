"""Fold-safe pseudo-labelling rounds on an unlabelled file (``training.pseudo_file``) inside ``cv``.

Round 0 is plain cross-validation. In round r, fold k's model trains on fold k's training rows **plus the
unlabelled rows labelled by fold k's model of round r-1** — a model that never saw fold k's validation rows,
nor did any of its own teachers (by induction). Pseudo-labels from an ensemble of all fold models would
carry information about fold k's validation rows into fold k's training and inflate the OOF score; this
scheme never does.

Labels: classification keeps rows whose confidence (top probability; for multilabel the least confident
label) is at least ``pseudo_threshold`` as hard labels, or with ``pseudo_soft`` trains on all rows with the
teacher's probabilities as soft targets (binary, multiclass, multilabel). Regression uses the predictions
(all rows). Each round writes ``round_r/`` (a normal cv folder); the top folder gets the last round's
``oof.csv`` / test predictions and a ``metrics.json`` with every round's summary.
"""

from __future__ import annotations

import copy
import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bertkit.data import TokenizedDataset, prepare_frame, read_table, tokenize_texts
from bertkit.fileio import write_json_atomic
from bertkit.runconfig import RunConfig
from bertkit.training import cv as cv_module

logger = logging.getLogger(__name__)


def predict_model_dir(
    model_dir: Path, features: dict[str, list[list[int]]], batch_size: int = 64
) -> dict[str, np.ndarray]:
    """Outputs of the saved model in ``model_dir`` on tokenized texts."""
    from bertkit.data.tokenize import Collator
    from bertkit.inference.batched import predict_outputs
    from bertkit.inference.predictor import pick_device
    from bertkit.model import BertWithHead

    model = BertWithHead.from_pretrained(model_dir)
    side = "left" if model.bert.decoder_only else "right"
    device = pick_device("auto")
    model.to(device)
    out = predict_outputs(
        model,
        TokenizedDataset(features),
        Collator.from_tokenizer(model.tokenizer, padding_side=side),
        batch_size,
        device,
    )
    out.pop("loss", None)
    return out


def pseudo_targets(
    task: str, outputs: dict[str, np.ndarray], threshold: float, soft: bool
) -> tuple[np.ndarray, np.ndarray]:
    """(row positions kept, their targets) from a teacher's outputs on the unlabelled rows."""
    if task == "regression" or "probabilities" not in outputs:
        pred = np.asarray(outputs["predictions"], dtype=np.float32)
        return np.arange(len(pred)), pred
    proba = np.asarray(outputs["probabilities"], dtype=np.float32)
    if task == "multilabel":
        if soft:
            return np.arange(len(proba)), proba
        conf = np.maximum(proba, 1 - proba).min(1)
        keep = np.flatnonzero(conf >= threshold)
        return keep, (proba[keep] >= 0.5).astype(np.float32)
    if soft and task == "binary":
        return np.arange(len(proba)), proba[:, 1].astype(np.float32)
    if soft and task == "multiclass":
        return np.arange(len(proba)), proba
    keep = np.flatnonzero(proba.max(1) >= threshold)
    return keep, proba[keep].argmax(1).astype(np.int64)


def _as_soft(targets: np.ndarray, num_classes: int) -> np.ndarray:
    """Class indices ``[N]`` as one-hot float rows ``[N, C]`` (already 2-D rows pass through)."""
    t = np.asarray(targets)
    if t.ndim == 2:
        return t.astype(np.float32)
    return np.eye(num_classes, dtype=np.float32)[t.astype(np.int64)]


def merge_datasets(
    base: TokenizedDataset, features: dict[str, list[list[int]]], rows: np.ndarray, targets: np.ndarray
) -> TokenizedDataset:
    """``base`` plus the selected unlabelled rows with their pseudo targets (multiclass soft labels turn the
    base targets into one-hot rows)."""
    base_t = np.asarray(base.targets)
    if targets.ndim == 2 and base_t.ndim == 1:
        base_t = _as_soft(base_t, targets.shape[1])
    merged_t = np.concatenate([base_t, targets])  # int + float (soft binary) promotes to float
    keys = [k for k in base.features if k in features]
    merged = {k: list(base.features[k]) + [features[k][i] for i in rows] for k in keys}
    return TokenizedDataset(merged, merged_t)


def make_extra_train(
    task: str,
    teacher_outputs: dict[int, dict[str, np.ndarray]],
    features: dict[str, list[list[int]]],
    threshold: float,
    soft: bool,
    log: list[dict[str, Any]] | None = None,
) -> Callable[[int, TokenizedDataset], TokenizedDataset]:
    """The ``extra_train`` hook of :func:`~bertkit.training.cv.cross_validate`: fold k gets the unlabelled
    rows labelled by ``teacher_outputs[k]`` — fold k's own previous model, never another fold's."""

    def extra(fold: int, train_ds: TokenizedDataset) -> TokenizedDataset:
        rows, targets = pseudo_targets(task, teacher_outputs[fold], threshold, soft)
        if log is not None:
            log.append({"fold": fold, "teacher_fold": fold, "pseudo_rows": int(len(rows))})
        if not len(rows):
            return train_ds
        return merge_datasets(train_ds, features, rows, targets)

    return extra


def pseudo_cross_validate(
    data: str | Path | pd.DataFrame,
    output_dir: str | Path,
    cfg: RunConfig,
    folds: int = 5,
    group_column: str | None = None,
    test_path: str | Path | pd.DataFrame | None = None,
) -> dict[str, Any]:
    """Cross-validation with ``cfg.training.pseudo_rounds`` fold-safe pseudo-labelling rounds (module doc)."""
    from bertkit.model import load_tokenizer
    from bertkit.training.run import profile_for

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tc = cfg.training
    base = copy.deepcopy(cfg)
    base.training.pseudo_file = None
    tokenizer = load_tokenizer(cfg.model.backbone)
    df = read_table(data)
    profile = profile_for(df, cfg, tokenizer, "<pseudo>")
    unl = read_table(tc.pseudo_file)
    prepared = prepare_frame(unl, profile, require_labels=False, sep_token=tokenizer.sep_token or "[SEP]")
    features = tokenize_texts(
        tokenizer,
        prepared.texts_a,
        prepared.texts_b,
        max_length=tc.max_length,
        truncation=tc.truncation if prepared.texts_b is None else "head",
    )
    rounds: list[dict[str, Any]] = []
    log: list[dict[str, Any]] = []
    metrics = cv_module.cross_validate(data, out / "round_0", base, folds, group_column, test_path)
    rounds.append({"round": 0, "fold_summary": metrics.get("fold_summary"), "oof": metrics.get("oof")})
    task = profile.task
    for r in range(1, tc.pseudo_rounds + 1):
        teacher_dir = out / f"round_{r - 1}"
        teachers = {
            k: predict_model_dir(teacher_dir / f"fold_{k}" / "model", features, tc.eval_batch_size)
            for k in range(folds)
        }
        extra = make_extra_train(
            task, teachers, features, tc.pseudo_threshold, tc.pseudo_soft and task != "ordinal", log
        )
        metrics = cv_module.cross_validate(
            data, out / f"round_{r}", base, folds, group_column, test_path, extra_train=extra
        )
        rounds.append({"round": r, "fold_summary": metrics.get("fold_summary"), "oof": metrics.get("oof")})
        logger.info("pseudo-labelling round %d: %s", r, metrics.get("oof"))
    last = out / f"round_{tc.pseudo_rounds}"
    for name in (
        "oof.csv",
        "test_predictions.csv",
        "test_probabilities.csv",
        "config.yaml",
        "profile.json",
        "postprocess.json",
    ):
        if (last / name).is_file():
            shutil.copyfile(last / name, out / name)
    result = dict(metrics)
    result["pseudo"] = {"rounds": rounds, "pseudo_rows": log, "unlabelled_rows": len(prepared.texts_a)}
    write_json_atomic(out / "metrics.json", result)
    return result
