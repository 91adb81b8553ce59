"""``analyze``, ``train``, ``cv``, ``evaluate`` and ``predict``: the main job."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from bertkit.cli._common import (
    Backbone,
    BatchSize,
    ConfigFile,
    Epochs,
    GroupColumn,
    HeadName,
    IdColumn,
    LabelColumn,
    LearningRate,
    MaxLength,
    MaxTrainSamples,
    Pooling,
    Preset,
    Seed,
    Sets,
    Strict,
    Task,
    TextColumn,
    TextColumns,
    TimeColumn,
    _data_overrides,
    _guard,
    _print_metrics,
    _quiet_libraries,
    _run_config,
    _training_options,
    app,
)


@app.command()
def analyze(
    data: Annotated[Path, typer.Argument(help="CSV/TSV/Parquet/JSONL file.")],
    text_column: TextColumn = None,
    text_columns: TextColumns = None,
    label_column: LabelColumn = None,
    id_column: IdColumn = None,
    group_column: GroupColumn = None,
    time_column: TimeColumn = None,
    task: Annotated[str | None, typer.Option(help="Force the task instead of detecting it.")] = None,
    backbone: Annotated[str, typer.Option(help="Tokenizer used for token-length statistics.")] = "minilm",
    as_json: Annotated[bool, typer.Option("--json", help="Print the profile as JSON.")] = False,
) -> None:
    """Detect the task, columns and labels of a data file and recommend head, pooling, loss and max_length.

    Example: [bold]bertkit analyze train.csv --label-column target[/bold]
    """
    _quiet_libraries()

    def body() -> None:
        from bertkit.runners import runner_for

        cfg = _run_config(
            "default",
            None,
            None,
            _data_overrides(
                text_column, text_columns, label_column, id_column, task, group_column, time_column
            ),
            {"backbone": backbone},
            {},
        )
        profile = runner_for(data, cfg.data.task).analyze(data, cfg)
        typer.echo(json.dumps(profile.to_dict(), indent=2) if as_json else profile.summary())

    _guard(body)


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="Training file (CSV/TSV/Parquet/JSONL).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Run folder to write.")],
    valid: Annotated[Path | None, typer.Option(help="Validation file (default: split from DATA).")] = None,
    test: Annotated[
        Path | None, typer.Option(help="Labelled or unlabelled test file to score/predict.")
    ] = None,
    task: Task = "auto",
    text_column: TextColumn = None,
    text_columns: TextColumns = None,
    label_column: LabelColumn = None,
    id_column: IdColumn = None,
    group_column: GroupColumn = None,
    time_column: TimeColumn = None,
    backbone: Backbone = None,
    head: HeadName = None,
    pooling: Pooling = None,
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    lr: LearningRate = None,
    max_length: MaxLength = None,
    max_train_samples: MaxTrainSamples = None,
    seed: Seed = None,
    preset: Preset = "default",
    config: ConfigFile = None,
    set_: Sets = None,
    strict: Strict = False,
    resume: Annotated[bool, typer.Option(help="Continue from the run folder's latest checkpoint.")] = False,
) -> None:
    """Fine-tune a model on DATA and write a run folder (model/, metrics.json, history.csv, report.html).

    Example: [bold]bertkit train train.csv --test test.csv --output runs/sst2 --epochs 1 --max-train-samples 4000[/bold]
    """
    _quiet_libraries()

    def body() -> None:
        from bertkit.runners import runner_for

        data_o = _data_overrides(
            text_column, text_columns, label_column, id_column, task, group_column, time_column
        )
        if max_train_samples is not None:
            data_o["max_train_samples"] = max_train_samples
        if strict:
            data_o["strict"] = True
        cfg = _run_config(
            preset,
            config,
            set_,
            data_o,
            {"backbone": backbone, "head": head, "pooling": pooling},
            _training_options(epochs, batch_size, lr, max_length, seed),
        )
        metrics = runner_for(data, cfg.data.task).train(
            data, output, cfg, valid=valid, test=test, resume=resume
        )
        _print_metrics(f"bertkit train → {output}", metrics)
        typer.echo(f"model: {output / 'model'}   report: {output / 'report.html'}")

    _guard(body)


@app.command()
def cv(
    data: Annotated[Path, typer.Argument(help="Training file.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Run folder to write.")],
    folds: Annotated[int, typer.Option(help="Number of folds.")] = 5,
    group_column: Annotated[
        str | None, typer.Option(help="GroupKFold on this column (the sequence id with --time-column).")
    ] = None,
    time_column: TimeColumn = None,
    test: Annotated[Path | None, typer.Option(help="Test file: predictions averaged over folds.")] = None,
    task: Task = "auto",
    text_column: TextColumn = None,
    text_columns: TextColumns = None,
    label_column: LabelColumn = None,
    id_column: IdColumn = None,
    backbone: Backbone = None,
    head: HeadName = None,
    pooling: Pooling = None,
    epochs: Epochs = None,
    batch_size: BatchSize = None,
    lr: LearningRate = None,
    max_length: MaxLength = None,
    max_train_samples: MaxTrainSamples = None,
    seed: Seed = None,
    preset: Preset = "default",
    config: ConfigFile = None,
    set_: Sets = None,
) -> None:
    """K-fold cross-validation: fold models, oof.csv, per-fold and overall metrics, fold-averaged test predictions.

    Example: [bold]bertkit cv train.csv --folds 5 --test test.csv --output runs/cv[/bold]
    """
    _quiet_libraries()

    def body() -> None:
        from bertkit.runners import runner_for

        data_o = _data_overrides(
            text_column, text_columns, label_column, id_column, task, group_column, time_column
        )
        if max_train_samples is not None:
            data_o["max_train_samples"] = max_train_samples
        cfg = _run_config(
            preset,
            config,
            set_,
            data_o,
            {"backbone": backbone, "head": head, "pooling": pooling},
            _training_options(epochs, batch_size, lr, max_length, seed),
        )
        metrics = runner_for(data, cfg.data.task).cross_validate(
            data, output, cfg, folds=folds, group_column=group_column, test=test
        )
        summary = metrics.get("fold_summary", {})
        shown = {
            "oof": metrics.get("oof", {}),
            "mean": {k: v["mean"] for k, v in summary.items()},
            "std": {k: v["std"] for k, v in summary.items()},
        }
        _print_metrics(f"bertkit cv ({folds} folds) → {output}", shown)
        typer.echo(f"oof: {next(iter(sorted(output.glob('oof.*'))), output / 'oof.csv')}")

    _guard(body)


@app.command()
def evaluate(
    model_dir: Annotated[
        Path, typer.Argument(help="Run folder, model folder or export folder (ONNX Runtime).")
    ],
    data: Annotated[Path, typer.Argument(help="Labelled data file.")],
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the metrics as JSON here.")
    ] = None,
    batch_size: Annotated[int, typer.Option(help="Texts per batch.")] = 64,
) -> None:
    """Score a trained model on labelled data: prints a table and writes JSON.

    Example: [bold]bertkit evaluate runs/sst2 test.csv --output test_metrics.json[/bold]
    """
    _quiet_libraries()

    def body() -> None:
        from bertkit.fileio import write_json_atomic
        from bertkit.runners import runner_for_model

        metrics = runner_for_model(model_dir).evaluate(model_dir, data, batch_size=batch_size)
        _print_metrics(f"bertkit evaluate {data}", {"metrics": metrics})
        target = output or (model_dir / "evaluation.json" if (model_dir / "metrics.json").is_file() else None)
        if target:
            write_json_atomic(target, metrics)
            typer.echo(f"wrote {target}")

    _guard(body)


@app.command()
def predict(
    model_dir: Annotated[
        Path, typer.Argument(help="Run folder, model folder or export folder (ONNX Runtime).")
    ],
    data: Annotated[Path, typer.Argument(help="Data file to predict.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="CSV to write (Kaggle submission format).")],
    id_column: IdColumn = None,
    proba: Annotated[bool, typer.Option(help="Write probabilities instead of labels.")] = False,
    batch_size: Annotated[int, typer.Option(help="Texts per batch.")] = 64,
    task: Annotated[str | None, typer.Option("--task", help="Task to predict (multi-task models).")] = None,
) -> None:
    """Write predictions in input order: id column + prediction column(s).

    Example: [bold]bertkit predict runs/sst2 test.csv --output submission.csv --id-column id[/bold]
    """
    _quiet_libraries()

    def body() -> None:
        from bertkit.runners import runner_for_model

        extra = {"task": task} if task else {}  # only multi-task runners take --task
        written = runner_for_model(model_dir).predict(
            model_dir, data, output, id_column=id_column, proba=proba, batch_size=batch_size, **extra
        )
        typer.echo(f"wrote {written}")

    _guard(body)
