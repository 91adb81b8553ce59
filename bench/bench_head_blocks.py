"""Head building blocks on TREC: the plain CLS head vs the ``efficient`` / ``high_capacity`` presets and each
task-attention type, with the bundled MiniLM, the same data, budget and seed (issue 7, §4).

    .venv/bin/python bench/bench_head_blocks.py                     # all variants, 2 epochs, seed 0
    .venv/bin/python bench/bench_head_blocks.py --epochs 1 --rows 1000 --variants plain,cbam   # a smoke run

Train: TREC train (coarse labels, 6 classes); test: the 500-row TREC test. Writes
``bench/results/head_blocks.json`` and prints a markdown table (accuracy, macro-F1, head parameters, seconds).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
DATA = ROOT.parent / "shared" / "data" / "trec"

#: head ``extra`` of each variant (the create_nlp_head presets spelled as HeadConfig extra keys)
VARIANTS: dict[str, dict] = {
    "plain": {},  # linear layer on the pooled CLS state: what the `efficient` preset builds
    "high_capacity": {
        "intermediate_size": 512,
        "task_attention": "differential",
        "attention_heads": 4,
        "ffn": "swiglu",
        "ffn_expansion_factor": 4,
        "norm": "zero_centered_rms_norm",
    },
    "multi_head": {"task_attention": "multi_head", "attention_heads": 4},
    "cbam": {"task_attention": "cbam"},
    "differential": {"task_attention": "differential", "attention_heads": 4},
}


def run_variant(name: str, args: argparse.Namespace) -> dict:
    from bertkit.runconfig import build_run_config
    from bertkit.training.run import train_run

    overrides = {
        "data": {"text_column": "text", "label_column": "label"},
        "model": {"backbone": "minilm", "pooling": "cls", "head_options": {"extra": VARIANTS[name]}},
        "training": {
            "epochs": args.epochs,
            "batch_size": 32,
            "learning_rate": 5e-5,
            "seed": args.seed,
            "max_length": 64,
            "progress": False,
            "calibrate": False,
        },
    }
    if args.rows:
        overrides["data"]["max_train_samples"] = args.rows
    cfg = build_run_config("default", overrides=overrides)
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        res = train_run(
            DATA / "train.csv", Path(tmp) / name, cfg, test_path=DATA / "test.csv", write_report=False
        )
        seconds = time.perf_counter() - t0
    head_params = sum(p.numel() for p in res.model.head.parameters())
    test = res.metrics["test"]
    return {
        "variant": name,
        "extra": VARIANTS[name],
        "accuracy": round(float(test["accuracy"]), 4),
        "macro_f1": round(float(test["macro_f1"]), 4),
        "head_parameters": int(head_params),
        "seconds": round(seconds, 1),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--epochs", type=float, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--rows", type=int, default=0, help="first N training rows after a seeded shuffle (0: all)"
    )
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--output", type=Path, default=ROOT / "bench" / "results" / "head_blocks.json")
    args = ap.parse_args(argv)
    if not (DATA / "train.csv").is_file():
        raise SystemExit(f"{DATA} is missing (needs the ../shared/data checkout)")
    rows = []
    for name in [v.strip() for v in args.variants.split(",") if v.strip()]:
        if name not in VARIANTS:
            raise SystemExit(f"unknown variant {name}; choose from {', '.join(VARIANTS)}")
        rows.append(run_variant(name, args))
        print(json.dumps(rows[-1]), flush=True)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    payload = {"epochs": args.epochs, "seed": args.seed, "rows": args.rows or "all", "results": rows}
    args.output.write_text(json.dumps(payload, indent=2) + "\n")
    print("\n| variant | accuracy | macro-F1 | head parameters | seconds |\n|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['variant']} | {r['accuracy']:.4f} | {r['macro_f1']:.4f} | {r['head_parameters']:,} | {r['seconds']} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
