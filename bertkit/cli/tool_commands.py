"""``export``, ``serve``, ``embed``, ``heads``, ``demo``, ``ablate``, ``pretrain`` and ``blend``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bertkit.cli._common import (
    IdColumn,
    LabelColumn,
    TextColumn,
    _data_overrides,
    _guard,
    _print_metrics,
    _quiet_libraries,
    _training_options,
    app,
)


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
