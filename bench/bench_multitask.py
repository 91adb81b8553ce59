"""Acceptance experiments of issue 8 (multi-task model, adapters, parity, MBTI) on the shared datasets.

Experiments (``--experiment``, default ``all``):

* ``mtl``: SST-2 + TREC + CoNLL-2003 subsets on MiniLM — one multi-task model (full fine-tuning) per
  ``--mtl-variants`` entry (task sampling; PCGrad; PCGrad with mean-norm balancing; PCGrad at sqrt(K) x the
  learning rate, with or without balancing) against single-task models trained for the same number of
  optimiser steps; reports each task's test metric and the gap in points. ``--singles-from`` reuses the
  single-task baselines of an earlier result file with the same sizes.
* ``strategies``: the same three tasks under S1, S2, S3a (attention and gated fusion), S3b and S4:
  trainable parameters, test metrics, and a save → load check (the reloaded model's test metrics and loss
  must equal the in-run ones).
* ``parity``: the A1–A4 ablation models with ranks adjusted to A4's budget; ``assert_parameter_parity``.
* ``mbti``: the MBTI preset (4 named binary dimensions): per-dimension and all-four accuracy beside the
  majority baseline.

Smoke sizes are the defaults (minutes on 2 CPU cores); the full runs are e.g.::

    python bench/bench_multitask.py --steps 3000 --train-samples 20000 --eval-samples 0 --batch-size 32 \\
        --max-length 128 --threads 0 --output bench/results_multitask_full.json

Results are printed and written as JSON (``--output``).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
sys.path.insert(0, str(REPO))


def task_specs(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """SST-2 (binary), TREC (6-way) and CoNLL-2003 (NER) subsets."""
    n, e = args.train_samples or None, args.eval_samples or None
    return {
        "sst2": {
            "train": str(DATA / "sst2/train.csv"),
            "valid": str(DATA / "sst2/validation.csv"),
            "test": str(DATA / "sst2/test.csv"),
            "head": "binary_classification",
            "max_train_samples": n,
            "max_eval_samples": e,
        },
        "trec": {
            "train": str(DATA / "trec/train.csv"),
            "test": str(DATA / "trec/test.csv"),
            "task": "multiclass",
            "label_column": "label",
            "head": "multiclass_classification",
            "max_train_samples": n,
            "max_eval_samples": e,
        },
        "conll": {
            "train": str(DATA / "conll2003/train.conll"),
            "valid": str(DATA / "conll2003/validation.conll"),
            "test": str(DATA / "conll2003/test.conll"),
            "format": "ner",
            "max_train_samples": n,
            "max_eval_samples": e,
        },
    }


def training(args: argparse.Namespace, **extra: Any) -> dict[str, Any]:
    return {
        "steps": args.steps,
        "batch_size": args.batch_size,
        "learning_rate": args.lr,
        "max_length": args.max_length,
        "num_threads": args.threads,
        "progress": False,
        "eval_every": max(1, args.steps // 2),
        "sampling": "proportional",
        "seed": args.seed,
        "warmup_ratio": 0.1,
        **extra,
    }


def run(
    name: str,
    tasks: dict[str, Any],
    args: argparse.Namespace,
    adapters: dict | None = None,
    model: dict | None = None,
    check_roundtrip: bool = False,
    **train_extra: Any,
) -> dict[str, Any]:
    """Train one configuration; returns its test metrics (and the save → load comparison)."""
    from bertkit.multitask.config import MultiTaskConfig
    from bertkit.multitask.runner import evaluate_multitask, train_multitask

    cfg = MultiTaskConfig.from_dict(
        {
            "model": {"backbone": args.backbone, **(model or {})},
            "adapters": adapters or {"strategy": "none"},
            "training": training(args, **train_extra),
            "tasks": tasks,
        }
    )
    out = Path(args.workdir) / name
    t0 = time.perf_counter()
    metrics = train_multitask(cfg, out)
    row: dict[str, Any] = {
        "name": name,
        "seconds": round(time.perf_counter() - t0, 1),
        "trainable": metrics["trainable_parameters"],
        "steps": metrics["global_step"],
        "task_steps": {t: v["steps"] for t, v in metrics["tasks"].items()},
        "test": {t: v["test"].get(v["primary_metric"]) for t, v in metrics["tasks"].items()},
        "test_all": {t: v["test"] for t, v in metrics["tasks"].items()},
    }
    if check_roundtrip:
        again = evaluate_multitask(out / "model", out / "config.yaml")
        diffs = [
            abs(again[f"{t}.{k}"] - v)
            for t, m in row["test_all"].items()
            for k, v in m.items()
            if isinstance(v, float) and f"{t}.{k}" in again
        ]
        row["roundtrip_max_abs_diff"] = max(diffs) if diffs else None
    print(json.dumps({k: v for k, v in row.items() if k != "test_all"}), flush=True)
    return row


MTL_VARIANTS = {
    "none": ("multitask", {"gradient_surgery": "none"}),
    "pcgrad": ("multitask_pcgrad", {"gradient_surgery": "pcgrad"}),
    "pcgrad_mean_norm": (
        "multitask_pcgrad_mean_norm",
        {"gradient_surgery": "pcgrad", "gradient_balance": "mean_norm"},
    ),
    # PCGrad sums K task gradients and AdamW normalises the sum per coordinate: each task moves ~1/sqrt(K) as
    # far per step as alone, so this variant also multiplies the learning rate by sqrt(K)
    "pcgrad_sqrtk_lr": (
        "multitask_pcgrad_sqrtk_lr",
        {"gradient_surgery": "pcgrad", "lr_scale": "sqrt_tasks"},
    ),
    "pcgrad_mean_norm_sqrtk_lr": (
        "multitask_pcgrad_mean_norm_sqrtk_lr",
        {"gradient_surgery": "pcgrad", "gradient_balance": "mean_norm", "lr_scale": "sqrt_tasks"},
    ),
}
SAME_SIZE_ARGS = (
    "backbone",
    "steps",
    "train_samples",
    "eval_samples",
    "batch_size",
    "max_length",
    "lr",
    "seed",
)


def previous_singles(args: argparse.Namespace) -> dict[int, dict[str, Any]]:
    """Single-task rows of an earlier ``--experiment mtl`` result with the same sizes (``--singles-from``)."""
    if not args.singles_from:
        return {}
    old = json.loads(Path(args.singles_from).read_text())
    differ = [k for k in SAME_SIZE_ARGS if old["args"].get(k) != getattr(args, k)]
    if differ:
        raise SystemExit(f"--singles-from {args.singles_from} was run with other {', '.join(differ)}")
    matched: dict[int, dict[str, Any]] = {args.steps: old["mtl"]["single"]}
    for label, res in old["mtl"].items():  # the same-steps baselines of the earlier multi-task rows
        for t, same in res.get("single_same_steps", {}).items():
            matched.setdefault(int(same["steps"]), {})[t] = {"test": {t: same["test"]}, "reused": label}
    return matched


def exp_mtl(args: argparse.Namespace) -> dict[str, Any]:
    tasks = task_specs(args)
    matched = previous_singles(args)  # single-task runs by their step count
    if args.steps not in matched:
        matched[args.steps] = {t: run(f"single_{t}", {t: spec}, args) for t, spec in tasks.items()}
    single = matched[args.steps]
    out: dict[str, Any] = {"single": single}
    for variant in args.mtl_variants.split(","):
        if variant not in MTL_VARIANTS:
            raise SystemExit(
                f"unknown --mtl-variants entry {variant!r}; choose from {', '.join(MTL_VARIANTS)}"
            )
        label, extra = MTL_VARIANTS[variant]
        extra = dict(extra)
        if extra.pop("lr_scale", None) == "sqrt_tasks":
            extra["learning_rate"] = args.lr * len(tasks) ** 0.5
        res = run(label, tasks, args, **extra)
        # "the same number of steps on that task": a single-task model trained for as many optimiser steps as
        # the multi-task run gave the task (proportional sampling splits the steps; PCGrad gives every task
        # every step), beside the full-budget single-task model
        same: dict[str, Any] = {}
        for t, spec in tasks.items():
            n = int(res["task_steps"][t])
            by_steps = matched.setdefault(n, {})
            if t not in by_steps:
                by_steps[t] = run(f"single_{t}_{n}steps", {t: spec}, args, steps=n, eval_every=max(1, n // 2))
            same[t] = {"steps": n, "test": by_steps[t]["test"][t]}
        res["single_same_steps"] = same
        res["gap_points"] = {t: round(100 * (res["test"][t] - same[t]["test"]), 2) for t in tasks}
        res["gap_points_vs_full_budget"] = {
            t: round(100 * (res["test"][t] - single[t]["test"][t]), 2) for t in tasks
        }
        res["within_1.5_points"] = all(g >= -1.5 for g in res["gap_points"].values())
        out[label] = res
    return out


def exp_strategies(args: argparse.Namespace) -> dict[str, Any]:
    tasks = task_specs(args)
    configs = {
        "S1": {"strategy": "s1"},
        "S2": {"strategy": "s2"},
        "S3a_attention": {"strategy": "s3a", "fusion": "attention"},
        "S3a_gated": {"strategy": "s3a", "fusion": "gated"},
        "S3b": {"strategy": "s3b", "levels": {"conll": 1, "sst2": 2, "trec": 2}},
        "S4": {"strategy": "s4"},
    }
    chosen = args.strategies.split(",") if args.strategies else list(configs)
    unknown = sorted(set(chosen) - set(configs))
    if unknown:
        raise SystemExit(f"unknown strategies {unknown}; choose from {', '.join(configs)}")
    return {
        name: run(name, tasks, args, adapters=configs[name], check_roundtrip=True, learning_rate=args.lora_lr)
        for name in chosen
    }


def exp_parity(args: argparse.Namespace) -> dict[str, Any]:
    from bertkit.multitask import build_ablation_models, count_trainable_parameters

    heads = {
        "sst2": {"head_type": "binary", "num_labels": 2},
        "trec": {"head_type": "multiclass", "num_labels": 6},
        "conll": {
            "head_type": "ner",
            "label_names": ["O"] + [f"{p}-{t}" for t in ("LOC", "MISC", "ORG", "PER") for p in "BI"],
        },
    }
    models, settings = build_ablation_models(heads, bert_name=args.backbone, tolerance=0.05)
    counts = {k: count_trainable_parameters(m) for k, m in models.items()}
    spread = (max(counts.values()) - min(counts.values())) / max(counts.values())
    res = {"counts": counts, "settings": settings, "spread": round(spread, 4), "passes": spread <= 0.05}
    print(json.dumps(res), flush=True)
    return res


def exp_mbti(args: argparse.Namespace) -> dict[str, Any]:
    spec = {
        "train": str(DATA / "mbti/train.csv"),
        "test": str(DATA / "mbti/test.csv"),
        "type_dimensions": "mbti",
        "max_train_samples": args.train_samples or None,
        "max_eval_samples": args.eval_samples or None,
    }
    res = run(
        "mbti",
        {"mbti": spec},
        args,
        model={"use_task_specific_projections": False},
        max_length=args.mbti_max_length,
    )
    m = res["test_all"]["mbti"]
    dims = ("EI", "SN", "TF", "JP")
    summary = {d: {"accuracy": m[f"accuracy_{d}"], "majority": m[f"baseline_accuracy_{d}"]} for d in dims}
    summary["all_four"] = {
        "accuracy": m["all_dimensions_accuracy"],
        "majority": m["baseline_all_dimensions_accuracy"],
    }
    print(json.dumps(summary), flush=True)
    return {"run": res, "summary": summary}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--experiment", default="all", choices=["all", "mtl", "strategies", "parity", "mbti"])
    p.add_argument("--strategies", default="", help="comma-separated subset of S1,S2,S3a_attention,...")
    p.add_argument(
        "--mtl-variants",
        default="none,pcgrad,pcgrad_mean_norm_sqrtk_lr",
        help="multi-task runs of --experiment mtl: " + ", ".join(MTL_VARIANTS),
    )
    p.add_argument(
        "--singles-from",
        default=None,
        help="an earlier --experiment mtl JSON with the same sizes: reuse its single-task baselines",
    )
    p.add_argument("--backbone", default="minilm")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--train-samples", type=int, default=400)
    p.add_argument("--eval-samples", type=int, default=200)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--max-length", type=int, default=64)
    p.add_argument("--mbti-max-length", type=int, default=128)
    p.add_argument("--lr", type=float, default=5e-5)
    p.add_argument("--lora-lr", type=float, default=5e-4)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workdir", default=None)
    p.add_argument("--output", default=None)
    args = p.parse_args()
    warnings.filterwarnings("ignore")
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    args.workdir = args.workdir or tempfile.mkdtemp(prefix="bench_mt_")
    todo = ["parity", "mtl", "strategies", "mbti"] if args.experiment == "all" else [args.experiment]
    funcs = {"mtl": exp_mtl, "strategies": exp_strategies, "parity": exp_parity, "mbti": exp_mbti}
    results = {"args": vars(args), **{name: funcs[name](args) for name in todo}}
    if args.output:
        Path(args.output).write_text(json.dumps(results, indent=2, default=str))
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
