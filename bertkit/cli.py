"""The ``bertkit`` command line. One command → one library function; every flag is a config field.

Errors that users can cause (bad data, a bad flag value, a broken model folder) print one line and exit 2.
"""

from __future__ import annotations

import json
import os
import sys
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

    splits = {k: v for k, v in metrics.items() if isinstance(v, dict) and v and all(
        isinstance(x, int | float) or x is None for x in v.values())}
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


def _data_overrides(text_column: str | None, text_columns: str | None, label_column: str | None,
                    id_column: str | None, task: str | None = None, group_column: str | None = None) -> dict[str, Any]:
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
    return data


def _run_config(preset: str, config: Path | None, sets: list[str] | None, data: dict[str, Any],
                model: dict[str, Any], training: dict[str, Any]) -> Any:
    from bertkit.runconfig import build_run_config

    overrides = {"data": data, "model": {k: v for k, v in model.items() if v is not None},
                 "training": {k: v for k, v in training.items() if v is not None}}
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
@app.command()
def analyze(
    data: Annotated[Path, typer.Argument(help="CSV/TSV/Parquet/JSONL file.")],
    text_column: TextColumn = None,
    text_columns: TextColumns = None,
    label_column: LabelColumn = None,
    id_column: IdColumn = None,
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

        cfg = _run_config("default", None, None, _data_overrides(text_column, text_columns, label_column,
                                                                 id_column, task), {"backbone": backbone}, {})
        profile = runner_for(data, cfg.data.task).analyze(data, cfg)
        typer.echo(json.dumps(profile.to_dict(), indent=2) if as_json else profile.summary())

    _guard(body)


def _training_options(epochs: float | None, batch_size: int | None, lr: float | None, max_length: int | None,
                      seed: int | None) -> dict[str, Any]:
    return {"epochs": epochs, "batch_size": batch_size, "learning_rate": lr, "max_length": max_length, "seed": seed}


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="Training file (CSV/TSV/Parquet/JSONL).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Run folder to write.")],
    valid: Annotated[Path | None, typer.Option(help="Validation file (default: split from DATA).")] = None,
    test: Annotated[Path | None, typer.Option(help="Labelled or unlabelled test file to score/predict.")] = None,
    task: Annotated[str, typer.Option(help="auto, or a task: binary|multiclass|multilabel|regression|ordinal|...")] = "auto",
    text_column: TextColumn = None,
    text_columns: TextColumns = None,
    label_column: LabelColumn = None,
    id_column: IdColumn = None,
    backbone: Annotated[str | None, typer.Option(help="minilm | local folder | hub id.")] = None,
    head: Annotated[str | None, typer.Option(help="Registered head name (see `bertkit heads`).")] = None,
    pooling: Annotated[str | None, typer.Option(help="cls|mean|max|attention|weighted_mean|last")] = None,
    epochs: Annotated[float | None, typer.Option(help="Training epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    max_length: Annotated[int | None, typer.Option(help="Max tokens per text.")] = None,
    max_train_samples: Annotated[int | None, typer.Option(help="Train on the first N rows after a seeded shuffle.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    preset: Annotated[str, typer.Option(help="quick | default | competition")] = "default",
    config: Annotated[Path | None, typer.Option(help="YAML config with data/model/training sections.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override any config key: training.epochs=2")] = None,
    strict: Annotated[bool, typer.Option(help="Reject rows with empty text/labels instead of dropping them.")] = False,
    resume: Annotated[bool, typer.Option(help="Continue from the run folder's latest checkpoint.")] = False,
) -> None:
    """Fine-tune a model on DATA and write a run folder (model/, metrics.json, history.csv, report.html).

    Example: [bold]bertkit train train.csv --test test.csv --output runs/sst2 --epochs 1 --max-train-samples 4000[/bold]
    """
    _quiet_libraries()

    def body() -> None:
        from bertkit.runners import runner_for

        data_o = _data_overrides(text_column, text_columns, label_column, id_column, task)
        if max_train_samples is not None:
            data_o["max_train_samples"] = max_train_samples
        if strict:
            data_o["strict"] = True
        cfg = _run_config(preset, config, set_, data_o, {"backbone": backbone, "head": head, "pooling": pooling},
                          _training_options(epochs, batch_size, lr, max_length, seed))
        metrics = runner_for(data, cfg.data.task).train(data, output, cfg, valid=valid, test=test, resume=resume)
        _print_metrics(f"bertkit train → {output}", metrics)
        typer.echo(f"model: {output / 'model'}   report: {output / 'report.html'}")

    _guard(body)


@app.command()
def cv(
    data: Annotated[Path, typer.Argument(help="Training file.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Run folder to write.")],
    folds: Annotated[int, typer.Option(help="Number of folds.")] = 5,
    group_column: Annotated[str | None, typer.Option(help="GroupKFold on this column.")] = None,
    test: Annotated[Path | None, typer.Option(help="Test file: predictions averaged over folds.")] = None,
    task: Annotated[str, typer.Option(help="auto, or a task: binary|multiclass|multilabel|regression|ordinal|...")] = "auto",
    text_column: TextColumn = None,
    text_columns: TextColumns = None,
    label_column: LabelColumn = None,
    id_column: IdColumn = None,
    backbone: Annotated[str | None, typer.Option(help="minilm | local folder | hub id.")] = None,
    head: Annotated[str | None, typer.Option(help="Registered head name.")] = None,
    pooling: Annotated[str | None, typer.Option(help="Pooling type.")] = None,
    epochs: Annotated[float | None, typer.Option(help="Training epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    max_length: Annotated[int | None, typer.Option(help="Max tokens per text.")] = None,
    max_train_samples: Annotated[int | None, typer.Option(help="Use the first N rows after a seeded shuffle.")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    preset: Annotated[str, typer.Option(help="quick | default | competition")] = "default",
    config: Annotated[Path | None, typer.Option(help="YAML config.")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Override any config key.")] = None,
) -> None:
    """K-fold cross-validation: fold models, oof.csv, per-fold and overall metrics, fold-averaged test predictions.

    Example: [bold]bertkit cv train.csv --folds 5 --test test.csv --output runs/cv[/bold]
    """
    _quiet_libraries()

    def body() -> None:
        from bertkit.runners import runner_for

        data_o = _data_overrides(text_column, text_columns, label_column, id_column, task, group_column)
        if max_train_samples is not None:
            data_o["max_train_samples"] = max_train_samples
        cfg = _run_config(preset, config, set_, data_o, {"backbone": backbone, "head": head, "pooling": pooling},
                          _training_options(epochs, batch_size, lr, max_length, seed))
        metrics = runner_for(data, cfg.data.task).cross_validate(
            data, output, cfg, folds=folds, group_column=group_column, test=test
        )
        summary = metrics.get("fold_summary", {})
        shown = {"oof": metrics.get("oof", {}), "mean": {k: v["mean"] for k, v in summary.items()},
                 "std": {k: v["std"] for k, v in summary.items()}}
        _print_metrics(f"bertkit cv ({folds} folds) → {output}", shown)
        typer.echo(f"oof: {output / 'oof.csv'}")

    _guard(body)


@app.command()
def evaluate(
    model_dir: Annotated[Path, typer.Argument(help="Run folder or model folder.")],
    data: Annotated[Path, typer.Argument(help="Labelled data file.")],
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the metrics as JSON here.")] = None,
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
    model_dir: Annotated[Path, typer.Argument(help="Run folder or model folder.")],
    data: Annotated[Path, typer.Argument(help="Data file to predict.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="CSV to write (Kaggle submission format).")],
    id_column: IdColumn = None,
    proba: Annotated[bool, typer.Option(help="Write probabilities instead of labels.")] = False,
    batch_size: Annotated[int, typer.Option(help="Texts per batch.")] = 64,
) -> None:
    """Write predictions in input order: id column + prediction column(s).

    Example: [bold]bertkit predict runs/sst2 test.csv --output submission.csv --id-column id[/bold]
    """
    _quiet_libraries()

    def body() -> None:
        from bertkit.runners import runner_for_model

        written = runner_for_model(model_dir).predict(model_dir, data, output, id_column=id_column, proba=proba,
                                                      batch_size=batch_size)
        typer.echo(f"wrote {written}")

    _guard(body)


@app.command()
def heads() -> None:
    """List registered heads with one-line descriptions.

    Example: [bold]bertkit heads[/bold]
    """
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from bertkit.heads import HEADS, head_description, list_heads

    table = Table(title="registered heads")
    table.add_column("name")
    table.add_column("task")
    table.add_column("description")
    for name in list_heads():
        table.add_row(name, HEADS.get(name).task, escape(head_description(name)))
    Console().print(table)


@app.command()
def demo(
    output: Annotated[Path, typer.Option("--output", "-o", help="Run folder.")] = Path("runs/demo"),
    epochs: Annotated[float, typer.Option(help="Training epochs.")] = 3,
) -> None:
    """Fine-tune the bundled MiniLM on a small toy review dataset, evaluate, and predict — offline, on CPU.

    Example: [bold]bertkit demo[/bold]
    """
    _quiet_libraries()

    def body() -> None:
        from importlib import resources

        from bertkit.inference import load_predictor
        from bertkit.runconfig import build_run_config
        from bertkit.training.run import train_run

        examples = resources.files("bertkit.data").joinpath("examples")
        train_csv, test_csv = Path(str(examples / "demo_reviews.csv")), Path(str(examples / "demo_reviews_test.csv"))
        typer.echo(f"training bertkit's bundled MiniLM on the toy dataset {train_csv.name} (480 rows)…")
        cfg = build_run_config("default", overrides={"training": {
            "epochs": epochs, "batch_size": 16, "learning_rate": 1e-4, "max_length": 64, "warmup_ratio": 0.1}})
        result = train_run(train_csv, output, cfg, test_path=test_csv)
        _print_metrics("demo metrics", result.metrics)
        predictor = load_predictor(output)
        samples = ["The battery died after two days, what a waste of money.",
                   "Honestly the best ramen I have had in years!",
                   "The plot was not bad at all."]
        for text, label, probs in zip(samples, predictor.predict(samples), predictor.predict_proba(samples)):
            typer.echo(f"  {label:>8}  ({max(probs.values()):.2f})  {text}")
        typer.echo(f"run folder: {output}  (open {output / 'report.html'})")

    _guard(body)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit as exc:
        sys.exit(exc.code)


if __name__ == "__main__":
    main()
