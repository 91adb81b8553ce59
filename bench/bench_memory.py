"""Peak memory of training from the on-disk token cache at growing row counts (10k, 100k, 1M rows).

For each row count the script writes a CSV of that many rows built from real rows of ``--source`` (cycled,
each copy given a running id so rows are distinct), then runs one fresh child process that

1. builds the token cache from the file (pandas ``chunksize`` reading, process-pool tokenization), or reuses it,
2. trains a tiny model with the regular Trainer for ``--train-steps`` optimizer steps on the memory-mapped data
   (length-bucketed sampling over *all* rows), and
3. reports its peak RSS (``ru_maxrss``) and that of its tokenizer workers, plus wall times.

With ``--baseline`` the same child also tokenizes the file in memory (``read_table`` + ``tokenize_texts``,
what ``bertkit train`` does without ``data.cache_dir``) for row counts up to ``--baseline-max-rows``, to show
the memory the cache saves.

Usage::

    # smoke
    python bench/bench_memory.py --rows 2000,8000 --train-steps 3
    # full (the lead's benchmark)
    python bench/bench_memory.py --source ../shared/data/sst2/train.csv --rows 10000,100000,1000000 \\
        --train-steps 20 --baseline --output bench/results/memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHILD = textwrap.dedent(
    """
    import json, resource, sys, time
    import numpy as np, torch
    from bertkit import create_bert_with_head
    from bertkit.config import TrainingConfig
    from bertkit.data import analyze_dataset, read_table, prepare_frame, tokenize_texts
    from bertkit.data.cache import cached_dataset_from_file
    from bertkit.model import load_tokenizer
    from bertkit.training import Trainer

    args = json.loads(sys.argv[1])
    torch.set_num_threads(args["threads"])
    tok = load_tokenizer("minilm")
    import pandas as pd
    profile = analyze_dataset(pd.read_csv(args["csv"], nrows=2000))  # columns and labels from a sample
    rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
    out = {"rows": args["rows"], "rss_after_imports_mb": rss()}
    t0 = time.perf_counter()
    ds = cached_dataset_from_file(args["csv"], profile, tok, args["cache"], max_length=args["max_length"],
                                  chunksize=args["chunksize"], num_workers=args["workers"])
    out.update(cache_seconds=round(time.perf_counter() - t0, 2), cached_rows=len(ds), tokens=int(ds.meta["tokens"]),
               rss_after_cache_mb=rss())
    torch.manual_seed(0)
    model = create_bert_with_head(num_labels=len(profile.label_names), label_names=profile.label_names,
                                  bert_config={"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
                                               "intermediate_size": 64}, tokenizer=tok)
    steps, bs = args["train_steps"], args["batch_size"]
    cfg = TrainingConfig(epochs=steps * bs / len(ds), batch_size=bs, learning_rate=1e-3, progress=False,
                         max_length=args["max_length"], device="cpu", num_threads=args["threads"])
    t0 = time.perf_counter()
    result = Trainer(model, None, cfg).train(ds)
    out.update(train_steps=result.global_step, train_seconds=round(time.perf_counter() - t0, 2),
               peak_rss_mb=rss(), workers_peak_rss_mb=resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss // 1024)
    if args["baseline"]:
        df = read_table(args["csv"])
        prep = prepare_frame(df, profile)
        feats = tokenize_texts(tok, prep.texts_a, max_length=args["max_length"])
        out["in_memory_tokenization_peak_rss_mb"] = rss()
        del feats, prep, df
    print("RESULT " + json.dumps(out))
    """
)


def make_csv(source: Path, rows: int, path: Path) -> Path:
    """``rows`` rows cycling through ``source``'s real rows, each with a running ``id``; written in chunks."""
    from bertkit.data import read_table

    src = read_table(source)
    with open(path, "w", encoding="utf-8", newline="") as fh:
        written = 0
        while written < rows:
            take = min(len(src), rows - written)
            part = src.iloc[:take].copy()
            part.insert(0, "id", range(written, written + take))
            part.to_csv(fh, header=written == 0, index=False)
            written += take
    return path


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--source", default=str(ROOT / "bertkit" / "data" / "examples" / "demo_reviews.csv"))
    ap.add_argument("--rows", default="10000,100000,1000000")
    ap.add_argument("--train-steps", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--max-length", type=int, default=64)
    ap.add_argument("--chunksize", type=int, default=20_000)
    ap.add_argument("--workers", type=int, default=0, help="tokenizer processes (0: the usable cores)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads of the training child")
    ap.add_argument("--baseline", action="store_true", help="also measure in-memory tokenization")
    ap.add_argument("--baseline-max-rows", type=int, default=100_000)
    ap.add_argument("--workdir", default=None, help="where CSVs and the cache go (default: a temp folder)")
    ap.add_argument("--output", default=None)
    args = ap.parse_args(argv)

    tmp = tempfile.TemporaryDirectory()
    work = Path(args.workdir or tmp.name)
    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "HF_HUB_OFFLINE": "1"}
    results = []
    for rows in [int(r) for r in args.rows.split(",")]:
        csv = work / f"rows_{rows}.csv"
        if not csv.is_file():
            t0 = time.perf_counter()
            make_csv(Path(args.source), rows, csv)
            print(
                f"wrote {csv} ({csv.stat().st_size / 1e6:.1f} MB) in {time.perf_counter() - t0:.1f}s",
                flush=True,
            )
        child_args = {
            "csv": str(csv),
            "cache": str(work / "cache"),
            "rows": rows,
            "max_length": args.max_length,
            "chunksize": args.chunksize,
            "workers": args.workers or None,
            "threads": args.threads,
            "train_steps": args.train_steps,
            "batch_size": args.batch_size,
            "baseline": args.baseline and rows <= args.baseline_max_rows,
        }
        proc = subprocess.run(
            [sys.executable, "-c", CHILD, json.dumps(child_args)],
            capture_output=True,
            text=True,
            env=env,
            cwd=ROOT,
        )
        if proc.returncode != 0:
            raise SystemExit(proc.stderr[-3000:])
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")][-1]
        row = {"csv_mb": round(csv.stat().st_size / 1e6, 1), **json.loads(line[len("RESULT ") :])}
        print(json.dumps(row), flush=True)
        results.append(row)
    report = {
        "source": args.source,
        "train_steps": args.train_steps,
        "max_length": args.max_length,
        "chunksize": args.chunksize,
        "results": results,
    }
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(report, indent=2), encoding="utf-8")
    print(json.dumps(report, indent=2))
    tmp.cleanup()
    return report


if __name__ == "__main__":
    main()
