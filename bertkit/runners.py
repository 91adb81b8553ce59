"""Task runners: one small object per task family that the CLI and the Python API dispatch to.

The sequence runner (classification, regression, ordinal, pairs — one vector per text) is built in; token,
span, QA, relation, similarity, ranking and multi-task runners register themselves the same way. A runner
is chosen by ``--task`` or by sniffing the data file (e.g. a ``.conll`` file → NER), and every run/model folder
records its runner's name in ``model_metadata.json`` so that ``predict``/``evaluate`` dispatch back to it.

Every runner keeps the same run-folder conventions (model/, config.yaml, metrics.json, history.csv,
predictions, report.html).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bertkit.errors import ConfigError
from bertkit.registry import Registry


@dataclass
class TaskRunner:
    """The entry points of a task family.

    Attributes:
        name: registry name (saved in model folders as ``runner``).
        tasks: ``--task`` values this runner serves.
        detect: ``detect(path) -> bool``: True when a data file is in this runner's own format.
        analyze: ``analyze(source, cfg) -> profile`` (an object with ``summary()`` and ``to_dict()``).
        train: ``train(train, output_dir, cfg, valid=None, test=None, resume=False) -> metrics dict``.
        cross_validate: ``cross_validate(data, output_dir, cfg, folds, group_column=None, test=None) -> dict``.
        predict: ``predict(model_dir, data, output, id_column=None, proba=False) -> Path``.
        evaluate: ``evaluate(model_dir, data) -> metrics dict``.
        priority: detection order (higher first).
    """

    name: str
    tasks: tuple[str, ...]
    analyze: Callable[..., Any]
    train: Callable[..., dict[str, Any]]
    cross_validate: Callable[..., dict[str, Any]]
    predict: Callable[..., Path]
    evaluate: Callable[..., dict[str, Any]]
    detect: Callable[[Path], bool] = field(default=lambda path: False)
    priority: int = 0


RUNNERS: Registry[TaskRunner] = Registry("task runner")


def register_runner(runner: TaskRunner) -> TaskRunner:
    """Add a runner (duplicate names raise)."""
    RUNNERS.add(runner.name, runner)
    return runner


def _load_builtins() -> None:
    """Import the built-in runner modules explicitly (idempotent)."""
    import importlib

    for module in ("bertkit.training.sequence_runner", *_OPTIONAL_RUNNERS):
        try:
            importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if not exc.name or not module.startswith(exc.name):
                raise  # a missing dependency inside an existing runner module is a real error


#: runner modules added by other task families (imported when present)
_OPTIONAL_RUNNERS = (
    "bertkit.tasks.ner_runner",
    "bertkit.tasks.qa_runner",
    "bertkit.tasks.relation_runner",
    "bertkit.tasks.pair_runner",
    "bertkit.tasks.docseq_runner",
    "bertkit.multitask.runner",
)


def known_tasks() -> list[str]:
    """Every ``--task`` value some runner serves (plus ``auto``)."""
    _load_builtins()
    return ["auto", *sorted({t for n in RUNNERS.names() for t in RUNNERS.get(n).tasks})]


def runner_by_name(name: str) -> TaskRunner:
    """The runner registered as ``name``."""
    _load_builtins()
    return RUNNERS.get(name)


def runner_for(source: Any, task: str | None = "auto") -> TaskRunner:
    """The runner for a ``--task`` value, or (``auto``) the first whose ``detect`` accepts the file."""
    _load_builtins()
    runners = sorted((RUNNERS.get(n) for n in RUNNERS.names()), key=lambda r: -r.priority)
    if task and task != "auto":
        for r in runners:
            if task in r.tasks:
                return r
        raise ConfigError(f"task='{task}' is not valid; choose one of: {', '.join(known_tasks())}")
    if isinstance(source, str | Path):
        for r in runners:
            if r.name != "sequence" and r.detect(Path(source)):
                return r
    return RUNNERS.get("sequence")


def runner_for_model(model_dir: str | Path) -> TaskRunner:
    """The runner recorded in a model/run folder (``sequence`` for folders without one)."""
    from bertkit.persistence import METADATA_FILE, check_model_folder, read_json

    folder = check_model_folder(model_dir)
    name = read_json(folder / METADATA_FILE).get("runner", "sequence")
    if name != "sequence" and (folder / "export.json").is_file():
        raise ConfigError(
            f"{folder} is an ONNX export of a '{name}' model; predict/evaluate on export folders covers "
            "sequence-level tasks (the ONNX predictor and `bertkit serve` run any head): use the run folder"
        )
    return runner_by_name(name)
