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


@app.command()
def train(
    data: Annotated[Path, typer.Argument(help="Training file (CSV/TSV/Parquet/JSONL).")],
    output: Annotated[Path, typer.Option("--output", "-o", help="Run folder to write.")],
    valid: Annotated[Path | None, typer.Option(help="Validation file (default: split from DATA).")] = None,
    test: Annotated[
        Path | None, typer.Option(help="Labelled or unlabelled test file to score/predict.")
    ] = None,
    task: Annotated[
        str, typer.Option(help="auto, or a task: binary|multiclass|multilabel|regression|ordinal|...")
    ] = "auto",
    text_column: TextColumn = None,
    text_columns: TextColumns = None,
    label_column: LabelColumn = None,
    id_column: IdColumn = None,
    group_column: GroupColumn = None,
    time_column: TimeColumn = None,
    backbone: Annotated[str | None, typer.Option(help="minilm | local folder | hub id.")] = None,
    head: Annotated[str | None, typer.Option(help="Registered head name (see `bertkit heads`).")] = None,
    pooling: Annotated[
        str | None,
        typer.Option(help="cls|mean|max|attention|weighted_mean|last|gem|layer_cls|layer_cls_weighted"),
    ] = None,
    epochs: Annotated[float | None, typer.Option(help="Training epochs.")] = None,
    batch_size: Annotated[int | None, typer.Option(help="Batch size.")] = None,
    lr: Annotated[float | None, typer.Option(help="Peak learning rate.")] = None,
    max_length: Annotated[int | None, typer.Option(help="Max tokens per text.")] = None,
    max_train_samples: Annotated[
        int | None, typer.Option(help="Train on the first N rows after a seeded shuffle.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    preset: Annotated[str, typer.Option(help="quick | default | competition")] = "default",
    config: Annotated[
        Path | None, typer.Option(help="YAML config with data/model/training sections.")
    ] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override any config key: training.epochs=2")
    ] = None,
    strict: Annotated[
        bool, typer.Option(help="Reject rows with empty text/labels instead of dropping them.")
    ] = False,
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
    task: Annotated[
        str, typer.Option(help="auto, or a task: binary|multiclass|multilabel|regression|ordinal|...")
    ] = "auto",
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
    max_train_samples: Annotated[
        int | None, typer.Option(help="Use the first N rows after a seeded shuffle.")
    ] = None,
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


@app.command()
def export(
    model_dir: Annotated[Path, typer.Argument(help="Run folder or model folder.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Export folder to write (replaced if it exists).")
    ],
    format_: Annotated[str, typer.Option("--format", help="Export format: onnx.")] = "onnx",
    quantize: Annotated[
        str | None, typer.Option(help="Also write an int8 model (and make it the default).")
    ] = None,
    int8_recipe: Annotated[
        str | None, typer.Option(help="Named int8 recipe (see docs/export-and-serve.md).")
    ] = None,
    graph: Annotated[
        str, typer.Option(help="auto | full | encoder (encoder: the head runs in PyTorch).")
    ] = "auto",
    opset: Annotated[int, typer.Option(help="ONNX opset.")] = 17,
) -> None:
    """Export a trained model to a self-contained ONNX folder, verified against PyTorch (1e-4 in fp32).

    Example: [bold]bertkit export runs/sst2 --format onnx --quantize int8 --output exports/sst2[/bold]
    """
    _quiet_libraries()

    def body() -> None:
        from bertkit.inference.export import DEFAULT_INT8_RECIPE, export_model

        result = export_model(
            model_dir,
            output,
            format=format_,
            quantize=quantize,
            int8_recipe=int8_recipe or DEFAULT_INT8_RECIPE,
            graph=graph,
            opset=opset,
        )
        diffs = ", ".join(f"{k} {v:.1e}" for k, v in result.max_abs_diff.items()) or "integer outputs only"
        typer.echo(f"graph: {result.graph}   outputs: {', '.join(result.outputs)}")
        typer.echo(f"fp32 max |ONNX - PyTorch|: {diffs}")
        if result.int8:
            q = ", ".join(f"{k} {v:.1e}" for k, v in result.int8.get("max_abs_diff", {}).items())
            typer.echo(f"int8 ({result.int8['recipe']}) max |ONNX - PyTorch|: {q}")
        typer.echo(f"wrote {output} ({', '.join(result.files.values())})")

    _guard(body)


@app.command()
def serve(
    model_dir: Annotated[Path, typer.Argument(help="Run folder, model folder or export folder.")],
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    max_batch_size: Annotated[int, typer.Option(help="Texts merged into one micro-batch.")] = 32,
    max_wait_ms: Annotated[
        float, typer.Option(help="How long a request waits for others to join its batch.")
    ] = 5.0,
    max_queue: Annotated[
        int, typer.Option(help="Waiting requests beyond which the server answers 503.")
    ] = 256,
    precision: Annotated[
        str | None, typer.Option(help="Export folders: fp32 or int8 (default: the folder's).")
    ] = None,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "info",
) -> None:
    """Serve a model over HTTP: POST /predict, GET /health, GET /metadata, OpenAPI docs at /docs.

    Example: [bold]bertkit serve exports/sst2 --port 8000[/bold]
    """
    _quiet_libraries()

    def body() -> None:
        from bertkit.inference.serve import serve as run_server

        extra = {"precision": precision} if precision else {}
        run_server(
            model_dir,
            host=host,
            port=port,
            log_level=log_level,
            max_batch_size=max_batch_size,
            max_wait_ms=max_wait_ms,
            max_queue=max_queue,
            **extra,
        )

    _guard(body)


@app.command()
def embed(
    model_dir: Annotated[Path, typer.Argument(help="Run folder or model folder.")],
    data: Annotated[Path, typer.Argument(help="Data file whose texts to embed.")],
    output: Annotated[Path, typer.Option("--output", "-o", help="emb.npy ([N, D] float32) or emb.parquet.")],
    text_column: TextColumn = None,
    id_column: IdColumn = None,
    batch_size: Annotated[int, typer.Option(help="Texts per batch.")] = 64,
) -> None:
    """Write one embedding per input row, in input order (.npy array or .parquet with an embedding column).

    Example: [bold]bertkit embed runs/sts data.csv --output emb.npy[/bold]
    """
    _quiet_libraries()

    def body() -> None:
        from bertkit.inference.embed import embed_texts

        emb = embed_texts(
            model_dir, data, output, text_column=text_column, batch_size=batch_size, id_column=id_column
        )
        typer.echo(f"wrote {output} ({emb.shape[0]} x {emb.shape[1] if emb.ndim == 2 else 0})")

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
        train_csv, test_csv = (
            Path(str(examples / "demo_reviews.csv")),
            Path(str(examples / "demo_reviews_test.csv")),
        )
        typer.echo(f"training bertkit's bundled MiniLM on the toy dataset {train_csv.name} (480 rows)…")
        cfg = build_run_config(
            "default",
            overrides={
                "training": {
                    "epochs": epochs,
                    "batch_size": 16,
                    "learning_rate": 1e-4,
                    "max_length": 64,
                    "warmup_ratio": 0.1,
                }
            },
        )
        result = train_run(train_csv, output, cfg, test_path=test_csv)
        _print_metrics("demo metrics", result.metrics)
        predictor = load_predictor(output)
        samples = [
            "The battery died after two days, what a waste of money.",
            "Honestly the best ramen I have had in years!",
            "The plot was not bad at all.",
        ]
        for text, label, probs in zip(samples, predictor.predict(samples), predictor.predict_proba(samples)):
            typer.echo(f"  {label:>8}  ({max(probs.values()):.2f})  {text}")
        typer.echo(f"run folder: {output}  (open {output / 'report.html'})")

    _guard(body)


@app.command()
def ablate(
    data: Annotated[Path, typer.Argument(help="Labelled training file.")],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for the variants, ablation.csv, report.html.")
    ],
    try_: Annotated[
        str,
        typer.Option(
            "--try",
            help="Comma-separated switches: fgm,awp,ema,swa,soup,msd,llrd,"
            "headlr,cosine,unfreeze,reinitN,headtail,chunks,postprocess,nodropout,"
            "mean,attention,gem,layercls,layerwsum,preset:NAME",
        ),
    ],
    folds: Annotated[int, typer.Option(help="Number of folds (the same for every variant).")] = 3,
    base: Annotated[str, typer.Option(help="Base preset: quick | default | competition")] = "default",
    metric: Annotated[
        str | None, typer.Option(help="Fold metric to compare (default: rmse/qwk/macro_f1/...).")
    ] = None,
    task: Annotated[
        str, typer.Option(help="auto, or a task: binary|multiclass|multilabel|regression|ordinal")
    ] = "auto",
    text_column: TextColumn = None,
    label_column: LabelColumn = None,
    backbone: Annotated[str | None, typer.Option(help="minilm | local folder | hub id.")] = None,
    epochs: Annotated[float | None, typer.Option(help="Training epochs (every variant).")] = None,
    max_train_samples: Annotated[
        int | None, typer.Option(help="Use the first N rows after a seeded shuffle.")
    ] = None,
    max_length: Annotated[int | None, typer.Option(help="Max tokens per text (every variant).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed (the same folds for every variant).")] = None,
    config: Annotated[Path | None, typer.Option(help="YAML config applied to every variant.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Override any config key in every variant.")
    ] = None,
) -> None:
    """Run the base preset and each switch on the same folds and seeds; write a mean ± std table and a report.

    Example: [bold]bertkit ablate train.csv --folds 3 --base default --try fgm,awp,ema,msd,llrd,reinit2 --output runs/abl[/bold]
    """
    _quiet_libraries()

    def body() -> None:
        from bertkit.training.ablate import ablate as run_ablation

        data_o = _data_overrides(text_column, None, label_column, None, task)
        if max_train_samples is not None:
            data_o["max_train_samples"] = max_train_samples
        overrides = {
            "data": data_o,
            "model": {"backbone": backbone} if backbone else {},
            "training": {
                k: v
                for k, v in _training_options(epochs, None, None, max_length, seed).items()
                if v is not None
            },
        }
        table = run_ablation(
            data,
            output,
            [t for t in try_.split(",") if t.strip()],
            folds=folds,
            base=base,
            config_file=config,
            sets=set_,
            overrides=overrides,
            metric=metric,
        )
        shown = {
            r["variant"]: {
                "mean": r["mean"],
                "std": r["std"],
                "delta": r["delta"],
                "time_ratio": r["time_ratio"],
            }
            for _, r in table.iterrows()
        }
        _print_metrics(f"bertkit ablate ({table['metric'].iloc[0]}, {folds} folds) → {output}", shown)
        typer.echo(f"table: {output / 'ablation.csv'}   report: {output / 'report.html'}")

    _guard(body)


@app.command()
def pretrain(
    texts: Annotated[
        Path, typer.Argument(help="Unlabelled texts: .txt (one per line) or CSV/TSV/Parquet/JSONL.")
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Backbone folder to write (use as --backbone).")
    ],
    backbone: Annotated[str, typer.Option(help="minilm | local folder | hub id.")] = "minilm",
    text_column: TextColumn = None,
    epochs: Annotated[float, typer.Option(help="Passes over the text blocks.")] = 1.0,
    max_steps: Annotated[int, typer.Option(help="Stop after N steps (0: no limit).")] = 0,
    batch_size: Annotated[int, typer.Option(help="Blocks per step.")] = 16,
    lr: Annotated[float, typer.Option(help="Peak learning rate.")] = 5e-5,
    max_length: Annotated[int, typer.Option(help="Tokens per block.")] = 128,
    mlm_probability: Annotated[float, typer.Option(help="Share of tokens masked.")] = 0.15,
    max_texts: Annotated[int, typer.Option(help="Use only the first N texts (0: all).")] = 0,
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
) -> None:
    """Domain-adaptive masked-LM pre-training on unlabelled text; the output folder works as --backbone.

    Example: [bold]bertkit pretrain texts.txt --output runs/mlm --epochs 2 && bertkit cv train.csv --backbone runs/mlm -o runs/cv[/bold]
    """
    _quiet_libraries()

    def body() -> None:
        from bertkit.training.pretrain import PretrainConfig
        from bertkit.training.pretrain import pretrain as run_pretrain

        cfg = PretrainConfig(
            backbone=backbone,
            epochs=epochs,
            max_steps=max_steps,
            batch_size=batch_size,
            learning_rate=lr,
            max_length=max_length,
            mlm_probability=mlm_probability,
            text_column=text_column,
            max_texts=max_texts,
            seed=seed,
        )
        report = run_pretrain(texts, output, cfg)
        typer.echo(
            f"MLM loss {report['first_loss']:.3f} → {report['last_loss']:.3f} over {report['steps']} steps; "
            f"backbone: {output}"
        )

    _guard(body)


@app.command()
def blend(
    runs: Annotated[
        list[Path], typer.Argument(help="Two or more `bertkit cv` run folders on the same data.")
    ],
    output: Annotated[
        Path, typer.Option("--output", "-o", help="Folder for blend.json, oof_blend.csv, submission.csv.")
    ],
    method: Annotated[
        str, typer.Option(help="lsq (weights >= 0 summing to 1) | ridge | hill | mean")
    ] = "lsq",
    metric: Annotated[
        str | None, typer.Option(help="rmse|mae (regression), log_loss|accuracy|macro_f1.")
    ] = None,
) -> None:
    """Blend several runs' OOF predictions (weights fitted on OOF) and write the blended test submission.

    Example: [bold]bertkit blend runs/cv_a runs/cv_b --method hill --output runs/blend[/bold]
    """
    _quiet_libraries()

    def body() -> None:
        from bertkit.training.blend import blend_runs

        report = blend_runs(runs, output, method=method, metric=metric)
        weights = ", ".join(f"{Path(r).name}={w:.3f}" for r, w in zip(report["runs"], report["weights"]))
        typer.echo(f"{report['method']} weights: {weights}")
        typer.echo(
            f"OOF {report['metric']}: blend {report['oof_score']:.4f}; runs "
            + ", ".join(f"{s:.4f}" for s in report["run_scores"])
        )
        if "submission" in report:
            typer.echo(f"submission: {report['submission']}")

    _guard(body)


def main() -> None:
    """Console-script entry point."""
    try:
        app()
    except SystemExit as exc:
        sys.exit(exc.code)


if __name__ == "__main__":
    main()
