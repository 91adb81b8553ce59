"""Inference throughput and accuracy: PyTorch vs ONNX Runtime fp32 vs int8 recipes vs HF pipeline/Trainer.

For a saved model (run or model folder) and a labelled data file, every backend predicts the same N texts
(tokenization included in the timing) and the script reports texts/s, the head's metrics (accuracy for
classifiers) and the speed-up over the faster of Hugging Face ``pipeline`` and ``Trainer.predict``. The HF
baselines run the same encoder (weights copied) under ``AutoModelForSequenceClassification`` with the same
batch size; their classifier is untrained, so only their speed is reported.

Backends:
    torch                  bertkit's PyTorch Predictor (length-sorted batches)
    ort_fp32_plain_export  a plain torch.onnx.export (no fusions) on ONNX Runtime, length-sorted batches: the
                           ORT anchor
    ort_fp32               ``bertkit export``'s fp32 graph (eager-attention trace + ORT transformer fusions)
    int8:plain             ORT's default ``quantize_dynamic`` of the plain export (the int8 baseline)
    int8:<recipe>          ``bertkit export``'s fp32 graph quantized with an INT8_RECIPES recipe
    pipeline      transformers.pipeline("text-classification") with batch_size
    trainer       transformers.Trainer.predict with DataCollatorWithPadding

Usage::

    # smoke (a few hundred texts)
    python bench/bench_inference.py --model runs/sst2 --data ../shared/data/sst2/test.csv --n 300 --n-baseline 100
    # full run (the lead's benchmark): all texts, every int8 recipe, both HF baselines
    python bench/bench_inference.py --model runs/sst2 --data ../shared/data/sst2/test.csv --n 0 \\
        --int8-recipes all --output bench/results/inference.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from bertkit.data import prepare_frame, read_table  # noqa: E402
from bertkit.data.analyze import DatasetProfile  # noqa: E402
from bertkit.inference.export import DEFAULT_OPSET, INT8_RECIPES, export_model, quantize_int8, trace_onnx  # noqa: E402
from bertkit.inference.onnx_predictor import OnnxPredictor, default_threads  # noqa: E402
from bertkit.inference.predictor import Predictor  # noqa: E402
from bertkit.model import BertWithHead  # noqa: E402
from bertkit.persistence import check_model_folder  # noqa: E402


def _timed(fn: Any, repeats: int, warmup: Any = None) -> tuple[Any, float, float]:
    """(result, best wall seconds, CPU seconds of that run) over ``repeats`` runs, after one ``warmup()`` call.

    CPU seconds (all threads of this process) stay meaningful on a machine shared with other jobs, where
    wall time also counts the time other processes held the cores.
    """
    if warmup is not None:  # first-call costs (allocator arenas, kernel selection) are not throughput
        warmup()
    best, cpu, out = float("inf"), 0.0, None
    for _ in range(max(1, repeats)):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        wall, used = time.perf_counter() - t0, time.process_time() - c0
        if wall < best:
            best, cpu = wall, used
    return out, best, cpu


def _metrics(head: Any, outputs: dict[str, np.ndarray], targets: np.ndarray) -> dict[str, float]:
    outputs = {k: v for k, v in outputs.items() if k != "loss"}
    return {
        k: round(float(v), 5)
        for k, v in head.compute_metrics(outputs, targets).items()
        if isinstance(v, int | float) and k in ("accuracy", "macro_f1", "f1", "rmse", "micro_f1", "qwk")
    }


def _hf_model(model: BertWithHead) -> Any:
    import copy

    from transformers import AutoModelForSequenceClassification

    config = copy.deepcopy(model.bert.hf_config)
    config.num_labels = max(2, model.head.config.num_labels)
    hf = AutoModelForSequenceClassification.from_config(config)
    hf.base_model.load_state_dict(model.bert.model.state_dict(), strict=False)
    return hf.eval()


def bench_pipeline(model: BertWithHead, texts: list[str], batch_size: int, max_length: int) -> float:
    from transformers import pipeline

    pipe = pipeline("text-classification", model=_hf_model(model), tokenizer=model.tokenizer, device=-1)
    pipe(texts[:8], batch_size=batch_size, truncation=True, max_length=max_length)  # warm-up
    t0 = time.perf_counter()
    pipe(texts, batch_size=batch_size, truncation=True, max_length=max_length)
    return time.perf_counter() - t0


def bench_trainer(model: BertWithHead, texts: list[str], batch_size: int, max_length: int) -> float:
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    class _Texts(torch.utils.data.Dataset):
        def __init__(self, items: list[str]) -> None:
            self.items = items

        def __len__(self) -> int:
            return len(self.items)

        def __getitem__(self, i: int) -> dict[str, Any]:
            return dict(model.tokenizer(self.items[i], truncation=True, max_length=max_length))

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            per_device_eval_batch_size=batch_size,
            use_cpu=True,
            report_to=[],
            disable_tqdm=True,
            dataloader_num_workers=0,
        )
        trainer = Trainer(
            model=_hf_model(model), args=args, data_collator=DataCollatorWithPadding(model.tokenizer)
        )
        trainer.predict(_Texts(texts[:16]))  # warm-up, as for every backend
        t0 = time.perf_counter()
        trainer.predict(_Texts(texts))
        return time.perf_counter() - t0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="run or model folder")
    ap.add_argument("--data", required=True, help="labelled data file with the training columns")
    ap.add_argument("--n", type=int, default=500, help="texts to predict (0: all)")
    ap.add_argument("--n-baseline", type=int, default=200, help="texts for pipeline/Trainer (0: same as --n)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=0, help="torch and ORT threads (0: the usable cores)")
    ap.add_argument("--repeats", type=int, default=1, help="best of R timed runs per backend")
    ap.add_argument(
        "--int8-recipes",
        default="plain,per_channel,per_channel_reduce_range_keep_ffn_out",
        help=f"comma-separated recipes or 'all' ({', '.join(INT8_RECIPES)})",
    )
    ap.add_argument("--backends", default="torch,ort_fp32,int8,pipeline,trainer")
    ap.add_argument(
        "--export-dir", default=None, help="reuse/write the fp32 export here (default: a temp folder)"
    )
    ap.add_argument("--output", default=None, help="write the JSON report here")
    args = ap.parse_args(argv)

    threads = args.threads or default_threads()
    torch.set_num_threads(threads)
    backends = set(args.backends.split(","))
    model = BertWithHead.from_pretrained(check_model_folder(args.model))
    profile = DatasetProfile.from_dict(model.metadata["data"])
    df = read_table(args.data)
    df = df.iloc[: args.n] if args.n else df
    prep = prepare_frame(df, profile, require_labels=True, sep_token=model.tokenizer.sep_token or "[SEP]")
    texts_a, texts_b, targets = prep.texts_a, prep.texts_b, np.asarray(prep.targets)
    n = len(texts_a)
    head16 = (texts_a[:16], None if texts_b is None else texts_b[:16])  # warm-up batch
    report: dict[str, Any] = {
        "model": str(args.model),
        "data": str(args.data),
        "texts": n,
        "threads": threads,
        "batch_size": args.batch_size,
        "torch": torch.__version__,
        "results": {},
    }
    results = report["results"]

    reference: dict[str, np.ndarray] = {}

    def record(
        name: str, outputs: dict[str, np.ndarray] | None, seconds: float, count: int, cpu: float = 0.0
    ) -> None:
        row: dict[str, Any] = {
            "seconds": round(seconds, 4),
            "texts_per_s": round(count / seconds, 2),
            "texts": count,
        }
        if cpu:
            row["cpu_ms_per_text"] = round(1000 * cpu / count, 3)
        if outputs is not None:
            row.update(_metrics(model.head, outputs, targets))
            if name == "ort_fp32_plain_export":
                reference.update(outputs)
            elif reference and "predictions" in outputs:  # fidelity to fp32: less noisy than accuracy deltas
                row["agreement_with_fp32"] = round(
                    float(np.mean(outputs["predictions"] == reference["predictions"])), 5
                )
                if "probabilities" in outputs:
                    diff = np.abs(outputs["probabilities"] - reference["probabilities"])
                    row["mean_abs_prob_diff"] = round(float(diff.mean()), 6)
        results[name] = row
        print(json.dumps({name: row}), flush=True)

    if "torch" in backends:
        pt = Predictor(model, batch_size=args.batch_size, device="cpu")
        out, secs, cpu = _timed(
            lambda: pt.outputs(texts_a, texts_b), args.repeats, lambda: pt.outputs(*head16)
        )
        record("torch", out, secs, n, cpu)
    tmp = tempfile.TemporaryDirectory()
    export_dir = Path(args.export_dir or Path(tmp.name) / "export")
    if not (export_dir / "export.json").is_file():
        t0 = time.perf_counter()
        res = export_model(model, export_dir)
        report["export"] = {
            "seconds": round(time.perf_counter() - t0, 2),
            "graph": res.graph,
            "max_abs_diff": res.max_abs_diff,
        }
    raw = "model.raw.onnx"  # what a plain torch.onnx.export gives (the model's own attention, no fusions)
    if not (export_dir / raw).is_file():
        # the anchor is the Hugging Face model's plain export: every token through every layer, so bertkit's
        # first-token shortcut (bertkit/first_token.py) is off for this trace
        model.first_token_shortcut = False
        try:
            trace_onnx(model, export_dir / raw, "full", DEFAULT_OPSET)
        finally:
            model.first_token_shortcut = True
    runs: list[tuple[str, str]] = []
    if "ort_fp32" in backends:
        runs += [("ort_fp32_plain_export", raw), ("ort_fp32", "model.onnx")]
    if "int8" in backends:
        recipes = list(INT8_RECIPES) if args.int8_recipes == "all" else args.int8_recipes.split(",")
        for recipe in recipes:
            # "plain" quantizes the plain export, as `quantize_dynamic(model.onnx)` does for an ORT user
            src, file = (
                (raw, "model.int8.plain.onnx")
                if recipe == "plain"
                else ("model.onnx", f"model.int8.{recipe}.onnx")
            )
            if not (export_dir / file).is_file():
                quantize_int8(export_dir / src, export_dir / file, recipe)
            runs.append((f"int8:{recipe}", file))
    for name, file in runs:
        pred = OnnxPredictor(
            export_dir, batch_size=args.batch_size, precision="fp32", num_threads=threads, model_file=file
        )
        out, secs, cpu = _timed(
            lambda p=pred: p.outputs(texts_a, texts_b), args.repeats, lambda p=pred: p.outputs(*head16)
        )
        record(name, out, secs, n, cpu)
    nb = min(n, args.n_baseline or n)
    max_length = int(model.metadata.get("max_length", 128))
    if "pipeline" in backends and texts_b is None:
        record("pipeline", None, bench_pipeline(model, texts_a[:nb], args.batch_size, max_length), nb)
    if "trainer" in backends and texts_b is None:
        record("trainer", None, bench_trainer(model, texts_a[:nb], args.batch_size, max_length), nb)
    anchors = [results[k]["texts_per_s"] for k in ("pipeline", "trainer") if k in results]
    base = "ort_fp32_plain_export"
    if anchors:
        anchor = max(anchors)
        report["hf_anchor_texts_per_s"] = anchor
        for row in results.values():
            row["speedup_vs_hf"] = round(row["texts_per_s"] / anchor, 2)
    if base in results:
        for row in results.values():
            row["speedup_vs_ort_fp32_plain"] = round(row["texts_per_s"] / results[base]["texts_per_s"], 2)
            if "cpu_ms_per_text" in row and "cpu_ms_per_text" in results[base]:
                row["cpu_speedup_vs_ort_fp32_plain"] = round(
                    results[base]["cpu_ms_per_text"] / row["cpu_ms_per_text"], 2
                )
        if "accuracy" in results[base]:
            for row in results.values():
                if "accuracy" in row:
                    row["accuracy_delta_points"] = round(
                        100 * (row["accuracy"] - results[base]["accuracy"]), 2
                    )
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(json.dumps(report, indent=2))
    tmp.cleanup()
    return report


if __name__ == "__main__":
    main()
