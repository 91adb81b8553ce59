"""Issue-6 acceptance: pair tasks against the Hugging Face / sentence-transformers way, one command.

Both sides use the bundled MiniLM, the same rows, epochs, batch size, learning rate, warmup (10%), weight decay
(0.01), max_length and seed; every number is measured here, in this process:

* ``stsb_cross`` — STS-B cross-encoder regression: bertkit ``regression`` head on (text_a, text_b) vs
  ``AutoModelForSequenceClassification(num_labels=1)`` + ``Trainer``. Spearman on the first 1,000 test rows
  (issue reference: HF 0.700 at 1 epoch).
* ``stsb_bi`` — STS-B bi-encoder: bertkit ``text_similarity`` (CoSENT, mean pooling) vs sentence-transformers'
  own ``SentenceTransformerTrainer`` with ``CoSENTLoss``; Spearman of the cosine (plus the untrained model).
* ``mrpc`` — MRPC pair classification: bertkit binary cross-encoder, with class weights (``pos_weight`` =
  negatives/positives) and with more epochs, vs ``AutoModelForSequenceClassification(num_labels=2)`` +
  ``Trainer``: accuracy, F1 (paraphrase class) and macro-F1 (issue reference: HF 0.711 / macro-F1 0.567).
* ``wikiqa`` — WikiQA answer selection with the bertkit reranker: pointwise, pairwise (RankNet) and listwise
  objectives side by side (+ the bi-encoder retriever, listwise): MRR, MAP, NDCG@10 on the test queries.

Full run (all training rows; STS-B on its first 1,000 test rows, MRPC and WikiQA on their whole test sets;
roughly an hour on a free 2-core CPU, minutes on a GPU)::

    .venv/bin/python bench/bench_pairs.py                       # writes bench/results/pairs.json
    .venv/bin/python bench/bench_pairs.py --tasks stsb_cross,stsb_bi   # a subset

Smoke run (128 training / 128 test rows per task, 1 thread; checks the plumbing, the numbers mean nothing)::

    .venv/bin/python bench/bench_pairs.py --smoke               # writes bench/results/pairs_smoke.json
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

import numpy as np
import pandas as pd
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"
DEFAULT_TEST_ROWS = {"stsb": 1000}  # the STS-B protocol; MRPC and WikiQA use their whole test sets
REFERENCE = {"stsb_cross": {"spearman": 0.700}, "mrpc": {"accuracy": 0.711, "macro_f1": 0.567}}


def _quiet() -> None:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    for name in ("transformers", "accelerate", "sentence_transformers", "bertkit"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _rows(df: pd.DataFrame, n: int | None, seed: int, group: str | None = None) -> pd.DataFrame:
    """The first ``n`` rows after a seeded shuffle (whole groups when ``group`` is given); None: all rows."""
    if group is None:
        out = df.sample(frac=1.0, random_state=seed) if n else df
        return out.iloc[:n].reset_index(drop=True) if n else df
    if not n or n >= len(df):
        return df
    keys = df[group].drop_duplicates().sample(frac=1.0, random_state=seed)
    sizes = df[group].value_counts().reindex(keys).cumsum()
    return df[df[group].isin(set(sizes[sizes <= max(n, int(sizes.iloc[0]))].index))].reset_index(drop=True)


def _head_rows(df: pd.DataFrame, n: int | None, group: str | None = None) -> pd.DataFrame:
    """The first ``n`` rows (cut at a group boundary when ``group`` is given)."""
    if not n or n >= len(df):
        return df
    if group is None:
        return df.iloc[:n].reset_index(drop=True)
    keep = set(df[group].iloc[:n].unique()[:-1]) or {df[group].iloc[0]}
    return df[df[group].isin(keep)].reset_index(drop=True)


def _test_rows(a: argparse.Namespace, dataset: str) -> int | None:
    n = a.test_rows if a.test_rows is not None else DEFAULT_TEST_ROWS.get(dataset)
    return n or None


def _correlations(y: np.ndarray, s: np.ndarray) -> dict[str, float]:
    from scipy import stats

    return {"spearman": float(stats.spearmanr(y, s)[0]), "pearson": float(stats.pearsonr(y, s)[0])}


def _classification(y: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import accuracy_score, f1_score

    return {
        "accuracy": float(accuracy_score(y, pred)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0)),
    }


# ------------------------------------------------------------------------------------------- baselines
def hf_cross_encoder(
    train: pd.DataFrame, test: pd.DataFrame, num_labels: int, a: argparse.Namespace
) -> np.ndarray:
    """AutoModelForSequenceClassification + transformers.Trainer; returns test logits [N, num_labels]."""
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
        TrainingArguments,
    )

    from bertkit.data import minilm_path

    tok = AutoTokenizer.from_pretrained(minilm_path())
    model = AutoModelForSequenceClassification.from_pretrained(minilm_path(), num_labels=num_labels)

    def encode(df: pd.DataFrame, labels: bool) -> list[dict[str, Any]]:
        enc = tok(
            df["text_a"].astype(str).tolist(),
            df["text_b"].astype(str).tolist(),
            truncation=True,
            max_length=a.max_length,
        )
        rows = [{k: enc[k][i] for k in enc} for i in range(len(df))]
        if labels:
            for r, y in zip(rows, df["label"]):
                r["labels"] = float(y) if num_labels == 1 else int(y)
        return rows

    with tempfile.TemporaryDirectory() as tmp:
        args = TrainingArguments(
            output_dir=tmp,
            num_train_epochs=a.epochs,
            per_device_train_batch_size=a.batch_size,
            per_device_eval_batch_size=64,
            learning_rate=a.lr,
            warmup_steps=0.1,  # a float < 1 is a ratio (transformers 5)
            weight_decay=0.01,
            seed=a.seed,
            report_to=[],
            save_strategy="no",
            logging_strategy="no",
            disable_tqdm=True,
            use_cpu=not torch.cuda.is_available(),
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=encode(train, True),
            data_collator=DataCollatorWithPadding(tok),
        )
        trainer.train()
        return np.asarray(trainer.predict(encode(test, False)).predictions).reshape(len(test), -1)


def st_cosent(train: pd.DataFrame, test: pd.DataFrame, a: argparse.Namespace, fit: bool = True) -> np.ndarray:
    """sentence-transformers' own training with CoSENTLoss; returns test cosine similarities [N]."""
    from sentence_transformers import SentenceTransformer

    from bertkit.data import minilm_path

    model = SentenceTransformer(str(minilm_path()), device="cuda" if torch.cuda.is_available() else "cpu")
    model.max_seq_length = a.max_length
    if fit:
        from datasets import Dataset
        from sentence_transformers import SentenceTransformerTrainer, SentenceTransformerTrainingArguments
        from sentence_transformers.losses import CoSENTLoss

        data = Dataset.from_dict(
            {
                "sentence1": train["text_a"].astype(str).tolist(),
                "sentence2": train["text_b"].astype(str).tolist(),
                "score": (train["label"].astype(float) / 5.0).tolist(),
            }
        )
        with tempfile.TemporaryDirectory() as tmp:
            args = SentenceTransformerTrainingArguments(
                output_dir=tmp,
                num_train_epochs=a.epochs,
                per_device_train_batch_size=a.batch_size,
                learning_rate=a.lr,
                warmup_steps=0.1,  # a float < 1 is a ratio (transformers 5)
                weight_decay=0.01,
                seed=a.seed,
                report_to=[],
                save_strategy="no",
                logging_strategy="no",
                disable_tqdm=True,
                use_cpu=not torch.cuda.is_available(),
            )
            SentenceTransformerTrainer(
                model=model, args=args, train_dataset=data, loss=CoSENTLoss(model)
            ).train()
    u = model.encode(test["text_a"].astype(str).tolist(), batch_size=64, convert_to_numpy=True)
    v = model.encode(test["text_b"].astype(str).tolist(), batch_size=64, convert_to_numpy=True)
    return (u * v).sum(1) / (np.linalg.norm(u, axis=1) * np.linalg.norm(v, axis=1)).clip(1e-12)


# --------------------------------------------------------------------------------------------- bertkit
def _cfg(a: argparse.Namespace, data: dict[str, Any], model: dict[str, Any], **training: Any) -> Any:
    from bertkit.runconfig import build_run_config

    train = {
        "epochs": a.epochs,
        "batch_size": a.batch_size,
        "learning_rate": a.lr,
        "max_length": a.max_length,
        "seed": a.seed,
        "warmup_ratio": 0.1,
        "weight_decay": 0.01,
        "eval_strategy": "no",
        "progress": False,
        "num_threads": a.threads,
        **training,
    }
    return build_run_config(
        "default", overrides={"data": data, "model": {"backbone": "minilm", **model}, "training": train}
    )


def bertkit_sequence(
    train: pd.DataFrame,
    valid: pd.DataFrame,
    test: pd.DataFrame,
    task: str,
    out: Path,
    a: argparse.Namespace,
    head_options: dict | None = None,
    **training: Any,
) -> pd.DataFrame:
    """Cross-encoder through the sequence pipeline (two text columns → one input); returns test predictions."""
    from bertkit.training.run import train_run

    cfg = _cfg(
        a,
        {"task": task, "text_columns": ["text_a", "text_b"], "label_column": "label"},
        {"head_options": head_options or {}},
        **training,
    )
    train_run(train, out, cfg, valid_path=valid, test_path=test.drop(columns=["label"]), write_report=False)
    return pd.read_csv(out / "test_predictions.csv")


def bertkit_pairs(
    train: pd.DataFrame,
    valid: pd.DataFrame,
    test: pd.DataFrame,
    task: str,
    out: Path,
    a: argparse.Namespace,
    model: dict[str, Any],
    data: dict[str, Any] | None = None,
) -> dict:
    """A pair-runner run (bi-encoder similarity or ranking); returns metrics.json."""
    from bertkit.runners import runner_by_name

    cfg = _cfg(
        a,
        {"task": task, "text_columns": ["text_a", "text_b"], "label_column": "label", **(data or {})},
        model,
    )
    return runner_by_name("pair").train(train, out, cfg, valid=valid, test=test)


# ------------------------------------------------------------------------------------------------ tasks
def _timed(fn: Any, *args: Any, **kw: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    res = fn(*args, **kw)
    return res, round(time.perf_counter() - t0, 1)


def task_stsb_cross(a: argparse.Namespace, work: Path) -> dict[str, Any]:
    d = DATA / "stsb"
    train = _rows(pd.read_csv(d / "train.csv"), a.train_rows, a.seed)
    valid = _head_rows(pd.read_csv(d / "validation.csv"), 200)
    test = _head_rows(pd.read_csv(d / "test.csv"), _test_rows(a, d.name))
    hf, t_hf = _timed(hf_cross_encoder, train, test, 1, a)
    pred, t_bk = _timed(bertkit_sequence, train, valid, test, "regression", work / "stsb_cross", a)
    y = test["label"].to_numpy(float)
    return {
        "hf_trainer": {**_correlations(y, hf[:, 0]), "seconds": t_hf},
        "bertkit": {**_correlations(y, pred["label"].to_numpy(float)), "seconds": t_bk},
        "rows": {"train": len(train), "test": len(test)},
    }


def task_stsb_bi(a: argparse.Namespace, work: Path) -> dict[str, Any]:
    d = DATA / "stsb"
    train = _rows(pd.read_csv(d / "train.csv"), a.train_rows, a.seed)
    valid = _head_rows(pd.read_csv(d / "validation.csv"), 200)
    test = _head_rows(pd.read_csv(d / "test.csv"), _test_rows(a, d.name))
    y = test["label"].to_numpy(float)
    zero, t0 = _timed(st_cosent, train, test, a, fit=False)
    st, t_st = _timed(st_cosent, train, test, a)
    model = {"head": "text_similarity", "pooling": "mean", "head_options": {"loss_type": "cosent"}}
    m, t_bk = _timed(bertkit_pairs, train, valid, test, "similarity", work / "stsb_bi", a, model)
    return {
        "untrained": {**_correlations(y, zero), "seconds": t0},
        "sentence_transformers": {**_correlations(y, st), "seconds": t_st},
        "bertkit": {"spearman": m["test"]["spearman"], "pearson": m["test"]["pearson"], "seconds": t_bk},
        "rows": {"train": len(train), "test": len(test)},
    }


def task_mrpc(a: argparse.Namespace, work: Path) -> dict[str, Any]:
    d = DATA / "mrpc"
    train = _rows(pd.read_csv(d / "train.csv"), a.train_rows, a.seed)
    test = _head_rows(pd.read_csv(d / "test.csv"), _test_rows(a, d.name))
    valid = train.iloc[:200]  # monitor only (eval_strategy "no": final weights, no selection)
    y = test["label"].to_numpy(int)
    hf, t_hf = _timed(hf_cross_encoder, train, test, 2, a)
    out: dict[str, Any] = {"hf_trainer": {**_classification(y, hf.argmax(1)), "seconds": t_hf}}
    pos = float((train["label"] == 1).mean())
    runs = {
        "bertkit": ({}, {}),
        "bertkit_class_weights": ({"pos_weight": round((1 - pos) / pos, 4)}, {}),
        f"bertkit_{a.more_epochs:g}_epochs": ({}, {"epochs": a.more_epochs}),
    }
    for name, (head_options, training) in runs.items():
        pred, secs = _timed(
            bertkit_sequence, train, valid, test, "binary", work / name, a, head_options, **training
        )
        out[name] = {**_classification(y, pred["label"].astype(int).to_numpy()), "seconds": secs}
    out["bertkit_class_weights"]["pos_weight"] = runs["bertkit_class_weights"][0]["pos_weight"]
    out["rows"] = {"train": len(train), "test": len(test)}
    return out


def task_wikiqa(a: argparse.Namespace, work: Path) -> dict[str, Any]:
    d = DATA / "wikiqa"
    train = _rows(pd.read_csv(d / "train.csv"), a.train_rows, a.seed, group="query_id")
    test = _head_rows(pd.read_csv(d / "test.csv"), _test_rows(a, d.name), group="query_id")
    valid = train[train["query_id"].isin(set(train["query_id"].unique()[:20]))]  # monitor only
    out: dict[str, Any] = {}
    runs = {
        "pointwise": ("ranking", "pointwise"),
        "pairwise_ranknet": ("ranking", "ranknet"),
        "listwise": ("ranking", "listwise"),
        "bi_encoder_listwise": ("ranking_bi_encoder", "listwise"),
    }
    for name, (head, loss) in runs.items():
        model = {"head": head, "head_options": {"loss_type": loss}}
        m, secs = _timed(
            bertkit_pairs,
            train,
            valid,
            test,
            "ranking",
            work / f"wikiqa_{name}",
            a,
            model,
            {"group_column": "query_id"},
        )
        t = m["test"]
        out[name] = {
            "mrr": t["mrr"],
            "map": t["map"],
            "ndcg@10": t["ndcg@10"],
            "recall@1": t["recall@1"],
            "seconds": secs,
        }
    out["rows"] = {"train": len(train), "test": len(test), "test_queries": int(test["query_id"].nunique())}
    return out


TASKS = {"stsb_cross": task_stsb_cross, "stsb_bi": task_stsb_bi, "mrpc": task_mrpc, "wikiqa": task_wikiqa}


def _table(results: dict[str, Any]) -> str:
    lines = [f"{'task':<12}{'method':<28}{'metrics':<70}{'seconds':>8}"]
    for task, res in results.items():
        for method, vals in res.items():
            if method == "rows" or not isinstance(vals, dict):
                continue
            shown = "  ".join(f"{k}={v:.4f}" for k, v in vals.items() if k not in ("seconds", "pos_weight"))
            lines.append(f"{task:<12}{method:<28}{shown:<70}{vals.get('seconds', 0):>8}")
        if task in REFERENCE:
            lines.append(
                f"{task:<12}{'(issue reference, HF)':<28}"
                + "  ".join(f"{k}={v:.3f}" for k, v in REFERENCE[task].items())
            )
    return "\n".join(lines)


def _gaps(results: dict[str, Any]) -> dict[str, float]:
    """Acceptance gaps in points (x100): bertkit minus the library baseline on the same run."""
    gaps = {}
    if "stsb_cross" in results:
        r = results["stsb_cross"]
        gaps["stsb_cross_spearman"] = round(100 * (r["bertkit"]["spearman"] - r["hf_trainer"]["spearman"]), 2)
    if "stsb_bi" in results:
        r = results["stsb_bi"]
        gaps["stsb_bi_spearman"] = round(
            100 * (r["bertkit"]["spearman"] - r["sentence_transformers"]["spearman"]), 2
        )
    return gaps


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tasks", default=",".join(TASKS), help=f"comma-separated: {', '.join(TASKS)}")
    ap.add_argument(
        "--train-rows", type=int, default=None, help="training rows after a seeded shuffle (0: all)"
    )
    ap.add_argument(
        "--test-rows",
        type=int,
        default=None,
        help="first N test rows, whole queries (0: all; default 1000 for STS-B, all otherwise)",
    )
    ap.add_argument("--epochs", type=float, default=1.0)
    ap.add_argument("--more-epochs", type=float, default=3.0, help="MRPC's longer bertkit run")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--max-length", type=int, default=128)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument(
        "--smoke",
        action="store_true",
        help="defaults for a quick check: 128 train / 128 test rows, 1 thread, 2 MRPC epochs",
    )
    ap.add_argument("--output", default=None, help="JSON path (default bench/results/pairs[_smoke].json)")
    ap.add_argument("--workdir", default=None, help="run folders (default: a temporary folder)")
    a = ap.parse_args(argv)
    smoke = {"train_rows": 128, "test_rows": 128, "threads": 1, "more_epochs": 2.0} if a.smoke else {}
    a.train_rows = a.train_rows if a.train_rows is not None else smoke.get("train_rows", 0)
    a.test_rows = a.test_rows if a.test_rows is not None else smoke.get("test_rows")
    a.threads = a.threads or smoke.get("threads", 0)
    a.more_epochs = smoke.get("more_epochs", a.more_epochs)
    if not DATA.is_dir():
        sys.exit(f"real data not found at {DATA}")
    _quiet()
    if a.threads:
        torch.set_num_threads(a.threads)
    a.train_rows = a.train_rows or None
    out_path = Path(
        a.output or ROOT / "bench" / "results" / ("pairs_smoke.json" if a.smoke else "pairs.json")
    )
    work = Path(a.workdir or tempfile.mkdtemp(prefix="bench_pairs_"))
    config = {k: v for k, v in vars(a).items() if k not in ("output", "workdir")}
    config["device"] = "cuda" if torch.cuda.is_available() else f"cpu ({torch.get_num_threads()} threads)"
    report: dict[str, Any] = {"config": config, "results": {}, "reference": REFERENCE}
    for name in [t for t in a.tasks.split(",") if t]:
        if name not in TASKS:
            sys.exit(f"unknown task {name!r}; choose from {', '.join(TASKS)}")
        print(f"== {name}", flush=True)
        report["results"][name], secs = _timed(TASKS[name], a, work)
        report["results"][name]["task_seconds"] = secs
        report["gaps_points"] = _gaps(report["results"])
        out_path.parent.mkdir(parents=True, exist_ok=True)
        out_path.write_text(json.dumps(report, indent=2))
    print(_table(report["results"]))
    print("gaps (bertkit - baseline, points):", json.dumps(report.get("gaps_points", {})))
    print(f"wrote {out_path}")
    return report


if __name__ == "__main__":
    main()
