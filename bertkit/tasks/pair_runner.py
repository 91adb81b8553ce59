"""The ``pair`` task runner: bi-encoder similarity, contrastive embeddings and query-grouped ranking.

``--task similarity|contrastive|ranking`` (ranking and unlabelled anchor/positive files are also detected).
Bi-encoder heads (``text_similarity``, ``contrastive``, ``ranking_bi_encoder``) tokenize each text on its own;
the ``ranking`` cross-encoder reads ``[CLS] query [SEP] candidate [SEP]`` with ``token_type_ids``. Pairwise and
listwise objectives train on whole query groups (``batch_size`` rows ≈ ``batch_size / mean group size`` queries).
Run folders follow the usual layout (model/, config.yaml, profile.json, metrics.json, history.csv, report.html,
``valid_predictions.csv``/``test_predictions.csv``: scores in input order, or ranked candidates per query).
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bertkit.data.analyze import LABEL_NAMES, PAIR_NAMES
from bertkit.data.readers import SUPPORTED_SUFFIXES, guess_group_column, read_table
from bertkit.errors import ConfigError, DataError
from bertkit.factory import create_bert_with_head
from bertkit.fileio import write_json_atomic, write_text_atomic, write_with_atomic
from bertkit.inference.predictor import Predictor
from bertkit.metrics import ranking_metrics
from bertkit.model import BertWithHead, load_tokenizer
from bertkit.runconfig import RunConfig
from bertkit.runners import TaskRunner, register_runner
from bertkit.tasks.pairs import (
    CONTRASTIVE_NAMES,
    PAIR_TASKS,
    TASK_HEADS,
    GroupedDataset,
    PairCollator,
    PairDataset,
    PairProfile,
    PreparedPairs,
    analyze_pairs,
    group_keys,
    positive_groups,
    prepare_pairs,
)

RANKING_KS = (1, 5, 10)


# ------------------------------------------------------------------------------------------------- helpers
def _tokenizer(cfg: RunConfig) -> Any:
    return load_tokenizer(cfg.model.backbone if not cfg.model.bert_options.get("model_type") else None)


def _analyze(source: Any, cfg: RunConfig, backbone: str | None = None, tokenizer: Any = None) -> PairProfile:
    d = cfg.data
    texts = [d.text_column] if d.text_column else d.text_columns
    return analyze_pairs(
        source,
        tokenizer or load_tokenizer(backbone or cfg.model.backbone),
        task=d.task if d.task in PAIR_TASKS else "auto",
        text_columns=texts,
        label_column=d.label_column,
        group_column=d.group_column,
        id_column=d.id_column,
    )


def _detect(path: Path) -> bool:
    """Ranking files (two text columns, labels, a query/group column) and unlabelled anchor/positive files."""
    if not any(str(path).lower().endswith(s) for s in SUPPORTED_SUFFIXES) or not path.is_file():
        return False
    try:
        df = read_table(path)
    except Exception:  # detection never fails a command: another runner reports the problem
        return False
    low = {str(c).lower() for c in df.columns}
    has_label = any(n in low for n in LABEL_NAMES)
    if not has_label:
        return any(a in low and b in low for a, b in CONTRASTIVE_NAMES)
    if not any(a in low and b in low for a, b in PAIR_NAMES):
        return False
    return guess_group_column(df, [], exclude=set()) is not None


def build_pair_model(profile: PairProfile, cfg: RunConfig, tokenizer: Any) -> BertWithHead:
    """The configured (or recommended) pair head on the configured backbone, with the pair metadata."""
    head = cfg.model.head or profile.recommended_head
    allowed = TASK_HEADS[profile.task]
    if head not in allowed:
        raise ConfigError(
            f"task '{profile.task}' uses the head(s) {', '.join(allowed)}, not '{head}'; for a cross-encoder on "
            "pairs use --task regression/binary/multiclass (the sequence heads read both text columns)"
        )
    opts = dict(cfg.model.head_options)
    if head == profile.recommended_head and "loss_type" not in opts and profile.recommended_loss != "infonce":
        opts["loss_type"] = profile.recommended_loss
    names = None
    if head == "text_similarity" and opts.get("loss_type") == "softmax":
        if profile.label_kind == "score":
            raise ConfigError(
                f"loss_type='softmax' classifies pairs but '{profile.label_column}' holds continuous scores; "
                "use cosent, cosine_mse or contrastive"
            )
        names = profile.label_names or ["0", "1"]
    bert_config = dict(cfg.model.bert_options)
    meta = {
        "runner": "pair",
        "pair": profile.to_dict(),
        "max_length": cfg.training.max_length,
        "truncation": "head",
    }
    return create_bert_with_head(
        head_type=head,
        num_labels=len(names) if names else 1,
        label_names=names,
        bert_name=cfg.model.backbone if not bert_config.get("model_name_or_path") else None,
        bert_config=bert_config or None,
        pooling_type=cfg.model.pooling,
        tokenizer=tokenizer,
        freeze_bert_layers=cfg.model.freeze_bert_layers,
        metadata=meta,
        **opts,
    )


def _prepare(
    model: BertWithHead,
    profile: PairProfile,
    frame: pd.DataFrame,
    max_length: int,
    labels: bool,
    strict: bool = False,
) -> PreparedPairs:
    declared = model.head.config.extra.get("score_range")
    return prepare_pairs(
        frame,
        profile,
        model.tokenizer,
        max_length=max_length,
        cross_encoder=model.head.level != "bi_encoder",
        require_labels=labels,
        strict=strict,
        declared_range=declared,
    )


def score_outputs(
    model: BertWithHead, profile: PairProfile, outputs: dict[str, np.ndarray], dataset: PairDataset
) -> dict[str, float]:
    """Metrics of one split: MRR/MAP/NDCG@k/recall@k per query for ranking, else the head's metrics."""
    if profile.task == "ranking":
        return ranking_metrics(
            dataset.group_ids, np.asarray(dataset.targets), outputs["scores"], ks=RANKING_KS
        )
    return model.head.compute_metrics(outputs, np.asarray(dataset.targets))


def _metrics_fn(model: BertWithHead, profile: PairProfile) -> Any:
    return lambda outputs, dataset: score_outputs(model, profile, outputs, dataset)


def prediction_frame(
    model: BertWithHead,
    profile: PairProfile,
    frame: pd.DataFrame,
    prepared: PreparedPairs,
    outputs: dict[str, np.ndarray],
    id_column: str | None = None,
) -> pd.DataFrame:
    """Scores in input order (similarity, contrastive) or the ranked candidates of every query (ranking)."""
    id_col = id_column or (profile.id_column if profile.id_column in frame.columns else None)
    if id_col is not None and id_col not in frame.columns:
        raise DataError(
            f"id column '{id_col}' is not in the data; columns: {', '.join(map(str, frame.columns))}"
        )
    kept = frame.iloc[prepared.row_index]
    if profile.task != "ranking":
        cols = model.head.format_predictions(outputs)
        out = pd.DataFrame(cols, index=prepared.row_index).reindex(range(len(frame)))
        if id_col is not None:
            out.insert(0, id_col, frame[id_col].to_numpy())
        return out.reset_index(drop=True)
    query_col = profile.group_column or profile.text_columns[0]
    ranked = pd.DataFrame({query_col: kept[query_col].to_numpy(), "rank": 0, "score": outputs["scores"]})
    if id_col is not None:
        ranked[id_col] = kept[id_col].to_numpy()
    for col in (profile.text_columns[1], profile.label_column):
        if col and col in kept.columns and col not in ranked.columns:
            ranked[col] = kept[col].to_numpy()
    ranked["row"] = prepared.row_index
    first_seen = pd.Series(pd.factorize(pd.Series(prepared.keys))[0])
    ranked = ranked.assign(_q=first_seen.to_numpy()).sort_values(
        ["_q", "score"], ascending=[True, False], kind="stable"
    )
    ranked["rank"] = ranked.groupby("_q").cumcount() + 1
    return ranked.drop(columns="_q").reset_index(drop=True)


def _split(
    df: pd.DataFrame, profile: PairProfile, cfg: RunConfig, has_valid: bool
) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """Seeded split by whole queries (ranking) or rows: ``max_train_samples`` rows, then validation rows."""
    keys = group_keys(df, profile) if profile.task == "ranking" else pd.Series(np.arange(len(df)).astype(str))
    uniq = keys.unique()
    order = np.random.default_rng(cfg.training.seed).permutation(len(uniq))
    sizes = keys.value_counts().reindex(uniq).to_numpy()[order]
    cum = np.cumsum(sizes)
    n_valid = 0 if has_valid else max(1, int(round(cfg.data.valid_fraction * len(df))))
    n_max = cfg.data.max_train_samples
    if n_max is not None and n_max < len(df):
        k = int(np.searchsorted(cum, n_max)) + 1
        train_g = order[:k]
        rest = order[k:]
        valid_g = rest[: int(np.searchsorted(np.cumsum(sizes[k:]), n_valid)) + 1] if n_valid else rest[:0]
    else:
        kv = int(np.searchsorted(cum, n_valid)) + 1 if n_valid else 0
        valid_g, train_g = order[:kv], order[kv:]
    if not len(train_g):
        raise DataError(
            f"not enough data to train: {len(df)} rows, {len(uniq)} queries/rows after validation"
        )
    pick = lambda groups: df[keys.isin(set(uniq[groups])).to_numpy()].reset_index(drop=True)  # noqa: E731
    return pick(train_g), (pick(valid_g) if len(valid_g) else None)


@dataclass
class _Fitted:
    model: BertWithHead
    trainer: Any
    result: Any
    data_report: dict[str, float]


def fit_pairs(
    train_df: pd.DataFrame,
    valid_df: pd.DataFrame | None,
    profile: PairProfile,
    cfg: RunConfig,
    out: Path | None,
    resume: bool = False,
) -> _Fitted:
    """Build the model and train it; ranking drops queries without a positive (reported with counts)."""
    from bertkit.training.trainer import Trainer

    model = build_pair_model(profile, cfg, _tokenizer(cfg))
    length, strict = cfg.training.max_length, cfg.data.strict
    train_p = _prepare(model, profile, train_df, length, labels=True, strict=strict)
    train_ds: Any = train_p.dataset
    report: dict[str, float] = {f"train_{k}": v for k, v in train_p.report.items() if v}
    tcfg = copy.deepcopy(cfg.training)
    if profile.task == "ranking":
        pos = positive_groups(train_p)
        n_q = len(set(train_p.keys or []))
        bad_q = len(set(np.asarray(train_p.keys)[~pos]))
        if bad_q:
            msg = f"{bad_q} of {n_q} training queries ({int((~pos).sum())} rows) have no positive candidate"
            if strict:
                raise DataError(f"{msg}; remove them or drop --strict")
            warnings.warn(f"{msg}: left out of training", UserWarning, stacklevel=2)
            report.update(train_queries_without_positive=bad_q, train_rows_without_positive=int((~pos).sum()))
            if not pos.any():
                raise DataError(
                    f"no training query has a positive candidate ({n_q} queries); check the labels"
                )
            train_ds = train_ds.subset(np.flatnonzero(pos))
        if model.head.loss_type != "pointwise":
            train_ds = GroupedDataset(train_ds)
            tcfg.batch_size = max(1, int(round(cfg.training.batch_size * len(train_ds) / len(train_ds.rows))))
            report["queries_per_batch"] = tcfg.batch_size
    valid_ds = None
    if valid_df is not None and len(valid_df):
        valid_ds = _prepare(model, profile, valid_df, length, labels=True).dataset
    collator = PairCollator.from_tokenizer(model.tokenizer, model.bert.decoder_only)
    trainer = Trainer(model, out, tcfg, collator=collator, metrics_fn=_metrics_fn(model, profile))
    result = trainer.train(train_ds, valid_ds, resume_from="auto" if resume else None)
    return _Fitted(model, trainer, result, report)


def _has_labels(profile: PairProfile, frame: pd.DataFrame) -> bool:
    return profile.label_column is None or profile.label_column in frame.columns


# ------------------------------------------------------------------------------------------- entry points
def _train(
    train: Any, output_dir: Any, cfg: RunConfig, valid: Any = None, test: Any = None, resume: bool = False
) -> dict[str, Any]:
    from bertkit.training.run import _write_report

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = read_table(train)
    profile = _analyze(df, cfg, tokenizer=_tokenizer(cfg))
    profile.source = "<DataFrame>" if isinstance(train, pd.DataFrame) else str(train)
    train_df, valid_df = _split(df, profile, cfg, has_valid=valid is not None)
    if valid is not None:
        valid_df = read_table(valid)
    write_text_atomic(out / "config.yaml", cfg.to_yaml())
    write_json_atomic(out / "profile.json", profile.to_dict())
    fitted = fit_pairs(train_df, valid_df, profile, cfg, out, resume=resume)
    res, model = fitted.result, fitted.model
    metrics: dict[str, Any] = {
        "valid": res.val_metrics,
        "train_seconds": round(res.train_seconds, 3),
        "train_samples_per_second": round(res.train_samples_per_second, 3),
        "train_tokens_per_second": round(res.train_tokens_per_second, 3),
        "train_rows": len(train_df),
        "valid_rows": len(valid_df) if valid_df is not None else 0,
    }
    if fitted.data_report:
        metrics["data"] = fitted.data_report
    for split, src in (("valid", valid_df), ("test", test)):
        if src is None or (isinstance(src, pd.DataFrame) and not len(src)):
            continue
        frame = src if isinstance(src, pd.DataFrame) else read_table(src)
        labelled = _has_labels(profile, frame)
        prepared = _prepare(model, profile, frame, cfg.training.max_length, labels=labelled)
        if labelled:
            split_metrics, outputs = fitted.trainer.evaluate(prepared.dataset)
            if split == "test":
                metrics["test"] = split_metrics
        else:
            outputs = fitted.trainer.predict(prepared.dataset)
            outputs.pop("loss", None)
        pred = prediction_frame(model, profile, frame, prepared, outputs)
        write_with_atomic(out / f"{split}_predictions.csv", lambda p, f=pred: f.to_csv(p, index=False))
    write_json_atomic(out / "metrics.json", metrics)
    _write_report(out, model, metrics, cfg, res.history, {})
    return metrics


def _cv(
    data: Any,
    output_dir: Any,
    cfg: RunConfig,
    folds: int = 5,
    group_column: str | None = None,
    test: Any = None,
) -> dict[str, Any]:
    """K-fold CV by whole queries (ranking) or rows; OOF scores in input order and per-fold metrics."""
    from sklearn.model_selection import GroupKFold, KFold

    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    cfg = copy.deepcopy(cfg)
    cfg.data.group_column = group_column or cfg.data.group_column
    cfg.training.calibrate = False
    df = read_table(data)
    profile = _analyze(df, cfg, tokenizer=_tokenizer(cfg))
    if cfg.data.max_train_samples is not None and cfg.data.max_train_samples < len(df):
        df = _split(df, profile, cfg, has_valid=True)[0]
    keys = group_keys(df, profile).to_numpy() if profile.task == "ranking" else np.arange(len(df))
    if folds < 2 or len(np.unique(keys)) < folds:
        raise DataError(f"cannot split {len(np.unique(keys))} queries/rows into {folds} folds (need >= 2)")
    splitter = (
        GroupKFold(folds)
        if profile.task == "ranking"
        else KFold(folds, shuffle=True, random_state=cfg.training.seed)
    )
    fold_of = np.full(len(df), -1, dtype=np.int64)
    for k, (_, idx) in enumerate(splitter.split(np.arange(len(df)), groups=keys)):
        fold_of[idx] = k
    write_text_atomic(out / "config.yaml", cfg.to_yaml())
    write_json_atomic(out / "profile.json", profile.to_dict())
    score_key = "scores" if profile.task == "ranking" else "similarity_score"
    oof = np.full(len(df), np.nan)
    fold_metrics: list[dict[str, Any]] = []
    test_df = read_table(test) if test is not None else None
    test_sum: np.ndarray | None = None
    fitted = None
    for k in range(folds):
        train_df = df[fold_of != k].reset_index(drop=True)
        valid_pos = np.flatnonzero(fold_of == k)
        valid_df = df.iloc[valid_pos].reset_index(drop=True)
        fitted = fit_pairs(train_df, valid_df, profile, cfg, out / f"fold_{k}")
        prepared = _prepare(fitted.model, profile, valid_df, cfg.training.max_length, labels=True)
        metrics, outputs = fitted.trainer.evaluate(prepared.dataset)
        fold_metrics.append({"fold": k, "rows": len(prepared.row_index), **metrics})
        oof[valid_pos[prepared.row_index]] = outputs[score_key]
        if test_df is not None:
            tp = _prepare(fitted.model, profile, test_df, cfg.training.max_length, labels=False)
            scores = fitted.trainer.predict(tp.dataset)[score_key] / folds
            test_sum = scores if test_sum is None else test_sum + scores
        write_json_atomic(out / "fold_metrics.json", fold_metrics)
    assert fitted is not None
    per_fold = pd.DataFrame(fold_metrics)
    summary = {
        c: {"mean": float(per_fold[c].mean()), "std": float(per_fold[c].std(ddof=0))}
        for c in per_fold.columns
        if c not in ("fold", "rows") and pd.api.types.is_numeric_dtype(per_fold[c])
    }
    result: dict[str, Any] = {"folds": fold_metrics, "fold_summary": summary, "num_folds": folds}
    done = ~np.isnan(oof)
    if profile.task == "ranking":
        rel = pd.to_numeric(df[profile.label_column], errors="coerce").fillna(0).to_numpy()
        result["oof"] = ranking_metrics(keys[done], rel[done], oof[done], ks=RANKING_KS)
    elif profile.task == "similarity" and profile.label_kind != "class":
        from bertkit.metrics import regression_metrics

        corr = regression_metrics(pd.to_numeric(df[profile.label_column]).to_numpy()[done], oof[done])
        result["oof"] = {"spearman": corr["spearman"], "pearson": corr["pearson"]}
    else:
        result["oof"] = {k: v["mean"] for k, v in summary.items()}
    frame = pd.DataFrame({"fold": fold_of, "score": oof})
    if profile.id_column:
        frame.insert(0, profile.id_column, df[profile.id_column].to_numpy())
    write_with_atomic(out / "oof.csv", lambda p: frame.to_csv(p, index=False))
    if test_df is not None and test_sum is not None:
        tp = _prepare(fitted.model, profile, test_df, cfg.training.max_length, labels=False)
        sub = prediction_frame(
            fitted.model, profile, test_df, tp, {"scores": test_sum, "similarity_score": test_sum}
        )
        write_with_atomic(out / "test_predictions.csv", lambda p: sub.to_csv(p, index=False))
    write_json_atomic(out / "metrics.json", result)
    return result


def load_pair_model(model_dir: Any) -> tuple[BertWithHead, PairProfile]:
    """A saved pair model and its data profile."""
    model = BertWithHead.from_pretrained(model_dir)
    if "pair" not in model.metadata:
        raise ConfigError(f"{model_dir} was not trained by the pair runner (no pair profile in its metadata)")
    return model, PairProfile.from_dict(model.metadata["pair"])


class PairPredictor(Predictor):
    """:class:`~bertkit.inference.Predictor` for models of the pair runner (similarity, contrastive, ranking
    and cross-encoders trained on two text columns): ``predict([(a, b), ...])`` returns one score per pair,
    ``predict(["text"])`` on a bi-encoder returns embeddings, and the frame methods read the trained columns."""

    def __init__(self, model: BertWithHead, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        self.pair_profile = PairProfile.from_dict(model.metadata["pair"])

    def _frame(self, texts_a: list[str], texts_b: list[str]) -> pd.DataFrame:
        a, b = self.pair_profile.text_columns[:2]
        frame = pd.DataFrame({a: texts_a, b: texts_b})
        if self.pair_profile.group_column:  # ranking: each query text is its own group
            frame[self.pair_profile.group_column] = texts_a
        return frame

    def _run(self, prepared: PreparedPairs) -> dict[str, np.ndarray]:
        from bertkit.inference.batched import predict_outputs

        collator = PairCollator.from_tokenizer(self.model.tokenizer, self.model.bert.decoder_only)
        return predict_outputs(self.model, prepared.dataset, collator, self.batch_size, self.device)

    def outputs(
        self, texts_a: list[str], texts_b: list[str] | None = None, targets: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Head outputs for pairs; embeddings (``[N, D]``) for single texts on a bi-encoder."""
        if texts_b is None:
            if self.model.head.level != "bi_encoder":
                raise ConfigError("this cross-encoder scores pairs: pass (text_a, text_b) tuples")
            from bertkit.inference.embed import encode_texts

            return {
                "embeddings": encode_texts(
                    self.model, texts_a, self.batch_size, self.max_length, str(self.device)
                )
            }
        prepared = _prepare(
            self.model, self.pair_profile, self._frame(texts_a, texts_b), self.max_length, False
        )
        return self._run(prepared)

    def predict(self, texts: list[Any]) -> list[Any]:
        """One score (or label) per ``(text_a, text_b)`` pair; one embedding per single text (bi-encoders)."""
        a, b = self._split(texts)
        out = self.outputs(a, b)
        if b is None:
            return list(out["embeddings"])
        out.pop("loss", None)
        cols = self.model.head.format_predictions(out)
        key = "prediction" if "prediction" in cols else next(iter(cols))
        return list(cols[key])

    def predict_frame(
        self, data: str | Path | pd.DataFrame, proba: bool = False, id_column: str | None = None
    ) -> pd.DataFrame:
        """Scores in input order, or the ranked candidates of every query (as ``bertkit predict``)."""
        frame = read_table(data)
        prepared = _prepare(self.model, self.pair_profile, frame, self.max_length, labels=False)
        outputs = self._run(prepared)
        outputs.pop("loss", None)
        return prediction_frame(self.model, self.pair_profile, frame, prepared, outputs, id_column=id_column)

    def evaluate(self, data: str | Path | pd.DataFrame) -> dict[str, float]:
        """Spearman/Pearson, accuracy/F1 or MRR/MAP/NDCG@k/recall@k on labelled pairs (+ loss and rows)."""
        frame = read_table(data)
        if not _has_labels(self.pair_profile, frame):
            raise DataError(
                f"cannot evaluate: label column '{self.pair_profile.label_column}' missing; columns: "
                f"{', '.join(map(str, frame.columns))}"
            )
        prepared = _prepare(self.model, self.pair_profile, frame, self.max_length, labels=True)
        outputs = self._run(prepared)
        metrics = {"loss": float(outputs.pop("loss"))} if "loss" in outputs else {}
        metrics.update(score_outputs(self.model, self.pair_profile, outputs, prepared.dataset))
        metrics["rows"] = len(prepared.row_index)
        return metrics


def _predict(
    model_dir: Any,
    data: Any,
    output: Path,
    id_column: str | None = None,
    proba: bool = False,
    batch_size: int = 64,
) -> Path:
    model, _ = load_pair_model(model_dir)
    pred = PairPredictor(model, batch_size=batch_size).predict_frame(data, id_column=id_column)
    write_with_atomic(output, lambda p: pred.to_csv(p, index=False))
    return Path(output)


def _evaluate(model_dir: Any, data: Any, batch_size: int = 64) -> dict[str, Any]:
    model, _ = load_pair_model(model_dir)
    return PairPredictor(model, batch_size=batch_size).evaluate(data)


PAIR_RUNNER = register_runner(
    TaskRunner(
        name="pair",
        tasks=PAIR_TASKS,
        analyze=_analyze,
        train=_train,
        cross_validate=_cv,
        predict=_predict,
        evaluate=_evaluate,
        detect=_detect,
        priority=5,
    )
)
