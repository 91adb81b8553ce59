"""The ``multitask`` task runner: ``bertkit train multitask.yaml --output RUN`` and the MBTI-style preset.

* A ``.yaml``/``.yml`` DATA file with a ``tasks:`` mapping is detected as a multi-task run.
* ``--task mbti`` (or ``--task type_dimensions`` with ``--set model.head_options.extra.dimensions=...``) on a
  table with a type-string column trains the named-binary-dimensions preset: CLS pooling, dropout 0.1, one
  logit per dimension, BCE averaged over dimensions (``loss_type: focal`` and ``extra.pos_weights`` work),
  type names masked in the text; predictions are the composed type ("INTJ") and every letter's probability.
* ``bertkit predict RUN data --task NAME`` predicts one task; ``bertkit evaluate RUN multitask.yaml``
  scores every task on its test file.

Run folder: ``model/``, ``config.yaml``, ``metrics.json`` (every task's metrics), ``history.csv``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bertkit.errors import ConfigError, DataError
from bertkit.fileio import write_json_atomic, write_text_atomic, write_with_atomic
from bertkit.multitask.config import MultiTaskConfig, TaskSpec, is_multitask_yaml, load_multitask_config
from bertkit.multitask.data import (
    RowsDataset,
    TaskData,
    collator_for,
    compose_types,
    dimension_split,
    load_task,
    mask_type_names,
    ner_windows,
    ner_word_tags,
    primary_metric,
    run_outputs,
    shuffled_head,
    task_metrics,
)
from bertkit.runners import TaskRunner, register_runner

logger = logging.getLogger(__name__)


# ------------------------------------------------------------------------------------------------ train
def train_multitask(
    config: MultiTaskConfig | str | Path, output_dir: str | Path, overrides: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Train a multi-task config (object or YAML path) and write the run folder; returns metrics.json's dict."""
    from bertkit.model import load_tokenizer
    from bertkit.multitask.model import create_multi_task_model
    from bertkit.multitask.parity import count_trainable_parameters
    from bertkit.multitask.trainer import MultiTaskTrainer

    cfg = config if isinstance(config, MultiTaskConfig) else load_multitask_config(config, overrides)
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    tr, mo = cfg.training, cfg.model
    tokenizer = load_tokenizer(mo.backbone)
    tasks = {
        name: load_task(name, spec, tokenizer, tr.max_length, tr.truncation, tr.seed)
        for name, spec in cfg.tasks.items()
    }
    model = create_multi_task_model(
        {t: d.head_config for t, d in tasks.items()},
        bert_name=mo.backbone,
        use_task_specific_projections=mo.use_task_specific_projections,
        adapters=cfg.adapters,
        bert_config=dict(mo.bert_options) or None,
        tokenizer=tokenizer,
        metadata={"tasks": {t: d.info for t, d in tasks.items()}, "max_length": tr.max_length},
        quantization=mo.quantization,
        gradient_checkpointing=mo.gradient_checkpointing,
        attn_implementation=mo.attn_implementation,
    )
    trainable = count_trainable_parameters(model)
    write_text_atomic(out / "config.yaml", cfg.to_yaml())
    trainer = MultiTaskTrainer(model, tasks, tr, history_path=out / "history.csv")
    result = trainer.train()
    test = trainer.evaluate("test")
    model.save_pretrained(out / "model")
    metrics: dict[str, Any] = {
        "valid": _summary(model, tasks, result.val_metrics),
        "test": _summary(model, tasks, test),
        "tasks": {
            t: {
                "primary_metric": primary_metric(model, d)[0],
                "train_rows": len(d.train),
                "steps": result.task_steps[t],
                "weight": d.weight,
                "valid": result.val_metrics.get(t, {}),
                "test": test.get(t, {}),
            }
            for t, d in tasks.items()
        },
        "valid_score": result.best_score,
        "best_step": result.best_step,
        "global_step": result.global_step,
        "adapter_strategy": cfg.adapters.strategy,
        "trainable_parameters": trainable,
        "total_parameters": sum(p.numel() for p in model.parameters()),
        "train_seconds": round(result.train_seconds, 3),
        "pcgrad_conflicts": result.pcgrad_conflicts,
        "training": {
            "loss_weights": result.loss_weights,
            "sampling_probabilities": result.sampling_probabilities,
            "sampling": tr.sampling,
            "gradient_surgery": tr.gradient_surgery,
            "gradient_balance": tr.gradient_balance,
            "loss_weighting": tr.loss_weighting,
        },
        "load_plan": model.metadata.get("load_plan"),
    }
    write_json_atomic(out / "metrics.json", metrics)
    write_text_atomic(out / "report.html", html_report(metrics))
    return metrics


def html_report(metrics: dict[str, Any]) -> str:
    """A small self-contained HTML page: every task's validation and test metrics, and the run facts."""
    from html import escape

    def table(rows: dict[str, Any]) -> str:
        cells = "".join(
            f"<tr><td>{escape(str(k))}</td><td>{v:.4f}</td></tr>"
            if isinstance(v, float)
            else f"<tr><td>{escape(str(k))}</td><td>{escape(str(v))}</td></tr>"
            for k, v in rows.items()
        )
        return f"<table>{cells}</table>"

    parts = [
        "<html><head><meta charset='utf-8'><title>bertkit multi-task run</title>",
        "<style>body{font-family:sans-serif} td{padding:2px 10px} table{border-collapse:collapse}</style>",
        "</head><body><h1>bertkit multi-task run</h1>",
    ]
    facts = {k: v for k, v in metrics.items() if not isinstance(v, dict | list)}
    parts.append(table(facts))
    for task, values in metrics["tasks"].items():
        parts.append(f"<h2>{escape(task)}</h2><p>primary metric: {escape(str(values['primary_metric']))}</p>")
        for split in ("valid", "test"):
            if values.get(split):
                parts.append(f"<h3>{split}</h3>{table(values[split])}")
    parts.append("</body></html>")
    return "\n".join(parts)


def _summary(
    model: Any, tasks: dict[str, TaskData], metrics: dict[str, dict[str, float]]
) -> dict[str, float]:
    """``task.metric`` → value for each task's primary metric, loss and dimension accuracies (CLI table)."""
    out: dict[str, float] = {}
    for t, values in metrics.items():
        name = primary_metric(model, tasks[t])[0]
        keys = [name, "loss"] + [
            k for k in values if k.startswith(("accuracy_", "all_dimensions", "baseline_"))
        ]
        out.update({f"{t}.{k}": float(values[k]) for k in dict.fromkeys(keys) if k in values})
    return out


def _single_task_config(train: Any, cfg: Any, valid: Any, test: Any) -> MultiTaskConfig:
    """The one-task multi-task config behind ``--task mbti`` / ``--task type_dimensions``."""
    extra = dict(cfg.model.head_options.get("extra", {}))
    dims = "mbti" if cfg.data.task == "mbti" else extra.pop("dimensions", None)
    if dims is None:
        raise ConfigError(
            "--task type_dimensions needs --set model.head_options.extra.dimensions=[[A,B],...]"
        )
    opts = {k: v for k, v in cfg.model.head_options.items() if k != "extra"}
    if extra:
        opts["extra"] = extra
    loss = opts.pop("loss_type", "bce")
    spec = TaskSpec(
        train=str(train),
        valid=None if valid is None else str(valid),
        test=None if test is None else str(test),
        text_column=cfg.data.text_column,
        label_column=cfg.data.label_column,
        max_train_samples=cfg.data.max_train_samples,
        type_dimensions=dims,
        head_options=opts,
        loss=loss,
    )
    from bertkit.multitask.config import ModelOptions, MultiTaskTrainingConfig

    model = ModelOptions(
        backbone=cfg.model.backbone,
        bert_options=dict(cfg.model.bert_options),
        use_task_specific_projections=False,
    )
    return MultiTaskConfig(
        tasks={"mbti" if cfg.data.task == "mbti" else "types": spec},
        model=model,
        training=MultiTaskTrainingConfig.from_dict(cfg.training.to_dict()),
    )


def _train(
    train: Any, output_dir: Any, cfg: Any, valid: Any = None, test: Any = None, resume: bool = False
) -> dict[str, Any]:
    if resume:
        raise ConfigError("--resume is not supported for multi-task runs yet; start the run again")
    path = Path(train) if isinstance(train, str | Path) else None
    if path is not None and is_multitask_yaml(path):
        mt = load_multitask_config(path)
        if cfg.data.max_train_samples:
            for spec in mt.tasks.values():
                spec.max_train_samples = spec.max_train_samples or cfg.data.max_train_samples
        return train_multitask(mt, output_dir)
    if cfg.data.task in ("mbti", "type_dimensions"):
        return train_multitask(_single_task_config(train, cfg, valid, test), output_dir)
    raise ConfigError(f"{train} is not a multi-task YAML (a .yaml file with a 'tasks:' mapping)")


# ------------------------------------------------------------------------------------ predict / evaluate
def _load_model(model_dir: Any) -> tuple[Any, Any]:
    """The saved model on the best available device."""
    from bertkit.inference.predictor import pick_device
    from bertkit.multitask.model import MultiTaskModel

    device = pick_device("auto")
    return MultiTaskModel.from_pretrained(model_dir).to_device(device), device


def _pick_task(model: Any, task: str | None) -> str:
    if task is None:
        if len(model.task_names) == 1:
            return model.task_names[0]
        raise ConfigError(
            f"this model has several tasks; choose one with --task ({', '.join(model.task_names)})"
        )
    if task not in model.task_names:
        raise ConfigError(f"unknown task '{task}'; this model's tasks: {', '.join(model.task_names)}")
    return task


def split_data(
    model: Any, task: str, path: Any, labelled: bool = True, max_samples: int | None = None, seed: int = 0
) -> TaskData:
    """A :class:`TaskData` whose ``test`` split is ``path``, read the way the task was trained."""
    from bertkit.data import DatasetProfile
    from bertkit.runconfig import RunConfig
    from bertkit.training.run import make_dataset

    info = dict(model.metadata.get("tasks", {}).get(task, {}))
    kind = info.get("kind", "table")
    data = TaskData(task, kind, {}, info)
    tok = model.tokenizer
    if kind == "ner":
        from bertkit.tasks.ner import read_ner

        docs = [d for d in read_ner(path, info["scheme"]) if d.tokens]
        docs = [docs[i] for i in np.sort(shuffled_head(len(docs), max_samples, seed))]
        labelled = labelled and all(d.tags is not None for d in docs)
        windows = ner_windows(docs, tok, info, labelled)
        data.test, data.extras["test"] = RowsDataset(windows, labelled), (docs, windows)
    elif kind == "dimensions":
        data.test = dimension_split(str(path), info, tok, max_samples, seed)
    else:
        from bertkit.data import read_table

        profile = DatasetProfile.from_dict(info["profile"])
        rc = RunConfig.from_dict(
            {"training": {"max_length": info["max_length"], "truncation": info["truncation"]}}
        )
        df = read_table(path)
        data.test = make_dataset(df.iloc[shuffled_head(len(df), max_samples, seed)], profile, tok, rc)[0]
    return data


def evaluate_multitask(
    model_dir: Any, data: Any, batch_size: int = 64, task: str | None = None
) -> dict[str, Any]:
    """Metrics of one task on a labelled file, or of every task on its test file (``data`` = the YAML)."""

    model, device = _load_model(model_dir)
    if is_multitask_yaml(Path(data)):
        mt = load_multitask_config(data)
        jobs = [
            (t, s.test, s.max_eval_samples, mt.training.seed)
            for t, s in mt.tasks.items()
            if s.test and t in model.task_names and task in (None, t)
        ]
    else:
        jobs = [(_pick_task(model, task), data, None, 0)]
    out: dict[str, Any] = {}
    for name, path, max_samples, seed in jobs:
        split = split_data(model, name, path, max_samples=max_samples, seed=seed)
        outputs = run_outputs(
            model, name, split.test, collator_for(split.kind, model.tokenizer), batch_size, device
        )
        metrics = task_metrics(model, split, "test", outputs)
        out.update({f"{name}.{k}": v for k, v in metrics.items()} if len(jobs) > 1 else metrics)
    return out


def predict_multitask(
    model_dir: Any,
    data: Any,
    output: Path,
    id_column: str | None = None,
    proba: bool = False,
    batch_size: int = 64,
    task: str | None = None,
) -> Path:
    """Write one task's predictions: CSV for tables/type strings, the input's own format for NER."""
    from bertkit.data import DatasetProfile, prepare_frame, read_table, tokenize_texts
    from bertkit.data.tokenize import TokenizedDataset

    model, device = _load_model(model_dir)
    name = _pick_task(model, task)
    info = model.metadata.get("tasks", {}).get(name, {})
    head = model.get_head(name)
    output = Path(output)
    if info.get("kind") == "ner":
        from bertkit.tasks.ner import write_ner

        split = split_data(model, name, data, labelled=False)
        docs, windows = split.extras["test"]
        outputs = run_outputs(
            model, name, split.test, collator_for("ner", model.tokenizer), batch_size, device
        )
        write_ner(output, docs, ner_word_tags(outputs, docs, windows, info))
        return output
    df = read_table(data)
    if info.get("kind") == "dimensions":
        if info["text_column"] not in df.columns:
            raise DataError(f"{data} lacks the text column '{info['text_column']}'")
        rows = np.arange(len(df))
        texts = df[info["text_column"]].fillna("").astype(str).tolist()
        if info.get("mask_type_names"):
            texts = mask_type_names(texts, info["dimensions"], info.get("mask_token", "[MASK]"))
        feats = tokenize_texts(
            model.tokenizer, texts, None, max_length=info["max_length"], truncation=info["truncation"]
        )
        outputs = run_outputs(
            model, name, TokenizedDataset(feats), collator_for("table", model.tokenizer), batch_size, device
        )
        dims, p = info["dimensions"], outputs["probabilities"]
        cols: dict[str, Any] = {"prediction": compose_types(outputs["predictions"], dims)}
        for j, (a, b) in enumerate(dims):
            cols[f"prob_{a}"], cols[f"prob_{b}"] = (1 - p[:, j]).tolist(), p[:, j].tolist()
        ids = df[id_column].tolist() if id_column else None
    else:
        profile = DatasetProfile.from_dict(info["profile"])
        prepared = prepare_frame(
            df, profile, require_labels=False, sep_token=model.tokenizer.sep_token or "[SEP]"
        )
        feats = tokenize_texts(
            model.tokenizer,
            prepared.texts_a,
            prepared.texts_b,
            max_length=info["max_length"],
            truncation=info["truncation"] if prepared.texts_b is None else "head",
        )
        outputs = run_outputs(
            model, name, TokenizedDataset(feats), collator_for("table", model.tokenizer), batch_size, device
        )
        cols = head.format_predictions(outputs, proba=proba)
        if "prediction" in cols and len(profile.label_columns) == 1:
            cols = {profile.label_columns[0]: cols.pop("prediction"), **cols}
        rows = prepared.row_index
        id_column = id_column or (profile.id_column if profile.id_column in df.columns else None)
        ids = df[id_column].iloc[rows].tolist() if id_column else None
    if id_column and id_column not in df.columns:
        raise DataError(
            f"id column '{id_column}' is not in {data}; columns: {', '.join(map(str, df.columns))}"
        )
    frame = pd.DataFrame(cols, index=rows).reindex(range(len(df)))
    if ids is not None:
        frame.insert(0, id_column, pd.Series(ids, index=rows).reindex(range(len(df))).values)
    write_with_atomic(output, lambda p: frame.reset_index(drop=True).to_csv(p, index=False))
    return output


# ------------------------------------------------------------------------------------------------ analyze
class MultiTaskSummary:
    """What ``bertkit analyze multitask.yaml`` prints: one line per task."""

    def __init__(self, config: MultiTaskConfig) -> None:
        self.config = config

    def to_dict(self) -> dict[str, Any]:
        return self.config.to_dict()

    def summary(self) -> str:
        cfg = self.config
        lines = [
            f"multi-task run: backbone={cfg.model.backbone} strategy={cfg.adapters.strategy} "
            f"sampling={cfg.training.sampling} surgery={cfg.training.gradient_surgery}"
        ]
        for name, s in cfg.tasks.items():
            kind = "dimensions" if s.type_dimensions else s.resolved_format()
            lines.append(
                f"  {name:<14} {kind:<10} head={s.head or 'auto':<26} weight={s.weight:<5} train={s.train}"
            )
        return "\n".join(lines)


def _analyze(source: Any, cfg: Any, backbone: str | None = None) -> Any:
    if is_multitask_yaml(Path(source)):
        return MultiTaskSummary(load_multitask_config(source))
    if cfg.data.task in ("mbti", "type_dimensions"):
        return MultiTaskSummary(_single_task_config(source, cfg, None, None))
    raise ConfigError(f"{source} is not a multi-task YAML")


def _cv(*args: Any, **kwargs: Any) -> dict[str, Any]:
    raise ConfigError("cross-validation is not supported for multi-task runs; use bertkit train")


def _predict(
    model_dir: Any,
    data: Any,
    output: Path,
    id_column: str | None = None,
    proba: bool = False,
    batch_size: int = 64,
    task: str | None = None,
) -> Path:
    return predict_multitask(model_dir, data, output, id_column, proba, batch_size, task)


def _evaluate(model_dir: Any, data: Any, batch_size: int = 64, task: str | None = None) -> dict[str, Any]:
    return evaluate_multitask(model_dir, data, batch_size, task)


MULTITASK_RUNNER = register_runner(
    TaskRunner(
        name="multitask",
        tasks=("multitask", "mbti", "type_dimensions"),
        analyze=_analyze,
        train=_train,
        cross_validate=_cv,
        predict=_predict,
        evaluate=_evaluate,
        detect=is_multitask_yaml,
        priority=100,
    )
)
