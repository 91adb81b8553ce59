"""Shared pieces of the command line: the Typer app, option types, config assembly and the error guard."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Annotated, Any

import typer

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

app = typer.Typer(
    name="bertkit",
    help="Fine-tune BERT-family encoders with pluggable task heads: data file → model, OOF and submission.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="rich",
)

# shared options --------------------------------------------------------------------------------------------
TextColumn = Annotated[str | None, typer.Option("--text-column", help="Column holding the text.")]
TextColumns = Annotated[
    str | None, typer.Option("--text-columns", help="Comma-separated text columns: two for pairs (q,a).")
]
LabelColumn = Annotated[str | None, typer.Option("--label-column", help="Column holding the label/target.")]
IdColumn = Annotated[str | None, typer.Option("--id-column", help="Id column carried into predictions.")]
GroupColumn = Annotated[
    str | None,
    typer.Option(
        "--group-column", help="Query column of ranking data, or the sequence id (with --time-column)."
    ),
]
TimeColumn = Annotated[
    str | None,
    typer.Option("--time-column", help="Orders each group's texts: trains a sequence (time-series) head."),
]


# options shared by `train` and `cv` (one declaration, the same help everywhere)
Task = Annotated[
    str, typer.Option(help="auto, or a task: binary|multiclass|multilabel|regression|ordinal|...")
]
Backbone = Annotated[str | None, typer.Option(help="minilm | local folder | hub id.")]
HeadName = Annotated[str | None, typer.Option("--head", help="Registered head name (see `bertkit heads`).")]
Pooling = Annotated[
    str | None,
    typer.Option(help="cls|mean|max|attention|weighted_mean|last|gem|layer_cls|layer_cls_weighted"),
]
Epochs = Annotated[float | None, typer.Option(help="Training epochs.")]
BatchSize = Annotated[int | None, typer.Option(help="Batch size.")]
LearningRate = Annotated[float | None, typer.Option("--lr", help="Peak learning rate.")]
MaxLength = Annotated[int | None, typer.Option(help="Max tokens per text.")]
MaxTrainSamples = Annotated[int | None, typer.Option(help="Use the first N rows after a seeded shuffle.")]
Seed = Annotated[int | None, typer.Option(help="Random seed.")]
Preset = Annotated[str, typer.Option(help="quick | default | competition")]
ConfigFile = Annotated[
    Path | None, typer.Option("--config", help="YAML config with data/model/training sections.")
]
Sets = Annotated[list[str] | None, typer.Option("--set", help="Override any config key: training.epochs=2")]
Strict = Annotated[bool, typer.Option(help="Reject rows with empty text/labels instead of dropping them.")]


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=2)


def _quiet_libraries() -> None:
    import logging

    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*detach.*")
    for name in ("transformers", "accelerate", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
        hf_logging.disable_progress_bar()
    except ImportError:
        pass


def _print_metrics(title: str, metrics: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    splits = {
        k: v
        for k, v in metrics.items()
        if isinstance(v, dict) and v and all(isinstance(x, int | float) or x is None for x in v.values())
    }
    table = Table(title=title)
    table.add_column("metric")
    for split in splits:
        table.add_column(split, justify="right")
    names: list[str] = []
    for values in splits.values():
        names += [n for n in values if n not in names]
    for name in names:
        row = [name]
        for values in splits.values():
            v = values.get(name)
            row.append("-" if v is None else f"{v:.4f}" if isinstance(v, float) else str(v))
        table.add_row(*row)
    Console().print(table)
    for key, value in metrics.items():
        if not isinstance(value, dict | list):
            typer.echo(f"{key}: {value}")


def _data_overrides(
    text_column: str | None,
    text_columns: str | None,
    label_column: str | None,
    id_column: str | None,
    task: str | None = None,
    group_column: str | None = None,
    time_column: str | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {}
    if text_column and text_columns:
        _fail("give either --text-column or --text-columns, not both")
    if text_column:
        data["text_column"] = text_column
    if text_columns:
        data["text_columns"] = [c.strip() for c in text_columns.split(",") if c.strip()]
    if label_column:
        data["label_column"] = label_column
    if id_column:
        data["id_column"] = id_column
    if task and task != "auto":
        data["task"] = task
    if group_column:
        data["group_column"] = group_column
    if time_column:
        data["time_column"] = time_column
    return data


def _run_config(
    preset: str,
    config: Path | None,
    sets: list[str] | None,
    data: dict[str, Any],
    model: dict[str, Any],
    training: dict[str, Any],
) -> Any:
    from bertkit.runconfig import build_run_config

    overrides = {
        "data": data,
        "model": {k: v for k, v in model.items() if v is not None},
        "training": {k: v for k, v in training.items() if v is not None},
    }
    return build_run_config(preset, config, sets, overrides)


def _guard(fn: Any) -> Any:
    """Run a command body, turning bertkit's own errors into one line and exit code 2."""
    from bertkit.errors import BertkitError
    from bertkit.training.trainer import TrainingInterrupted

    try:
        return fn()
    except TrainingInterrupted as exc:
        typer.secho(f"stopped: {exc}", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(code=130) from None
    except BertkitError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        typer.secho("interrupted", fg=typer.colors.YELLOW, err=True)
        raise typer.Exit(code=130) from None


# commands --------------------------------------------------------------------------------------------------


def _training_options(
    epochs: float | None, batch_size: int | None, lr: float | None, max_length: int | None, seed: int | None
) -> dict[str, Any]:
    return {
        "epochs": epochs,
        "batch_size": batch_size,
        "learning_rate": lr,
        "max_length": max_length,
        "seed": seed,
    }
