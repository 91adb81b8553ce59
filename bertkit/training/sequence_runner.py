"""The built-in runner for sequence-level tasks: binary, multiclass, multilabel, regression, ordinal, pairs."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bertkit.fileio import write_with_atomic
from bertkit.runconfig import RunConfig
from bertkit.runners import TaskRunner, register_runner


def _analyze(source: Any, cfg: RunConfig, backbone: str | None = None) -> Any:
    from bertkit.data import analyze_dataset
    from bertkit.model import load_tokenizer

    return analyze_dataset(
        source, load_tokenizer(backbone or cfg.model.backbone), **cfg.data.analyze_overrides()
    )


def _train(
    train: Any, output_dir: Any, cfg: RunConfig, valid: Any = None, test: Any = None, resume: bool = False
) -> dict[str, Any]:
    from bertkit.training.run import train_run

    return train_run(train, output_dir, cfg, valid_path=valid, test_path=test, resume=resume).metrics


def _cv(
    data: Any,
    output_dir: Any,
    cfg: RunConfig,
    folds: int = 5,
    group_column: str | None = None,
    test: Any = None,
) -> dict[str, Any]:
    from bertkit.training.cv import cross_validate

    return cross_validate(data, output_dir, cfg, folds=folds, group_column=group_column, test_path=test)


def _predict(
    model_dir: Any,
    data: Any,
    output: Path,
    id_column: str | None = None,
    proba: bool = False,
    batch_size: int = 64,
) -> Path:
    from bertkit.inference import load_predictor

    frame = load_predictor(model_dir, batch_size=batch_size).predict_frame(
        data, proba=proba, id_column=id_column
    )
    write_with_atomic(output, lambda p: frame.to_csv(p, index=False))
    return output


def _evaluate(model_dir: Any, data: Any, batch_size: int = 64) -> dict[str, Any]:
    from bertkit.inference import load_predictor

    return load_predictor(model_dir, batch_size=batch_size).evaluate(data)


SEQUENCE_RUNNER = register_runner(
    TaskRunner(
        name="sequence",
        tasks=("binary", "multiclass", "multilabel", "regression", "ordinal"),
        analyze=_analyze,
        train=_train,
        cross_validate=_cv,
        predict=_predict,
        evaluate=_evaluate,
    )
)
