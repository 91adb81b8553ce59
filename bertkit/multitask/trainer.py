"""The multi-task training loop: plain PyTorch you can read top to bottom, Accelerate for devices/precision.

Each optimiser step:

1. picks a task (``proportional`` / ``temperature`` / ``round_robin`` sampling) and takes its next batch —
   or, with ``gradient_surgery="pcgrad"``, takes one batch of *every* task;
2. computes the task loss(es), weighted statically or by learned uncertainty;
3. back-propagates (PCGrad: task by task, projecting conflicting gradients on the shared parameters);
4. clips, steps AdamW (``bertkit.training.optim``: weight decay, layer-wise LR decay, head LR) and the
   warmup schedule.

Every ``eval_every`` steps each task is evaluated on its validation data; the early-stopping score is the
weight-averaged primary metric of the tasks (sign-flipped for "lower is better" metrics), the best weights
are kept in memory and restored at the end. S4 models switch from the shared stage to the private stage
after ``stage1_fraction`` of the steps (with a fresh optimiser and schedule).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from bertkit.errors import ConfigError
from bertkit.fileio import write_with_atomic
from bertkit.multitask.config import MultiTaskTrainingConfig
from bertkit.multitask.data import TaskData, collator_for, primary_metric, run_outputs, task_metrics
from bertkit.multitask.pcgrad import PCGradAccumulator
from bertkit.multitask.sampling import BatchStream, TaskSampler, make_weighting
from bertkit.training.optim import WarmupSchedule, build_param_groups, warmup_steps_for

logger = logging.getLogger(__name__)


@dataclass
class MultiTaskResult:
    """What :meth:`MultiTaskTrainer.train` returns."""

    best_score: float | None
    best_step: int | None
    val_metrics: dict[str, dict[str, float]]
    history: pd.DataFrame
    train_seconds: float
    global_step: int
    task_steps: dict[str, int]
    loss_weights: dict[str, float]
    sampling_probabilities: dict[str, float]
    pcgrad_conflicts: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


class MultiTaskTrainer:
    """Trains a :class:`~bertkit.multitask.model.MultiTaskModel` on several tasks' datasets.

    Args:
        model: the multi-task model (its tokenizer pads the batches).
        tasks: task name → :class:`~bertkit.multitask.data.TaskData` (train/valid datasets, weight).
        config: a :class:`~bertkit.multitask.config.MultiTaskTrainingConfig`.
        history_path: where to (re)write the training history CSV after every evaluation, so a long or
            interrupted run keeps its curves on disk (None: only the returned result holds it).
    """

    def __init__(
        self,
        model: Any,
        tasks: dict[str, TaskData],
        config: MultiTaskTrainingConfig | None = None,
        history_path: str | Path | None = None,
    ) -> None:
        from accelerate import Accelerator

        self.config = cfg = config or MultiTaskTrainingConfig()
        if cfg.num_threads > 0:
            torch.set_num_threads(cfg.num_threads)
        precision = cfg.mixed_precision
        if precision == "auto":
            precision = "no"
            if torch.cuda.is_available() and cfg.device in ("auto", "cuda"):
                precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        self.accelerator = Accelerator(mixed_precision=precision, cpu=cfg.device == "cpu")
        self.model = model
        self.tasks = {t: d for t, d in tasks.items() if t in model.task_names}
        missing = [t for t in model.task_names if t not in self.tasks or self.tasks[t].train is None]
        if missing:
            raise ConfigError(f"no training data for task(s) {missing}")
        self.collators = {t: collator_for(d.kind, model.tokenizer) for t, d in self.tasks.items()}
        self.weighting = make_weighting(cfg.loss_weighting, {t: d.weight for t, d in self.tasks.items()})
        self.history_path = Path(history_path) if history_path is not None else None

    def _write_history(self, history: list[dict[str, Any]]) -> None:
        if self.history_path is not None and history and self.accelerator.is_main_process:
            frame = pd.DataFrame(history)
            write_with_atomic(self.history_path, lambda p: frame.to_csv(p, index=False))

    # ---------------------------------------------------------------- helpers
    def _batch(self, task: str, stream: BatchStream) -> dict[str, Any]:
        ds = self.tasks[task].train
        batch = self.collators[task]([ds[i] for i in next(stream)])
        dev = self.accelerator.device
        return {k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}

    def _optimizer(self, total_steps: int) -> tuple[Any, WarmupSchedule]:
        cfg = self.config
        groups = [
            {**g, "params": [p for p in g["params"] if p.requires_grad]}
            for g in build_param_groups(self.model, cfg)
        ]
        groups = [g for g in groups if g["params"]]
        extra = [p for p in self.weighting.parameters() if p.requires_grad]
        if extra:
            groups.append(
                {"params": extra, "lr": cfg.head_learning_rate or cfg.learning_rate, "weight_decay": 0.0}
            )
        optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate, betas=(0.9, 0.999), eps=1e-8)
        scheduler = WarmupSchedule(optimizer, total_steps, warmup_steps_for(cfg, total_steps), cfg.scheduler)
        return self.accelerator.prepare(optimizer), scheduler

    def _snapshot(self) -> dict[str, torch.Tensor]:
        """Trainable parameters and buffers (what training can change), copied to the CPU."""
        out = {}
        for key, value in self.model.state_dict(keep_vars=True).items():
            if not isinstance(value, torch.nn.Parameter) or value.requires_grad:
                out[key] = value.detach().cpu().clone()
        return out

    def find_batch_size(self) -> int:
        """Largest batch size (``batch_size``, halved on out-of-memory) that trains every task's longest rows."""
        from bertkit.multitask.loader import find_batch_size

        model, acc = self.model, self.accelerator

        def trial(size: int) -> None:
            for task, data in self.tasks.items():
                longest = sorted(range(len(data.train)), key=lambda i: -data.train.lengths[i])[:size]
                rows = [data.train[longest[i % len(longest)]] for i in range(size)]
                batch = {
                    k: v.to(acc.device) if isinstance(v, torch.Tensor) else v
                    for k, v in self.collators[task](rows).items()
                }
                with acc.autocast():
                    model(**batch, task_name=task)["loss"].backward()
                model.zero_grad(set_to_none=True)

        return find_batch_size(trial, start=self.config.batch_size)

    # ------------------------------------------------------------- evaluation
    def evaluate(self, split: str = "valid") -> dict[str, dict[str, float]]:
        """Every task's metrics on ``split`` (``valid`` or ``test``; tasks without that split are skipped).

        Validation runs under the training precision (bf16/fp16 autocast on a GPU); the test split in full
        precision, as ``bertkit evaluate`` scores the saved model, so metrics.json and a reload agree exactly.
        """
        autocast = None if split == "test" else self.accelerator.autocast
        out: dict[str, dict[str, float]] = {}
        for task, data in self.tasks.items():
            ds = getattr(data, split)
            if ds is None or not len(ds) or ds.targets is None:
                continue
            outputs = run_outputs(
                self.model,
                task,
                ds,
                self.collators[task],
                self.config.eval_batch_size,
                self.accelerator.device,
                autocast,
            )
            out[task] = task_metrics(self.model, data, split, outputs)
        return out

    def score(self, metrics: dict[str, dict[str, float]]) -> float | None:
        """Weighted mean of every task's primary metric (negated when lower is better)."""
        num, den = 0.0, 0.0
        for task, values in metrics.items():
            name, mode = primary_metric(self.model, self.tasks[task])
            if name not in values or values[name] is None or math.isnan(values[name]):
                continue
            w = self.tasks[task].weight
            num += w * (values[name] if mode == "max" else -values[name])
            den += w
        return num / den if den else None

    # --------------------------------------------------------------- training
    def train(self) -> MultiTaskResult:
        """Run the loop; returns validation metrics of the best (restored) weights and the history."""
        from accelerate.utils import set_seed

        cfg, acc, model = self.config, self.accelerator, self.model
        set_seed(cfg.seed)
        model.to_device(acc.device)
        if cfg.auto_batch_size:
            model.train()
            cfg.batch_size = self.find_batch_size()
            logger.info("automatic batch size: %d", cfg.batch_size)
        sizes = {t: len(d.train) for t, d in self.tasks.items()}
        streams = {
            t: BatchStream(
                list(d.train.lengths),
                cfg.batch_size,
                cfg.seed + i,
                cfg.bucket_multiplier if cfg.length_bucketing else 1,
            )
            for i, (t, d) in enumerate(self.tasks.items())
        }
        sampler = TaskSampler(sizes, cfg.sampling, cfg.temperature, cfg.seed)
        total = cfg.steps or max(1, math.ceil(cfg.epochs * sum(len(s) for s in streams.values())))
        strategy = getattr(model, "strategy", None)
        sequential = strategy is not None and strategy.config.strategy == "s4"
        stage1_steps = int(round(strategy.config.stage1_fraction * total)) if sequential else 0
        model.set_stage(1)
        self.weighting.to(acc.device)
        model.train()
        optimizer, scheduler = self._optimizer(stage1_steps or total)
        pcgrad = cfg.gradient_surgery == "pcgrad"
        generator = torch.Generator().manual_seed(cfg.seed)
        has_valid = any(d.valid is not None and len(d.valid) for d in self.tasks.values())
        eval_every = cfg.eval_every or max(1, total // 10)
        history: list[dict[str, Any]] = []
        best: dict[str, Any] = {"score": None, "step": None, "weights": None, "metrics": {}, "bad": 0}
        task_steps = dict.fromkeys(self.tasks, 0)
        running: dict[str, list[float]] = {t: [] for t in self.tasks}
        grad_norms: dict[str, list[float]] = {t: [] for t in self.tasks}  # PCGrad: shared-gradient norms
        conflicts, seconds = 0, 0.0
        shared_params = model.task_parameters()[0] if pcgrad else []
        progress = self._progress(total)
        for step in range(1, total + 1):
            tic = time.perf_counter()
            if (
                sequential and step == stage1_steps + 1
            ):  # S4: freeze the shared adapter, train the private ones
                model.set_stage(2)
                optimizer, scheduler = self._optimizer(total - stage1_steps)
                shared_params = model.task_parameters()[0] if pcgrad else []
            # 1-3. one task's batch (or every task's with PCGrad), weighted loss, backward
            step_tasks = list(self.tasks) if pcgrad else [next(sampler)]
            surgery = PCGradAccumulator(shared_params, generator, cfg.gradient_balance) if pcgrad else None
            for task in step_tasks:
                batch = self._batch(task, streams[task])
                with acc.autocast():
                    loss = model(**batch, task_name=task)["loss"]
                    acc.backward(self.weighting(task, loss))
                if surgery is not None:
                    surgery.collect()
                    grad_norms[task].append(surgery.norms[-1])
                running[task].append(float(loss.detach()))
                task_steps[task] += 1
            if surgery is not None:
                conflicts += surgery.apply()
            # 4. clip, step
            if cfg.max_grad_norm > 0:
                acc.clip_grad_norm_([p for p in model.parameters() if p.requires_grad], cfg.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            seconds += time.perf_counter() - tic
            progress.update(1)
            # 5. logging, evaluation, early stopping
            if step % cfg.log_every == 0 or step == total:
                row: dict[str, Any] = {"step": step, "lr": scheduler.get_last_lr()[-1]}
                row.update({f"train_loss_{t}": float(np.mean(v)) for t, v in running.items() if v})
                row.update({f"grad_norm_{t}": float(np.mean(v)) for t, v in grad_norms.items() if v})
                history.append(row)
                running = {t: [] for t in self.tasks}
                grad_norms = {t: [] for t in self.tasks}
            if has_valid and (step % eval_every == 0 or step == total):
                metrics = self.evaluate("valid")
                score = self.score(metrics)
                history.append(
                    {
                        "step": step,
                        "val_score": score,
                        **{
                            f"val_{t}_{primary_metric(model, self.tasks[t])[0]}": m.get(
                                primary_metric(model, self.tasks[t])[0]
                            )
                            for t, m in metrics.items()
                        },
                    }
                )
                if score is not None and (best["score"] is None or score > best["score"]):
                    best.update(score=score, step=step, weights=self._snapshot(), metrics=metrics, bad=0)
                else:
                    best["bad"] += 1
                progress.set_postfix(val_score=f"{score:.4f}" if score is not None else "-", refresh=False)
                self._write_history(history)
                if cfg.early_stopping_patience and best["bad"] >= cfg.early_stopping_patience:
                    logger.info("early stopping at step %d (best step %s)", step, best["step"])
                    break
        progress.close()
        self._write_history(history)
        last_step = step
        if best["weights"] is not None and best["step"] != last_step:
            model.load_state_dict(best["weights"], strict=False)
        model.eval()
        return MultiTaskResult(
            best_score=best["score"],
            best_step=best["step"],
            val_metrics=best["metrics"],
            history=pd.DataFrame(history),
            train_seconds=seconds,
            global_step=last_step,
            task_steps=task_steps,
            loss_weights=self.weighting.weights(),
            sampling_probabilities=sampler.probabilities,
            pcgrad_conflicts=conflicts,
        )

    def _progress(self, total: int) -> Any:
        from tqdm.auto import tqdm

        return tqdm(
            total=total,
            disable=not (self.config.progress and self.accelerator.is_main_process),
            desc="multitask",
            unit="step",
            dynamic_ncols=True,
        )
