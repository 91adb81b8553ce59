"""GPU benchmark: bertkit vs the Hugging Face Trainer / pipeline on one CUDA GPU, every figure from one run.

    python bench/bench_gpu.py --output bench/results/gpu.json            # everything (about 5 minutes on an H200)
    python bench/bench_gpu.py --only train_sst2 --sst2-rows 4000         # one section, a smaller budget

Sections (each configuration runs in its own process, so peak GPU memory is its own):

* ``train_sst2``: MiniLM (bundled), the full SST-2 training set, 1 epoch, batch 32, lr 5e-5, warmup 10%,
  max_length 128. Hugging Face: ``Trainer`` + ``AutoModelForSequenceClassification`` + ``DataCollatorWithPadding``
  with ``bf16=True`` (SDPA attention, default random sampler). bertkit: ``bertkit train`` defaults
  (``mixed_precision: auto`` is bf16 on this GPU, length-bucketed batches). Samples/s, test accuracy (872 rows),
  peak GPU memory.
* ``train_base512``: a BERT-base-sized encoder (12 x 768, random init) on synthetic 512-token texts, binary
  labels: tokens/s and model FLOP utilisation against the GPU's dense bf16 peak, plain and with
  ``torch.compile`` on both sides.
* ``infer_sst2``: the fine-tuned MiniLM of ``train_sst2`` on the SST-2 test texts cycled to 20,000: bertkit's
  predictor vs ``transformers.pipeline`` (both on the GPU), and ONNX Runtime's CUDA provider when the installed
  onnxruntime has it.

Model FLOPs per trained token: 6 x non-embedding parameters + 12 x layers x hidden x sequence length
(attention), the usual estimate; the bf16 dense peak defaults to an H100/H200 SXM's 989 TFLOP/s.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("BENCH_SST2", ROOT.parent / "shared" / "data" / "sst2"))
RESULTS = ROOT / "bench" / "results"


def _gpu_name() -> str:
    import torch

    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no CUDA device"


def _peak_mem_gib() -> float:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else 0.0


def _sync() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.synchronize()


def _sst2(rows: int) -> Any:
    import pandas as pd

    df = pd.read_csv(DATA / "train.csv")
    return df if rows <= 0 or rows >= len(df) else df.sample(n=rows, random_state=0).reset_index(drop=True)


def _synthetic(rows: int, path: Path) -> Path:
    """Texts of 600 random whole words of the MiniLM vocabulary (more than 512 tokens), random labels."""
    import numpy as np
    import pandas as pd

    from bertkit.data.minilm import minilm_path

    vocab = [w for w in (minilm_path() / "vocab.txt").read_text().split("\n") if w.isalpha() and len(w) > 2]
    rng = np.random.default_rng(0)
    words = np.asarray(vocab)
    texts = [" ".join(words[rng.integers(0, len(words), 600)]) for _ in range(rows)]
    pd.DataFrame({"text": texts, "label": rng.integers(0, 2, rows)}).to_csv(path, index=False)
    return path


def _base_folder(path: Path) -> Path:
    """A random-init BERT-base (12 x 768) model folder with the MiniLM (uncased WordPiece) tokenizer."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from bertkit.data.minilm import minilm_path

    torch.manual_seed(0)
    BertModel(BertConfig(max_position_embeddings=512)).save_pretrained(path)
    AutoTokenizer.from_pretrained(str(minilm_path())).save_pretrained(path)
    return path


# ------------------------------------------------------------------------------------------ child processes
def child_hf_train(
    data: Path, model: str, max_length: int, test: Path | None, compile_: bool, out: Path
) -> dict:
    """transformers.Trainer, bf16, its defaults otherwise."""
    import numpy as np
    import pandas as pd
    import torch
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    tok = AutoTokenizer.from_pretrained(model)
    frame = pd.read_csv(data)

    class DS(torch.utils.data.Dataset):
        def __init__(self, f: Any) -> None:
            self.enc = tok(f["text"].tolist(), truncation=True, max_length=max_length)
            self.labels = f["label"].tolist()

        def __len__(self) -> int:
            return len(self.labels)

        def __getitem__(self, i: int) -> dict:
            return {k: v[i] for k, v in self.enc.items()} | {"labels": self.labels[i]}

    t_tok = time.perf_counter()
    train_ds = DS(frame)
    tokenize_s = time.perf_counter() - t_tok
    net = AutoModelForSequenceClassification.from_pretrained(model, num_labels=2)
    steps = -(-len(frame) // 32)
    args = TrainingArguments(
        output_dir=str(out),
        num_train_epochs=1,
        per_device_train_batch_size=32,
        per_device_eval_batch_size=128,
        learning_rate=5e-5,
        warmup_steps=round(0.1 * steps),
        weight_decay=0.01,
        seed=0,
        bf16=True,
        use_cpu=not torch.cuda.is_available(),  # a CPU smoke run of this script
        torch_compile=compile_,
        save_strategy="no",
        report_to=[],
        logging_steps=100,
        disable_tqdm=True,
    )
    trainer = Trainer(
        model=net, args=args, train_dataset=train_ds, data_collator=DataCollatorWithPadding(tok)
    )
    _sync()
    t0 = time.perf_counter()
    trainer.train()
    _sync()
    secs = time.perf_counter() - t0
    res: dict[str, Any] = {
        "train_seconds": secs,
        "tokenize_seconds": tokenize_s,
        "samples_per_second": len(frame) / secs,
        "tokens_per_second": sum(len(x) for x in train_ds.enc["input_ids"]) / secs,
        "peak_gpu_mem_gib": _peak_mem_gib(),
    }
    if test is not None:
        test_ds = DS(pd.read_csv(test))
        pred = trainer.predict(test_ds)
        res["accuracy"] = float((np.argmax(pred.predictions, -1) == np.asarray(test_ds.labels)).mean())
    return res


def child_bertkit_train(
    data: Path, model: str, max_length: int, test: Path | None, compile_: bool, out: Path
) -> dict:
    """bertkit's recipe with its defaults (bf16 autocast on the GPU, length buckets)."""
    from bertkit.runconfig import build_run_config
    from bertkit.training.run import train_run

    training: dict[str, Any] = {
        "epochs": 1,
        "batch_size": 32,
        "learning_rate": 5e-5,
        "max_length": max_length,
        "seed": 0,
        "progress": False,
        "calibrate": False,
        "torch_compile": compile_,
    }
    if test is None:
        training["eval_strategy"] = "no"
    cfg = build_run_config(
        "default",
        overrides={"data": {"task": "binary"}, "model": {"backbone": model}, "training": training},
    )
    t0 = time.perf_counter()
    res = train_run(data, out / "run", cfg, test_path=test, write_report=False)
    wall = time.perf_counter() - t0
    m = res.metrics
    out_: dict[str, Any] = {
        "train_seconds": m["train_seconds"],
        "wall_seconds_with_eval": wall,
        "samples_per_second": m["train_samples_per_second"],
        "tokens_per_second": m["train_tokens_per_second"],
        "peak_gpu_mem_gib": _peak_mem_gib(),
    }
    if test is not None:
        out_["accuracy"] = m["test"]["accuracy"]
    return out_


def child_infer(model_dir: Path, texts_file: Path, out: Path) -> dict:
    """bertkit predictor vs transformers.pipeline vs ORT CUDA on the same texts, on the GPU."""
    import pandas as pd
    import torch

    texts = pd.read_csv(texts_file)["text"].astype(str).tolist()
    res: dict[str, Any] = {"texts": len(texts)}

    from bertkit.inference.predictor import load_predictor

    pred = load_predictor(model_dir)
    pred.predict(texts[:256])  # warm-up
    _sync()
    t0 = time.perf_counter()
    pred.predict(texts)
    _sync()
    res["bertkit_texts_per_second"] = len(texts) / (time.perf_counter() - t0)

    from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

    from bertkit.data.minilm import minilm_path

    # the same encoder (MiniLM) and sequence length: the pipeline's throughput, not its accuracy, is compared
    hf_dir = str(minilm_path())
    tok = AutoTokenizer.from_pretrained(hf_dir, model_max_length=128)
    net = AutoModelForSequenceClassification.from_pretrained(hf_dir, num_labels=2).cuda().eval()
    pipe = pipeline("text-classification", model=net, tokenizer=tok, device=0, batch_size=64, truncation=True)
    pipe(texts[:256])
    _sync()
    t0 = time.perf_counter()
    pipe(texts)
    _sync()
    res["pipeline_fp32_texts_per_second"] = len(texts) / (time.perf_counter() - t0)
    pipe16 = pipeline(
        "text-classification",
        model=net.to(torch.bfloat16),
        tokenizer=tok,
        device=0,
        batch_size=64,
        truncation=True,
    )
    pipe16(texts[:256])
    _sync()
    t0 = time.perf_counter()
    pipe16(texts)
    _sync()
    res["pipeline_bf16_texts_per_second"] = len(texts) / (time.perf_counter() - t0)
    try:
        import onnxruntime as ort

        res["ort_providers"] = ort.get_available_providers()
    except ImportError:
        res["ort_providers"] = []
    return res


def run_child(kind: str, payload: dict) -> dict:
    """Run one configuration in a fresh process; a failure is recorded, not fatal."""
    cmd = [sys.executable, __file__, "--child", kind, "--payload", json.dumps(payload)]
    t0 = time.perf_counter()
    proc = subprocess.run(
        cmd, capture_output=True, text=True, env=dict(os.environ, TOKENIZERS_PARALLELISM="false")
    )
    if proc.returncode:
        return {"error": proc.stderr[-2500:], "wall_seconds": time.perf_counter() - t0}
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_wall_seconds"] = time.perf_counter() - t0
    return out


def _child_main(kind: str, payload: dict) -> None:
    import torch

    torch.backends.cuda.matmul.allow_tf32 = True
    p = {
        k: (Path(v) if k in ("data", "test", "out", "model_dir", "texts_file") and v else v)
        for k, v in payload.items()
    }
    if kind == "hf_train":
        res = child_hf_train(p["data"], p["model"], p["max_length"], p.get("test"), p["compile"], p["out"])
    elif kind == "bertkit_train":
        res = child_bertkit_train(
            p["data"], p["model"], p["max_length"], p.get("test"), p["compile"], p["out"]
        )
    else:
        res = child_infer(p["model_dir"], p["texts_file"], p["out"])
    print(json.dumps(res))


def _mfu(tokens_per_s: float, n_params: int, layers: int, hidden: int, seq: int, peak: float) -> float:
    return tokens_per_s * (6 * n_params + 12 * layers * hidden * seq) / peak


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", default=str(RESULTS / "gpu.json"))
    ap.add_argument("--only", default="train_sst2,train_base512,infer_sst2")
    ap.add_argument("--sst2-rows", type=int, default=0, help="SST-2 training rows (0: all 67,349)")
    ap.add_argument("--base-rows", type=int, default=4000, help="synthetic 512-token rows")
    ap.add_argument("--peak-tflops", type=float, default=989.0, help="dense bf16 peak of the GPU")
    ap.add_argument("--work", default=None, help="scratch folder (default: a temporary one)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--payload", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child_main(args.child, json.loads(args.payload))
        return
    import torch
    import transformers

    work = Path(args.work or tempfile.mkdtemp(prefix="bench_gpu_"))
    work.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "machine": {
            "gpu": _gpu_name(),
            "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "peak_bf16_tflops": args.peak_tflops,
        }
    }
    out_path = Path(args.output)
    out_path.parent.mkdir(parents=True, exist_ok=True)

    def save() -> None:
        out_path.write_text(json.dumps(report, indent=2) + "\n")
        print(json.dumps(report, indent=2)[-1500:], flush=True)

    sections = set(args.only.split(","))
    from bertkit.data.minilm import minilm_path

    minilm = str(minilm_path())
    sst2_run = work / "sst2_bertkit"
    if "train_sst2" in sections:
        train_csv = work / "sst2_train.csv"
        _sst2(args.sst2_rows).to_csv(train_csv, index=False)
        common = {"data": str(train_csv), "model": minilm, "max_length": 128, "test": str(DATA / "test.csv")}
        sec: dict[str, Any] = {}
        sec["hf_trainer_bf16"] = run_child("hf_train", common | {"compile": False, "out": str(work / "hf")})
        save()
        sec["bertkit"] = run_child("bertkit_train", common | {"compile": False, "out": str(sst2_run)})
        if "samples_per_second" in sec["bertkit"] and "samples_per_second" in sec["hf_trainer_bf16"]:
            sec["speedup"] = (
                sec["bertkit"]["samples_per_second"] / sec["hf_trainer_bf16"]["samples_per_second"]
            )
        report["train_sst2"] = sec
        save()
    if "train_base512" in sections:
        from transformers import BertConfig

        folder = _base_folder(work / "bert_base_random")
        data = _synthetic(args.base_rows, work / "synthetic512.csv")
        cfg = BertConfig()
        emb = cfg.vocab_size * cfg.hidden_size + 512 * cfg.hidden_size + 2 * cfg.hidden_size
        from transformers import BertModel

        n_all = sum(p.numel() for p in BertModel(cfg).parameters())
        n_params = n_all - emb
        peak = args.peak_tflops * 1e12
        sec = {"non_embedding_params": n_params, "rows": args.base_rows, "seq_len": 512}
        for name, kind, comp in (
            ("hf_trainer_bf16", "hf_train", False),
            ("bertkit", "bertkit_train", False),
            ("hf_trainer_bf16_compile", "hf_train", True),
            ("bertkit_compile", "bertkit_train", True),
        ):
            payload = {
                "data": str(data),
                "model": str(folder),
                "max_length": 512,
                "test": None,
                "compile": comp,
            }
            res = run_child(kind, payload | {"out": str(work / f"b512_{name}")})
            if "tokens_per_second" in res:
                res["mfu"] = _mfu(res["tokens_per_second"], n_params, 12, 768, 512, peak)
            sec[name] = res
            report["train_base512"] = sec
            save()
    if "infer_sst2" in sections and (sst2_run / "run").is_dir():
        import pandas as pd

        test = pd.read_csv(DATA / "test.csv")
        texts = pd.concat([test] * (20000 // len(test) + 1)).head(20000)
        texts_file = work / "infer_texts.csv"
        texts.to_csv(texts_file, index=False)
        report["infer_sst2"] = run_child(
            "infer",
            {"model_dir": str(sst2_run / "run"), "texts_file": str(texts_file), "out": str(work / "inf")},
        )
        save()
    save()


if __name__ == "__main__":
    main()
