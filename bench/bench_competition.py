"""The §3 ablations of issue 9: ``--preset default`` vs each trick vs ``--preset competition`` with the bundled
MiniLM on 3 folds, for ``emotion`` (multiclass, macro-F1) and ``commonlit`` (regression, RMSE).

Every variant runs on the same rows, folds, seeds and number of epochs (``bertkit.training.ablate``). Per
dataset it writes ``OUT/<dataset>/ablation.csv`` and ``report.html``; ``OUT/summary.md`` holds both tables
and, per dataset, whether ``competition`` beats ``default`` by more than the fold-to-fold standard deviation.

Full run (GPU, or a free CPU for many hours)::

    python bench/bench_competition.py --output runs/bench_competition

Smoke run (a couple of minutes on a free 2-core CPU; numbers are noise)::

    python bench/bench_competition.py --rows 240 --epochs 1 --max-length 128 --tries preset:competition \\
        --datasets commonlit --output /tmp/bench_smoke
"""

from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DATA = ROOT.parent / "shared" / "data"
DATASETS = {
    "emotion": {"file": DATA / "emotion" / "train.csv", "metric": "macro_f1", "sets": []},
    "commonlit": {
        "file": DATA / "commonlit" / "train.csv",
        "metric": "rmse",
        "sets": ["data.text_column=text", "data.label_column=label"],
    },
}
DEFAULT_TRIES = (
    "fgm,awp,ema,swa,msd,llrd,headlr,cosine,reinit2,mean,gem,layerwsum,headtail,nodropout,preset:competition"
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--output", type=Path, default=Path("runs/bench_competition"))
    ap.add_argument("--datasets", default="emotion,commonlit", help="comma-separated: emotion,commonlit")
    ap.add_argument(
        "--tries", default=DEFAULT_TRIES, help="switches compared with the base (see bertkit ablate)"
    )
    ap.add_argument("--base", default="default", help="base preset")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--epochs", type=float, default=3, help="the same for every variant")
    ap.add_argument("--rows", type=int, default=0, help="use N rows per dataset (0: all)")
    ap.add_argument(
        "--max-length", type=int, default=0, help="override max_length in every variant (0: presets')"
    )
    ap.add_argument("--batch-size", type=int, default=0, help="override batch_size (0: presets')")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", help="auto | cpu | cuda")
    ap.add_argument(
        "--backbone", default="minilm", help="backbone of every variant (default: the bundled MiniLM)"
    )
    ap.add_argument(
        "--set", dest="sets", action="append", default=[], help="extra key=value for every variant"
    )
    return ap.parse_args(argv)


def run_dataset(name: str, args: argparse.Namespace) -> tuple[object, float]:
    from bertkit.training.ablate import ablate

    spec = DATASETS[name]
    sets = [
        f"model.backbone={args.backbone}",
        f"training.epochs={args.epochs}",
        f"training.seed={args.seed}",
        f"training.device={args.device}",
        "training.progress=false",
        *spec["sets"],
        *args.sets,
    ]
    if args.rows:
        sets.append(f"data.max_train_samples={args.rows}")
    if args.max_length:
        sets.append(f"training.max_length={args.max_length}")
    if args.batch_size:
        sets.append(f"training.batch_size={args.batch_size}")
    tries = [t for t in args.tries.split(",") if t.strip()]
    t0 = time.perf_counter()
    table = ablate(
        spec["file"],
        args.output / name,
        tries,
        folds=args.folds,
        base=args.base,
        sets=sets,
        metric=spec["metric"],
    )
    return table, time.perf_counter() - t0


def summary_markdown(results: dict[str, object], args: argparse.Namespace) -> str:
    lines = [
        f"# Competition-trick ablation ({args.backbone}, {args.folds} folds, {args.epochs:g} epochs, "
        f"rows={args.rows or 'all'}, base={args.base})",
        "",
    ]
    for name, (table, secs) in results.items():
        metric = table["metric"].iloc[0]
        lines += [
            f"## {name} ({metric}; {'lower' if metric == 'rmse' else 'higher'} is better; {secs / 60:.1f} min)",
            "",
            "| variant | switch | mean ± std | Δ vs base | Δ / base std | time × |",
            "|---|---|---|---|---|---|",
        ]
        for _, r in table.iterrows():
            lines.append(
                f"| {r['variant']} | {r['switch']} | {r['mean_pm_std']} | {r['delta']:+.4f} | "
                f"{r['delta_in_base_std']:+.2f} | {r['time_ratio']:.2f} |"
            )
        comp = table[table["variant"] == "preset:competition"]
        if len(comp):
            verdict = bool(comp["beats_by_more_than_std"].iloc[0])
            lines += ["", f"competition beats {args.base} by more than the fold std: **{verdict}**"]
        lines.append("")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    for name in ("transformers", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    results = {}
    for name in [d.strip() for d in args.datasets.split(",") if d.strip()]:
        if name not in DATASETS:
            raise SystemExit(f"unknown dataset {name}; choose from {', '.join(DATASETS)}")
        if not DATASETS[name]["file"].is_file():
            raise SystemExit(f"{DATASETS[name]['file']} is missing (needs the ../shared/data checkout)")
        results[name] = run_dataset(name, args)
    text = summary_markdown(results, args)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "summary.md").write_text(text, encoding="utf-8")
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
