"""Generic train / cross-validate / predict / evaluate / analyze drivers for :class:`TaskPipeline` runners.

They follow the sequence pipeline's run-folder conventions (``model/``, ``config.yaml``, ``profile.json``,
``metrics.json``, ``history.csv``, ``report.html``) and reuse its pieces (row selection, Trainer, report);
prediction files are written in the input's own format by the pipeline.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pandas as pd

from bertkit.errors import ConfigError, DataError
from bertkit.fileio import write_json_atomic, write_text_atomic, write_with_atomic
from bertkit.runconfig import RunConfig
from bertkit.runners import TaskRunner
from bertkit.tasks.common import TaskDataset, TaskPipeline

logger = logging.getLogger(__name__)

PipelineType = type[TaskPipeline]


# ---------------------------------------------------------------------------------------------- helpers
def collator_for(pipe: TaskPipeline, model: Any) -> Any:
    """The dynamic-padding collator for a pipeline's rows."""
    tok = model.tokenizer
    pad = tok.pad_token_id if tok is not None else 0
    if pad is None:
        pad = getattr(tok, "eos_token_id", None) or 0
    return pipe.collator(pad)


def select_items(items: Sequence[Any], cfg: RunConfig, has_valid: bool) -> tuple[list[Any], list[Any] | None]:
    """Training items (first N after a seeded shuffle) and validation items, exactly as for table rows.

    Reuses :func:`bertkit.training.run.select_rows` on the item indices (no stratification).
    """
    from bertkit.training.run import select_rows

    if len(items) < 2 and not has_valid:
        raise DataError(f"{len(items)} example(s) are too few to split off validation data; pass --valid")
    frame = pd.DataFrame({"i": np.arange(len(items))})
    train, valid = select_rows(frame, cfg, SimpleNamespace(task="token", label_columns=[]), has_valid)  # type: ignore[arg-type]
    pick = lambda f: [items[int(i)] for i in f["i"]]  # noqa: E731
    return pick(train), None if valid is None else pick(valid)


def create_task_model(
    cfg: RunConfig,
    tokenizer: Any,
    head_type: str,
    label_names: list[str],
    extra: dict[str, Any],
    metadata: dict[str, Any],
) -> Any:
    """Build the backbone (``cfg.model``) with a task head, as the sequence pipeline's ``build_model`` does."""
    from bertkit.factory import create_bert_with_head

    if cfg.model.head not in (None, head_type):
        raise ConfigError(f"head '{cfg.model.head}' does not fit this task; it uses '{head_type}'")
    opts = {k: v for k, v in cfg.model.head_options.items() if k != "extra"}
    bert_config = dict(cfg.model.bert_options)
    return create_bert_with_head(
        head_type=head_type,
        num_labels=len(label_names),
        label_names=label_names,
        bert_name=cfg.model.backbone if not bert_config.get("model_name_or_path") else None,
        bert_config=bert_config or None,
        pooling_type=cfg.model.pooling,
        tokenizer=tokenizer,
        freeze_bert_layers=cfg.model.freeze_bert_layers,
        metadata=metadata,
        extra=extra,
        **opts,
    )


def _read_labelled(pipe: TaskPipeline, path: str | Path, what: str) -> list[Any]:
    items = pipe.read(path)
    if not pipe.is_labelled(items):
        raise DataError(
            f"{path}: {what} needs gold annotations (tags, entities, answers or labels) on every record"
        )
    return items


def _training_config(pipe: TaskPipeline, cfg: RunConfig) -> Any:
    tc = copy.deepcopy(cfg.training)
    if pipe.best_metric and tc.metric_for_best_model is None:
        tc.metric_for_best_model = pipe.best_metric
    return tc


def _metrics_fn(
    pipe: TaskPipeline, model: Any, cache: dict[int, list[Any]]
) -> Callable[..., dict[str, float]]:
    def fn(outputs: dict[str, np.ndarray], ds: TaskDataset) -> dict[str, float]:
        preds = pipe.decode(model, ds, outputs)
        cache[id(ds)] = preds
        return pipe.score(model, ds.items, preds)

    return fn


def _tokenizer(cfg: RunConfig) -> Any:
    from bertkit.model import load_tokenizer

    return load_tokenizer(cfg.model.backbone if not cfg.model.bert_options.get("model_type") else None)


def _predict(pipe: TaskPipeline, model: Any, trainer: Any, ds: TaskDataset) -> tuple[list[Any], float | None]:
    outputs = trainer.predict(ds)
    loss = outputs.pop("loss", None)
    return pipe.decode(model, ds, outputs), None if loss is None else float(loss)


def _scoring_dataset(pipe: TaskPipeline, model: Any, items: Sequence[Any], labelled: bool) -> TaskDataset:
    """Rows for scoring: with targets (so the loss is reported) unless some gold label is unknown to the
    model, in which case the rows are built without targets and only the metrics are computed."""
    if labelled:
        try:
            return pipe.dataset(model, items, True)
        except DataError as exc:
            logger.warning("no loss for this split: %s", exc)
    return pipe.dataset(model, items, False)


def _write_report(
    out: Path, model: Any, metrics: dict[str, Any], cfg: RunConfig, history: pd.DataFrame
) -> None:
    from bertkit.training.run import _write_report as write_run_report

    write_run_report(out, model, metrics, cfg, history, {})


# ------------------------------------------------------------------------------------------------ train
def train_task(
    pipeline: PipelineType,
    train: str | Path,
    output_dir: str | Path,
    cfg: RunConfig,
    valid: str | Path | None = None,
    test: str | Path | None = None,
    resume: bool = False,
) -> dict[str, Any]:
    """Train one model and write the run folder; returns the metrics written to ``metrics.json``.

    Files: ``model/``, ``config.yaml``, ``profile.json``, ``history.csv``, ``metrics.json`` (``valid`` /
    ``test`` sections), ``valid_predictions.*`` / ``test_predictions.*`` in the input's format, ``report.html``.
    """
    from bertkit.training.trainer import Trainer

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    pipe = pipeline.from_config(cfg)
    tokenizer = _tokenizer(cfg)
    items = _read_labelled(pipe, train, "training")
    train_items, valid_items = select_items(items, cfg, valid is not None)
    if valid is not None:
        valid_items = _read_labelled(pipe, valid, "validation")
    test_items = pipe.read(test) if test is not None else None
    model = pipe.build_model(cfg, tokenizer, train_items, valid_items or [])
    train_ds = pipe.dataset(model, train_items, True)
    valid_ds = pipe.dataset(model, valid_items, True) if valid_items else None
    write_text_atomic(out / "config.yaml", cfg.to_yaml())
    write_json_atomic(out / "profile.json", pipe.profile(items, tokenizer, str(train)).to_dict())
    cache: dict[int, list[Any]] = {}
    trainer = Trainer(
        model,
        out,
        _training_config(pipe, cfg),
        collator=collator_for(pipe, model),
        metrics_fn=_metrics_fn(pipe, model, cache),
    )
    result = trainer.train(train_ds, valid_ds, resume_from="auto" if resume else None)
    post = pipe.finish(model, trainer, valid_ds)
    if post and trainer.is_main:
        model.save_pretrained(out / "model")
    metrics: dict[str, Any] = {
        "valid": result.val_metrics,
        "train_seconds": round(result.train_seconds, 3),
        "train_samples_per_second": round(result.train_samples_per_second, 3),
        "train_tokens_per_second": round(result.train_tokens_per_second, 3),
        "train_rows": len(train_items),
        "train_windows": len(train_ds),
        "valid_rows": len(valid_items or []),
    }
    if post:
        metrics["postprocessing"] = post
    source = valid if valid is not None else train
    for split, split_items, path in (("valid", valid_items, source), ("test", test_items, test)):
        if not split_items:
            continue
        labelled = pipe.is_labelled(split_items)
        ds = valid_ds if split == "valid" else _scoring_dataset(pipe, model, split_items, labelled)
        assert ds is not None
        fresh = split == "valid" and not post and result.best_step in (None, result.global_step)
        if fresh and id(ds) in cache:
            preds = cache[id(ds)]
        else:
            preds, loss = _predict(pipe, model, trainer, ds)
            if labelled:
                metrics[split] = {
                    **({"loss": loss} if loss is not None else {}),
                    **pipe.score(model, split_items, preds),
                }
        pipe.write(out / f"{split}_predictions{pipe.output_suffix(path)}", split_items, preds)
    write_json_atomic(out / "metrics.json", metrics)
    _write_report(out, model, metrics, cfg, result.history)
    return metrics


# ---------------------------------------------------------------------------------------------------- cv
def make_item_folds(
    pipe: TaskPipeline, items: Sequence[Any], k: int, seed: int, group_column: str | None = None
) -> np.ndarray:
    """Fold index of every item: GroupKFold on a group column (or the pipeline's default groups, e.g. the
    QA context), else shuffled KFold."""
    from sklearn.model_selection import GroupKFold, KFold

    if k < 2:
        raise ConfigError(f"--folds must be >= 2, got {k}")
    if k > len(items):
        raise DataError(f"cannot split {len(items)} examples into {k} folds")
    idx = np.arange(len(items))
    groups = [pipe.group_of(it, group_column) for it in items] if group_column else pipe.default_groups(items)
    if groups is not None and len(set(groups)) < k:
        if group_column:
            raise DataError(
                f"group column '{group_column}' has {len(set(groups))} groups, fewer than {k} folds"
            )
        groups = None
    splits = (
        GroupKFold(n_splits=k).split(idx, groups=groups)
        if groups is not None
        else KFold(n_splits=k, shuffle=True, random_state=seed).split(idx)
    )
    folds = np.full(len(items), -1, dtype=np.int64)
    for fold, (_, valid_idx) in enumerate(splits):
        folds[valid_idx] = fold
    return folds


def cv_task(
    pipeline: PipelineType,
    data: str | Path,
    output_dir: str | Path,
    cfg: RunConfig,
    folds: int = 5,
    group_column: str | None = None,
    test: str | Path | None = None,
) -> dict[str, Any]:
    """K-fold cross-validation: ``fold_k/`` models, ``oof.*`` (input format), ``folds.csv``, ``fold_metrics.json``,
    ``metrics.json`` (``oof``, ``folds``, ``fold_summary``) and fold-combined ``test_predictions.*``."""
    from bertkit.training.trainer import Trainer

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    pipe = pipeline.from_config(cfg)
    tokenizer = _tokenizer(cfg)
    items = _read_labelled(pipe, data, "cross-validation")
    n = cfg.data.max_train_samples
    if n is not None and n < len(items):
        keep = np.sort(np.random.default_rng(cfg.training.seed).permutation(len(items))[:n])
        items = [items[int(i)] for i in keep]
    fold_of = make_item_folds(pipe, items, folds, cfg.training.seed, group_column or cfg.data.group_column)
    write_text_atomic(out / "config.yaml", cfg.to_yaml())
    write_json_atomic(out / "profile.json", pipe.profile(items, tokenizer, str(data)).to_dict())
    fold_cfg = copy.deepcopy(cfg)
    fold_cfg.training.calibrate = False
    test_items = pipe.read(test) if test is not None else None
    oof: list[Any] = [None] * len(items)
    fold_metrics: list[dict[str, Any]] = []
    test_preds: list[list[Any]] = []
    model = None
    for fold in range(folds):
        tr = [items[i] for i in np.flatnonzero(fold_of != fold)]
        va_idx = np.flatnonzero(fold_of == fold)
        va = [items[i] for i in va_idx]
        logger.info("fold %d/%d: %d train, %d valid examples", fold + 1, folds, len(tr), len(va))
        model = pipe.build_model(fold_cfg, tokenizer, tr, va)
        tr_ds, va_ds = pipe.dataset(model, tr, True), pipe.dataset(model, va, True)
        trainer = Trainer(
            model,
            out / f"fold_{fold}",
            _training_config(pipe, fold_cfg),
            collator=collator_for(pipe, model),
            metrics_fn=_metrics_fn(pipe, model, {}),
        )
        result = trainer.train(tr_ds, va_ds)
        pipe.finish(model, trainer, va_ds)
        preds, loss = _predict(pipe, model, trainer, va_ds)
        fold_metrics.append(
            {
                "fold": fold,
                "rows": len(va),
                "train_seconds": round(result.train_seconds, 3),
                "train_samples_per_second": round(result.train_samples_per_second, 3),
                **({"loss": loss} if loss is not None else {}),
                **pipe.score(model, va, preds),
            }
        )
        for i, p in zip(va_idx, preds):
            oof[int(i)] = p
        if test_items:
            test_ds = pipe.dataset(model, test_items, False)
            test_preds.append(_predict(pipe, model, trainer, test_ds)[0])
        write_json_atomic(out / "fold_metrics.json", fold_metrics)
    assert model is not None
    per_fold = pd.DataFrame(fold_metrics)
    summary = {
        c: {"mean": float(per_fold[c].mean()), "std": float(per_fold[c].std(ddof=0))}
        for c in per_fold.columns
        if c not in ("fold", "rows") and pd.api.types.is_numeric_dtype(per_fold[c])
    }
    metrics_out = {
        "oof": pipe.score(model, items, oof),
        "folds": fold_metrics,
        "fold_summary": summary,
        "num_folds": folds,
        "train_seconds": float(per_fold["train_seconds"].sum()),
    }
    suffix = pipe.output_suffix(data)
    pipe.write(out / f"oof{suffix}", items, oof)
    frame = pd.DataFrame(
        {"item": np.arange(len(items)), "line": [getattr(it, "line", 0) for it in items], "fold": fold_of}
    )
    write_with_atomic(out / "folds.csv", lambda p: frame.to_csv(p, index=False))
    if test_items and test is not None:
        pipe.write(
            out / f"test_predictions{pipe.output_suffix(test)}", test_items, pipe.combine(model, test_preds)
        )
    write_json_atomic(out / "metrics.json", metrics_out)
    return metrics_out


# ------------------------------------------------------------------------------------- predict / evaluate
def load_task_model(pipeline: PipelineType, model_dir: str | Path) -> tuple[TaskPipeline, Any]:
    """A saved model (run or model folder) and the pipeline it was trained with."""
    from bertkit.model import BertWithHead
    from bertkit.persistence import check_model_folder

    model = BertWithHead.from_pretrained(check_model_folder(model_dir))
    if model.tokenizer is None:
        raise ConfigError(f"{model_dir} has no tokenizer files; save the model with its tokenizer")
    return pipeline.from_model(model), model


def model_outputs(
    pipe: TaskPipeline, model: Any, ds: TaskDataset, batch_size: int = 64
) -> dict[str, np.ndarray]:
    """Outputs of ``model`` over ``ds`` on the best available device (input order)."""
    from bertkit.inference.batched import predict_outputs
    from bertkit.inference.predictor import pick_device

    device = pick_device("auto")
    model.to(device).eval()
    return predict_outputs(model, ds, collator_for(pipe, model), batch_size, device)


def predict_task(
    pipeline: PipelineType,
    model_dir: str | Path,
    data: str | Path,
    output: str | Path,
    id_column: str | None = None,
    proba: bool = False,
    batch_size: int = 64,
) -> Path:
    """Predict a file and write the predictions in its own format to ``output`` (``id_column`` is unused:
    records keep their own fields)."""
    pipe, model = load_task_model(pipeline, model_dir)
    items = pipe.read(data)
    ds = pipe.dataset(model, items, False)
    outputs = model_outputs(pipe, model, ds, batch_size)
    output = Path(output)
    pipe.write(output, items, pipe.decode(model, ds, outputs), proba=proba)
    return output


def evaluate_task(
    pipeline: PipelineType, model_dir: str | Path, data: str | Path, batch_size: int = 64
) -> dict[str, Any]:
    """Metrics of a saved model on a labelled file (plus ``loss`` and ``rows``)."""
    pipe, model = load_task_model(pipeline, model_dir)
    items = _read_labelled(pipe, data, "evaluate")
    ds = _scoring_dataset(pipe, model, items, True)
    outputs = model_outputs(pipe, model, ds, batch_size)
    loss = outputs.pop("loss", None)
    metrics: dict[str, Any] = {} if loss is None else {"loss": float(loss)}
    metrics.update(pipe.score(model, items, pipe.decode(model, ds, outputs)))
    metrics["rows"] = len(items)
    return metrics


def analyze_task(pipeline: PipelineType, source: str | Path, cfg: RunConfig) -> Any:
    """The task profile of a data file (``bertkit analyze``)."""
    pipe = pipeline.from_config(cfg)
    return pipe.profile(pipe.read_for_analysis(source), _tokenizer(cfg), str(source))


def make_runner(
    name: str,
    tasks: tuple[str, ...],
    pipeline: PipelineType,
    detect: Callable[[Path], bool],
    priority: int = 10,
) -> TaskRunner:
    """A :class:`TaskRunner` whose entry points are the drivers above bound to ``pipeline``."""

    def train(
        data: Any, output_dir: Any, cfg: RunConfig, valid: Any = None, test: Any = None, resume: bool = False
    ) -> dict[str, Any]:
        return train_task(pipeline, data, output_dir, cfg, valid=valid, test=test, resume=resume)

    def cross_validate(
        data: Any,
        output_dir: Any,
        cfg: RunConfig,
        folds: int = 5,
        group_column: str | None = None,
        test: Any = None,
    ) -> dict[str, Any]:
        return cv_task(pipeline, data, output_dir, cfg, folds=folds, group_column=group_column, test=test)

    def predict(
        model_dir: Any,
        data: Any,
        output: Any,
        id_column: str | None = None,
        proba: bool = False,
        batch_size: int = 64,
    ) -> Path:
        return predict_task(
            pipeline, model_dir, data, output, id_column=id_column, proba=proba, batch_size=batch_size
        )

    def evaluate(model_dir: Any, data: Any, batch_size: int = 64) -> dict[str, Any]:
        return evaluate_task(pipeline, model_dir, data, batch_size=batch_size)

    def analyze(source: Any, cfg: RunConfig) -> Any:
        return analyze_task(pipeline, source, cfg)

    return TaskRunner(
        name=name,
        tasks=tasks,
        analyze=analyze,
        train=train,
        cross_validate=cross_validate,
        predict=predict,
        evaluate=evaluate,
        detect=detect,
        priority=priority,
    )
