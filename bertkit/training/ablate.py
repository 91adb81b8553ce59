"""Ablation runner: the base configuration and each switch on the same folds and seeds, one table.

``bertkit ablate DATA --folds K --base default --try fgm,awp,ema,msd,llrd,reinit2 --output DIR`` runs
``cross_validate`` for the base preset and for the base plus each switch (a ``--try`` item may also be
``preset:NAME`` to compare whole presets), and writes ``ablation.csv`` / ``ablation.json`` and
``report.html``: mean ± std over folds of the CV metric, the change against the base (also in units of the
base's fold std), the OOF metric and the time cost. Every variant uses the same seed, hence the same rows,
folds and data order. A variant whose folder already holds the metrics of the same config is not rerun.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from bertkit.errors import ConfigError
from bertkit.fileio import write_json_atomic, write_with_atomic
from bertkit.runconfig import PRESETS, RunConfig, build_run_config

logger = logging.getLogger(__name__)

#: switch name → (config overrides, one-line description)
SWITCHES: dict[str, tuple[dict[str, Any], str]] = {
    "fgm": ({"training": {"adversarial": "fgm", "fgm_epsilon": 1.0}}, "FGM on word embeddings (eps 1.0)"),
    "awp": (
        {"training": {"adversarial": "awp", "awp_lr": 1.0, "awp_epsilon": 0.01, "adv_start_epoch": 1}},
        "AWP from epoch 1 (lr 1, eps 0.01)",
    ),
    "ema": ({"training": {"ema_decay": 0.995}}, "EMA of weights, decay 0.995"),
    "swa": ({"training": {"swa_epochs": 1}}, "SWA over the last epoch (4 snapshots)"),
    "soup": ({"training": {"soup_size": 3}}, "greedy soup of the last 3 evaluations (epoch ends)"),
    "msd": ({"model": {"head_options": {"multi_sample_dropout": 5}}}, "multi-sample dropout x5"),
    "llrd": ({"training": {"layerwise_lr_decay": 0.9}}, "layer-wise LR decay 0.9"),
    "headlr": ({"training": {"head_learning_rate": 5.0e-4}}, "head LR 5e-4"),
    "cosine": ({"training": {"scheduler": "cosine"}}, "cosine schedule"),
    "unfreeze": (
        {"training": {"freeze_encoder_epochs": 1, "gradual_unfreeze": True}},
        "head-only epoch 0, then one more layer per epoch",
    ),
    "headtail": ({"training": {"truncation": "head_tail"}}, "head+tail truncation"),
    "chunks": ({"training": {"chunk_stride": 32, "chunk_aggregation": "mean"}}, "sliding-window inference"),
    "postprocess": ({"training": {"postprocess": True}}, "OOF-fitted post-processing (cross-fitted)"),
    "nodropout": ({"model": {"regression_dropout": 0.0}}, "no dropout (regression only)"),
    "freezeemb": ({"training": {"freeze_word_embeddings": True}}, "frozen word embeddings"),
    "mean": ({"model": {"pooling": "mean"}}, "mean pooling"),
    "attention": ({"model": {"pooling": "attention"}}, "attention pooling"),
    "gem": ({"model": {"pooling": "gem"}}, "GeM pooling"),
    "layercls": ({"model": {"pooling": "layer_cls"}}, "last-4-layer CLS concat"),
    "layerwsum": ({"model": {"pooling": "layer_cls_weighted"}}, "last-4-layer CLS weighted sum"),
}

LOWER_IS_BETTER = {"rmse", "mse", "mae", "loss", "log_loss", "hamming_loss", "ece"}
DEFAULT_METRICS = ("rmse", "qwk", "macro_f1", "micro_f1", "accuracy")


def switch_overrides(name: str) -> tuple[str | None, dict[str, Any], str]:
    """(preset or None, overrides, description) of a ``--try`` item (``reinitN`` re-initialises N layers)."""
    name = name.strip()
    if name.startswith("preset:") or name in PRESETS:
        preset = name.split(":", 1)[-1]
        if preset not in PRESETS:
            raise ConfigError(f"unknown preset '{preset}'; choose one of: {', '.join(PRESETS)}")
        return preset, {}, f"--preset {preset}"
    m = re.fullmatch(r"reinit(\d+)", name)
    if m:
        n = int(m.group(1))
        return None, {"training": {"reinit_layers": n}}, f"re-initialise the top {n} layers"
    if name not in SWITCHES:
        raise ConfigError(
            f"unknown ablation switch '{name}'; choose from: "
            f"{', '.join([*SWITCHES, 'reinitN', 'preset:NAME'])}"
        )
    overrides, desc = SWITCHES[name]
    return None, overrides, desc


def _pick_metric(summary: dict[str, Any], metric: str | None) -> str:
    if metric:
        if metric not in summary:
            raise ConfigError(
                f"metric '{metric}' is not in the fold metrics; available: {', '.join(sorted(summary))}"
            )
        return metric
    for name in DEFAULT_METRICS:
        if name in summary:
            return name
    return "loss"


def _run_variant(
    data: Any, out: Path, cfg: RunConfig, folds: int, group_column: str | None
) -> tuple[dict, float]:
    from bertkit.training.cv import cross_validate

    done = out / "metrics.json"
    if (
        done.is_file()
        and (out / "config.yaml").is_file()
        and (out / "config.yaml").read_text() == cfg.to_yaml()
    ):
        import json

        logger.info("ablate: %s already done, reusing it", out)
        metrics = json.loads(done.read_text())
        return metrics, float(metrics.get("ablation_wall_seconds", metrics.get("train_seconds", 0.0)))
    t0 = time.perf_counter()
    metrics = cross_validate(data, out, cfg, folds=folds, group_column=group_column)
    wall = time.perf_counter() - t0
    metrics["ablation_wall_seconds"] = wall
    write_json_atomic(done, metrics)
    return metrics, wall


def ablate(
    data: str | Path | pd.DataFrame,
    output_dir: str | Path,
    tries: list[str],
    folds: int = 3,
    base: str = "default",
    config_file: str | Path | None = None,
    sets: list[str] | None = None,
    overrides: dict[str, Any] | None = None,
    metric: str | None = None,
    group_column: str | None = None,
) -> pd.DataFrame:
    """Run the base and every switch with the same folds and seeds; write the table and the report.

    Args:
        data: the labelled training file.
        output_dir: one sub-folder per variant plus ``ablation.csv``, ``ablation.json`` and ``report.html``.
        tries: switch names (see :data:`SWITCHES`, ``reinitN``, ``preset:NAME``).
        folds: K of the K-fold split.
        base: the base preset.
        config_file / sets / overrides: applied to every variant (e.g. ``training.epochs=2``).
        metric: the fold metric compared (default: rmse, qwk, macro_f1, micro_f1 or accuracy, first present).
        group_column: GroupKFold column.

    Returns:
        The table (one row per variant, the base first).
    """
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    variants: list[tuple[str, str, RunConfig]] = [
        ("base", f"--preset {base}", build_run_config(base, config_file, sets, overrides))
    ]
    for name in [t for t in tries if t.strip()]:
        preset, switch, desc = switch_overrides(name)
        merged = _merge(overrides or {}, switch)
        variants.append((name.strip(), desc, build_run_config(preset or base, config_file, sets, merged)))
    rows: list[dict[str, Any]] = []
    chosen: str | None = None
    for name, desc, cfg in variants:
        logger.info("ablate: variant %s (%s)", name, desc)
        metrics, wall = _run_variant(data, out / _folder(name), cfg, folds, group_column)
        summary = metrics["fold_summary"]
        chosen = chosen or _pick_metric(summary, metric)
        oof = metrics.get("oof", {}).get(chosen)
        rows.append(
            {
                "variant": name,
                "switch": desc,
                "metric": chosen,
                "mean": summary[chosen]["mean"],
                "std": summary[chosen]["std"],
                "oof": oof,
                "train_seconds": metrics.get("train_seconds"),
                "wall_seconds": round(wall, 1),
                "folds": folds,
                "epochs": cfg.training.epochs,
            }
        )
    table = pd.DataFrame(rows)
    base_row = table.iloc[0]
    sign = -1.0 if chosen in LOWER_IS_BETTER else 1.0
    table["delta"] = table["mean"] - base_row["mean"]
    table["delta_in_base_std"] = table["delta"] / max(float(base_row["std"]), 1e-12)
    table["better"] = sign * table["delta"] > 0
    table["beats_by_more_than_std"] = sign * table["delta"] > table[["std"]].assign(b=base_row["std"]).max(
        axis=1
    )
    table["mean_pm_std"] = [f"{m:.4f} ± {s:.4f}" for m, s in zip(table["mean"], table["std"])]
    table["time_ratio"] = table["wall_seconds"] / max(float(base_row["wall_seconds"]), 1e-9)
    write_with_atomic(out / "ablation.csv", lambda p: table.to_csv(p, index=False))
    write_json_atomic(out / "ablation.json", table.to_dict(orient="records"))
    _report(out, table, base, tries, sets, chosen or "")
    return table


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    from bertkit.runconfig import deep_update

    return deep_update(a, b)


def _folder(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name)


def _report(
    out: Path, table: pd.DataFrame, base: str, tries: list[str], sets: list[str] | None, metric: str
) -> None:
    from bertkit.reports import write_html_report

    shown = table[
        [
            "variant",
            "switch",
            "mean_pm_std",
            "delta",
            "delta_in_base_std",
            "oof",
            "wall_seconds",
            "time_ratio",
            "beats_by_more_than_std",
        ]
    ]
    metrics = {
        r["variant"]: {
            f"{metric}_mean": r["mean"],
            f"{metric}_std": r["std"],
            "delta": r["delta"],
            "time_ratio": r["time_ratio"],
        }
        for _, r in table.iterrows()
    }
    config = {
        "base": base,
        "tries": list(tries),
        "set": list(sets or []),
        "metric": metric,
        "direction": "lower is better" if metric in LOWER_IS_BETTER else "higher is better",
    }
    write_html_report(
        out,
        title=f"bertkit ablation ({metric})",
        metrics=metrics,
        config=yaml.safe_load(yaml.safe_dump(config)),
        images=[],
        extra_tables={"Ablation (mean ± std over folds)": shown},
    )
