"""Issue-3 acceptance: bertkit at the Hugging Face Trainer's budget on real data, one command.

Every run: bundled MiniLM, batch 32, lr 5e-5, warmup 10%, weight decay 0.01, max_length 128, seed 0, training
rows = the first N after a seeded shuffle (``--max-train-samples``). Writes ``bench/results/main_job.json``
and prints a table with the Hugging Face reference numbers measured on this machine beside ours.

    .venv/bin/python bench/acceptance_main_job.py [--only sst2,trec] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

#: name → (train rows or None for all, test rows or None for all, epochs, extra CLI flags, HF reference)
RUNS: dict[str, dict] = {
    "sst2": {
        "n": 4000,
        "test_rows": None,
        "epochs": 1,
        "flags": [],
        "hf": {"accuracy": 0.804, "train_samples_per_second": 30.0},
    },
    "trec": {
        "n": None,
        "test_rows": None,
        "epochs": 1,
        "flags": [],
        "hf": {"accuracy": 0.932, "macro_f1": 0.782},
    },
    "emotion": {
        "n": 8000,
        "test_rows": 1000,
        "epochs": 1,
        "flags": [],
        "hf": {"accuracy": 0.757, "macro_f1": 0.523},
    },
    "commonlit": {
        "n": None,
        "test_rows": None,
        "epochs": 1,
        "flags": [],
        "hf": {"rmse": 0.723, "spearman": 0.772},
    },
    "stsb": {
        "n": None,
        "test_rows": 1000,
        "epochs": 1,
        "flags": [],
        "hf": {"spearman": 0.700, "rmse": 1.181},
    },
    "semeval2018_ec": {
        "n": None,
        "test_rows": None,
        "epochs": 3,
        "flags": [],
        "hf": {"micro_f1": 0.485, "note": "HF at threshold 0.5 on all rows; top-5 baseline 0.487"},
    },
}


def run_one(name: str, spec: dict, out_root: Path) -> dict:
    folder = DATA / name
    test = folder / "test.csv"
    tmp = None
    if spec["test_rows"]:
        tmp = Path(tempfile.mkdtemp()) / "test.csv"
        pd.read_csv(test).iloc[: spec["test_rows"]].to_csv(tmp, index=False)
        test = tmp
    cmd = [
        str(ROOT / ".venv" / "bin" / "bertkit"),
        "train",
        str(folder / "train.csv"),
        "--test",
        str(test),
        "--backbone",
        "minilm",
        "--epochs",
        str(spec["epochs"]),
        "--max-length",
        "128",
        "--batch-size",
        "32",
        "--lr",
        "5e-5",
        "--seed",
        "0",
        "--output",
        str(out_root / name),
        "--set",
        "training.progress=false",
    ]
    if spec["n"]:
        cmd += ["--max-train-samples", str(spec["n"])]
    cmd += spec["flags"]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)
    metrics = json.loads((out_root / name / "metrics.json").read_text())
    return {
        "command": " ".join(cmd),
        "test": metrics.get("test", {}),
        "valid": metrics.get("valid", {}),
        "train_samples_per_second": metrics["train_samples_per_second"],
        "train_seconds": metrics["train_seconds"],
        "hf": spec["hf"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--only", default="", help="comma-separated dataset names")
    parser.add_argument("--out", default=str(ROOT / "runs" / "acceptance"), help="run folders")
    parser.add_argument("--record", default="", help="add an existing run folder: NAME=RUN_DIR (no training)")
    args = parser.parse_args()
    if not DATA.is_dir():
        sys.exit(f"real data not found at {DATA}")
    names = [n for n in RUNS if not args.only or n in args.only.split(",")]
    if args.record:
        name, run_dir = args.record.split("=", 1)
        names = []
        metrics = json.loads((Path(run_dir) / "metrics.json").read_text())
        recorded = {
            "command": f"(recorded from {run_dir})",
            "test": metrics.get("test", {}),
            "valid": metrics.get("valid", {}),
            "train_samples_per_second": metrics["train_samples_per_second"],
            "train_seconds": metrics["train_seconds"],
            "hf": RUNS[name]["hf"],
        }
    res_file = ROOT / "bench" / "results" / "main_job.json"
    results = json.loads(res_file.read_text()) if res_file.is_file() else {}
    if args.record:
        results[name] = recorded
        res_file.parent.mkdir(parents=True, exist_ok=True)
        res_file.write_text(json.dumps(results, indent=2))
    for name in names:
        results[name] = run_one(name, RUNS[name], Path(args.out))
        res_file.parent.mkdir(parents=True, exist_ok=True)
        res_file.write_text(json.dumps(results, indent=2))
    print(f"\n{'dataset':<16}{'metric':<12}{'bertkit':>10}{'HF':>10}{'samples/s':>12}")
    for name, res in results.items():
        for metric, ref in res["hf"].items():
            if isinstance(ref, float) and metric in res["test"]:
                print(
                    f"{name:<16}{metric:<12}{res['test'][metric]:>10.4f}{ref:>10.3f}"
                    f"{res['train_samples_per_second']:>12.1f}"
                )


if __name__ == "__main__":
    main()
