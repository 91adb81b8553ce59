"""The training loop: plain PyTorch you can read top to bottom, with Accelerate for devices and precision.

``Trainer(model, output_dir, config).train(train_dataset, val_dataset)`` runs AdamW with warmup schedules,
gradient accumulation and clipping, layer-wise LR decay, freezing schedules, evaluation with early stopping,
the best model kept on disk, resumable checkpoints (exact on CPU), and a history.csv.
"""

from __future__ import annotations

import logging
import math
import signal
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from bertkit.config import TrainingConfig
from bertkit.data.samplers import LengthBucketBatchSampler
from bertkit.data.tokenize import Collator, TokenizedDataset
from bertkit.errors import BertkitError, ConfigError
from bertkit.fileio import write_with_atomic
from bertkit.inference.batched import predict_outputs
from bertkit.model import BertWithHead
from bertkit.training.checkpoint import latest_checkpoint, load_checkpoint, save_checkpoint
from bertkit.training.optim import WarmupSchedule, build_optimizer, warmup_steps_for
from bertkit.training.sparse_embeddings import clip_gradients, use_sparse_embeddings
from bertkit.training.tricks import Trick, all_eval_weights, build_tricks

logger = logging.getLogger(__name__)


class TrainingInterrupted(BertkitError):
    """Raised after Ctrl-C once a resumable checkpoint has been written."""


@dataclass
class TrainResult:
    """What :meth:`Trainer.train` returns."""

    best_metric: float | None
    best_step: int | None
    metric_name: str
    val_metrics: dict[str, float]
    history: pd.DataFrame
    train_seconds: float
    train_samples_per_second: float
    train_tokens_per_second: float
    global_step: int
    postprocessing: dict[str, float] = field(default_factory=dict)


class Trainer:
    """Fine-tunes a :class:`BertWithHead`.

    Args:
        model: the model to train (its tokenizer supplies the padding id and side).
        output_dir: run folder for ``model/``, ``checkpoints/`` and ``history.csv`` (None: keep in memory).
        config: a :class:`TrainingConfig` (defaults when None).
        collator: batch builder (default: dynamic padding from the model's tokenizer).
        metrics_fn: ``metrics_fn(outputs, dataset) -> dict`` replacing ``head.compute_metrics`` (task runners
            whose metrics need more than the outputs, e.g. SQuAD answers or word-level NER tags).
        tricks: training tricks called at fixed points of the loop (default: those switched on in
            ``config``; see :mod:`bertkit.training.tricks`).
    """

    def __init__(
        self,
        model: BertWithHead,
        output_dir: str | Path | None = None,
        config: TrainingConfig | None = None,
        collator: Any | None = None,
        metrics_fn: Any | None = None,
        tricks: list[Trick] | None = None,
    ) -> None:
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        self.config = config or TrainingConfig()
        self.output_dir = Path(output_dir) if output_dir is not None else None
        cfg = self.config
        if cfg.num_threads > 0:
            torch.set_num_threads(cfg.num_threads)
        precision = cfg.mixed_precision
        if precision == "auto":
            precision = "no"
            if torch.cuda.is_available() and cfg.device in ("auto", "cuda"):
                precision = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        reset_stale_accelerate_state(precision, cpu=cfg.device == "cpu")
        self.accelerator = Accelerator(
            mixed_precision=precision,
            cpu=cfg.device == "cpu",
            gradient_accumulation_steps=cfg.gradient_accumulation_steps,
            # DDP only: frozen layers and unused poolers get no gradient; without this DDP stops at step 2
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
        self.model = model
        tok = model.tokenizer
        padding_side = "left" if model.bert.decoder_only else "right"
        self.collator = collator or (
            Collator.from_tokenizer(tok, padding_side=padding_side) if tok is not None else Collator(0)
        )
        self.metrics_fn = metrics_fn
        self.tricks = list(tricks) if tricks is not None else build_tricks(self.config)
        self._stop_requested = False

    # ----------------------------------------------------------------- helpers
    @property
    def is_main(self) -> bool:
        return self.accelerator.is_main_process

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        dev = self.accelerator.device
        return {k: (v.to(dev) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}

    def _metric_direction(self) -> tuple[str, bool]:
        name, mode = self.model.head.primary_metric()
        name = self.config.metric_for_best_model or name
        greater = self.config.greater_is_better
        if greater is None:
            greater = (
                mode == "max"
                if name == self.model.head.primary_metric()[0]
                else name not in ("loss", "rmse", "mse", "mae", "log_loss", "hamming_loss", "ece")
            )
        return name, bool(greater)

    def _apply_freezing(self, model: BertWithHead, epoch: int) -> None:
        """Encoder frozen for ``freeze_encoder_epochs``; then all at once, or one more layer per epoch."""
        cfg = self.config
        if cfg.freeze_encoder_epochs <= 0:
            self._freeze_word_embeddings(model)
            return
        if epoch < cfg.freeze_encoder_epochs:
            model.freeze_bert()
            return
        if not cfg.gradual_unfreeze:
            model.unfreeze_bert()
            return
        model.freeze_bert()
        n_open = epoch - cfg.freeze_encoder_epochs + 1
        layers = list(model.bert.layers)
        for layer in layers[max(0, len(layers) - n_open) :]:
            for p in layer.parameters():
                p.requires_grad_(True)
        if n_open >= len(layers):
            model.unfreeze_bert()
        depth = model.bert.parameter_depth()
        for name, p in model.bert.named_parameters():  # everything above the layers trains once unfrozen
            if depth.get(name, 0) > model.bert.num_layers:
                p.requires_grad_(True)
        self._freeze_word_embeddings(model)

    def _freeze_word_embeddings(self, model: BertWithHead) -> None:
        if self.config.freeze_word_embeddings:
            model.bert.get_input_embeddings().weight.requires_grad_(False)

    def _on_sigint(self, signum: int, frame: Any) -> None:
        self._stop_requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)  # a second Ctrl-C stops at once

    # ------------------------------------------------------------- inference
    def predict(
        self, dataset: TokenizedDataset, batch_size: int | None = None, full_precision: bool = False
    ) -> dict[str, np.ndarray]:
        """Outputs over ``dataset`` in its original order (length-sorted batches inside), plus ``loss``.

        Runs under the training precision (bf16/fp16 autocast on a GPU) unless ``full_precision``: the final
        test scores use fp32, as ``bertkit evaluate`` does on the saved model, so the two agree exactly.
        """
        return predict_outputs(
            self.model,
            dataset,
            self.collator,
            batch_size or self.config.eval_batch_size,
            self.accelerator.device,
            None if full_precision else self.accelerator.autocast,
        )

    def evaluate(
        self, dataset: TokenizedDataset, full_precision: bool = False
    ) -> tuple[dict[str, float], dict[str, np.ndarray]]:
        """Loss and the head's metrics on a labelled dataset; also returns the raw outputs."""
        if dataset.targets is None and self.metrics_fn is None:
            raise ConfigError("evaluate() needs a dataset with targets")
        outputs = self.predict(dataset, full_precision=full_precision)
        metrics = {"loss": float(outputs.pop("loss"))} if "loss" in outputs else {}
        if self.metrics_fn is not None:
            metrics.update(self.metrics_fn(outputs, dataset))
        else:
            metrics.update(self.model.head.compute_metrics(outputs, np.asarray(dataset.targets)))
        return metrics, outputs

    # -------------------------------------------------------------- training
    def train(
        self,
        train_dataset: TokenizedDataset,
        val_dataset: TokenizedDataset | None = None,
        resume_from: str | Path | None = None,
    ) -> TrainResult:
        """Train; ``resume_from="auto"`` continues from the run's latest checkpoint when there is one."""
        cfg, acc = self.config, self.accelerator
        from accelerate.utils import set_seed

        set_seed(cfg.seed)
        if train_dataset.targets is None:
            raise ConfigError("the training dataset has no targets")
        raw = self.model
        if isinstance(train_dataset.targets, np.ndarray) and train_dataset.targets.dtype != object:
            raw.head.prepare_targets(train_dataset.targets)
        raw.train()
        # 1. data order: length-bucketed random batches (or plain random batches), one list per epoch
        sampler = LengthBucketBatchSampler(
            train_dataset.lengths,
            cfg.batch_size,
            seed=cfg.seed,
            shuffle=True,
            bucket_multiplier=cfg.bucket_multiplier if cfg.length_bucketing else 1,
            num_processes=acc.num_processes,
            process_index=acc.process_index,
        )
        batches_per_epoch = len(sampler)
        steps_per_epoch = max(1, batches_per_epoch // cfg.gradient_accumulation_steps)
        total_steps = max(1, math.ceil(cfg.epochs * steps_per_epoch))
        num_epochs = math.ceil(cfg.epochs)
        # 2. optimiser, schedule, devices
        embedding = raw.bert.get_input_embeddings()
        sparse = use_sparse_embeddings(cfg, embedding, acc.device, acc.num_processes)
        if isinstance(embedding, torch.nn.Embedding):
            embedding.sparse = sparse  # lazy row updates of the table (sparse_embeddings.py)
        optimizer = build_optimizer(raw, cfg, lazy_rows=embedding.weight if sparse else None)
        scheduler = WarmupSchedule(optimizer, total_steps, warmup_steps_for(cfg, total_steps), cfg.scheduler)
        model, optimizer = acc.prepare(raw, optimizer)
        if cfg.torch_compile:
            model = torch.compile(model)
        metric_name, greater = self._metric_direction()
        state: dict[str, Any] = {
            "epoch": 0,
            "batch_in_epoch": 0,
            "global_step": 0,
            "best_metric": None,
            "best_step": None,
            "bad_evals": 0,
            "history": [],
            "samples_seen": 0,
            "tokens_seen": 0,
            "train_seconds": 0.0,
        }
        # 3. resume
        ckpt = (
            latest_checkpoint(self.output_dir) if resume_from == "auto" and self.output_dir else resume_from
        )
        if ckpt:
            state.update(load_checkpoint(ckpt, raw, optimizer, scheduler))
            logger.info("resumed from %s at step %d", ckpt, state["global_step"])
        for trick in self.tricks:
            trick.on_train_begin(raw, cfg, total_steps, steps_per_epoch)
        progress = self._progress(total_steps, state["global_step"])
        old_handler = signal.signal(signal.SIGINT, self._on_sigint) if _in_main_thread() else None
        last_val: dict[str, float] = {}
        stop = False
        running_loss, running_n = 0.0, 0
        try:
            for epoch in range(state["epoch"], num_epochs):
                sampler.set_epoch(epoch)
                self._apply_freezing(raw, epoch)
                epoch_batches = list(sampler)
                start = state["batch_in_epoch"] if epoch == state["epoch"] else 0
                tic = time.perf_counter()
                for b, idx in enumerate(epoch_batches[start:], start=start):
                    batch = self._to_device(self.collator([train_dataset[i] for i in idx]))
                    # 4. forward / backward / step (accumulating over micro-batches)
                    with acc.accumulate(model), acc.autocast():
                        loss = model(**batch)["loss"]
                        acc.backward(loss)
                        for trick in self.tricks:
                            trick.after_backward(model, batch, epoch, acc)
                        if acc.sync_gradients and cfg.max_grad_norm > 0:
                            if sparse:
                                clip_gradients(model.parameters(), cfg.max_grad_norm)
                            else:
                                acc.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
                        optimizer.step()
                        optimizer.zero_grad(set_to_none=True)
                    running_loss += float(loss.detach())
                    running_n += 1
                    state["samples_seen"] += len(idx)
                    state["tokens_seen"] += int(batch["attention_mask"].sum())
                    state["batch_in_epoch"] = b + 1
                    state["epoch"] = epoch
                    if not acc.sync_gradients:
                        continue
                    scheduler.step()
                    state["global_step"] += 1
                    step = state["global_step"]
                    for trick in self.tricks:
                        trick.after_step(raw, step, epoch)
                    progress.update(1)
                    # 5. logging, evaluation, checkpoints, early stopping
                    if step % cfg.log_every == 0 or step == total_steps:
                        state["history"].append(
                            {
                                "step": step,
                                "epoch": epoch + b / batches_per_epoch,
                                "train_loss": self._mean_over_processes(running_loss / max(running_n, 1)),
                                "lr": scheduler.get_last_lr()[-1],
                            }
                        )
                        running_loss, running_n = 0.0, 0
                    end_of_epoch = b + 1 == len(epoch_batches)
                    do_eval = val_dataset is not None and (
                        (cfg.eval_strategy == "steps" and step % cfg.eval_steps == 0)
                        or (cfg.eval_strategy == "epoch" and end_of_epoch)
                        or step == total_steps
                    )
                    state["train_seconds"] += time.perf_counter() - tic
                    if do_eval:
                        with all_eval_weights(self.tricks, raw):
                            last_val, stop = self._evaluate_and_track(
                                val_dataset, state, metric_name, greater
                            )
                    progress.set_postfix(
                        loss=f"{float(loss.detach()):.4f}",
                        **(
                            {f"val_{metric_name}": f"{last_val[metric_name]:.4f}"}
                            if metric_name in last_val
                            else {}
                        ),
                        samples_per_s=f"{state['samples_seen'] / max(state['train_seconds'], 1e-9):.1f}",
                        refresh=False,
                    )
                    tic = time.perf_counter()
                    if self.output_dir and cfg.checkpoint_steps and step % cfg.checkpoint_steps == 0:
                        self._checkpoint(raw, optimizer, scheduler, state)
                    if self._stop_requested:
                        self._checkpoint(raw, optimizer, scheduler, state)
                        raise TrainingInterrupted(
                            f"interrupted at step {step}; resume with the same command plus --resume"
                        )
                    if stop or step >= total_steps:
                        break
                if stop or state["global_step"] >= total_steps:
                    break
                state["epoch"], state["batch_in_epoch"] = epoch + 1, 0
                if self.output_dir and cfg.checkpoint_steps == 0:
                    self._checkpoint(raw, optimizer, scheduler, state)
        finally:
            progress.close()
            if isinstance(embedding, torch.nn.Embedding):  # later uses (tricks, export, a next run): dense
                embedding.sparse = False
            if old_handler is not None:
                signal.signal(signal.SIGINT, old_handler)
        # 6. tricks finish (e.g. SWA weights), best weights back, calibration on validation, final model folder
        for trick in self.tricks:
            trick.on_train_end(raw)
        self._restore_best(raw, state)
        post: dict[str, float] = {}
        if val_dataset is not None and cfg.calibrate and isinstance(val_dataset.targets, np.ndarray):
            outputs = self.predict(val_dataset)
            outputs.pop("loss", None)
            post = raw.head.fit_postprocessing(outputs, np.asarray(val_dataset.targets))
            if post:
                last_val = self.evaluate(val_dataset)[0]
        if self.output_dir and self.is_main:
            raw.save_pretrained(self.output_dir / "model")
            self._write_history(state)
        acc.wait_for_everyone()  # every process returns once the model folder is complete
        secs = max(state["train_seconds"], 1e-9)
        return TrainResult(
            best_metric=state["best_metric"],
            best_step=state["best_step"],
            metric_name=metric_name,
            val_metrics=last_val,
            history=pd.DataFrame(state["history"]),
            train_seconds=state["train_seconds"],
            train_samples_per_second=state["samples_seen"] * acc.num_processes / secs,
            train_tokens_per_second=state["tokens_seen"] * acc.num_processes / secs,
            global_step=state["global_step"],
            postprocessing=post,
        )

    def _evaluate_and_track(
        self, val_dataset: TokenizedDataset, state: dict[str, Any], metric_name: str, greater: bool
    ) -> tuple[dict[str, float], bool]:
        metrics, _ = self.evaluate(val_dataset)
        step = state["global_step"]
        state["history"].append(
            {"step": step, "epoch": state["epoch"], **{f"val_{k}": v for k, v in metrics.items()}}
        )
        value = metrics.get(metric_name)
        if value is None:
            raise ConfigError(
                f"metric_for_best_model='{metric_name}' is not computed; available: {sorted(metrics)}"
            )
        best = state["best_metric"]
        improved = best is None or (value > best if greater else value < best)
        if improved and not (isinstance(value, float) and math.isnan(value)):
            state.update(best_metric=float(value), best_step=step, bad_evals=0)
            if self.output_dir and self.is_main:
                self.model.save_pretrained(self.output_dir / "model")
            else:
                state["_best_weights"] = {
                    k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()
                }
        else:
            state["bad_evals"] += 1
        self._write_history(state)
        patience = self.config.early_stopping_patience
        stop = bool(patience and state["bad_evals"] >= patience)
        if self.accelerator.num_processes > 1:  # every process stops at the same step (rank 0 decides)
            from accelerate.utils import broadcast_object_list

            stop = bool(broadcast_object_list([stop])[0])
        return metrics, stop

    def _mean_over_processes(self, value: float) -> float:
        """``value`` averaged over data-parallel processes (the global training loss under DDP)."""
        if self.accelerator.num_processes == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.accelerator.device)
        return float(self.accelerator.reduce(t, reduction="mean").item())

    def _restore_best(self, raw: BertWithHead, state: dict[str, Any]) -> None:
        from bertkit.persistence import load_safetensors_into

        if state.get("best_step") is None or state["best_step"] == state["global_step"]:
            return
        if "_best_weights" in state:
            raw.load_state_dict(state.pop("_best_weights"))
        elif self.output_dir and (self.output_dir / "model" / "head" / "model.safetensors").is_file():
            load_safetensors_into(raw.bert, self.output_dir / "model" / "bert" / "model.safetensors")
            load_safetensors_into(raw.head, self.output_dir / "model" / "head" / "model.safetensors")

    def _checkpoint(self, raw: BertWithHead, optimizer: Any, scheduler: Any, state: dict[str, Any]) -> None:
        if not (self.output_dir and self.is_main):
            return
        root = self.output_dir / "checkpoints"
        keep = {k: v for k, v in state.items() if not k.startswith("_")}
        save_checkpoint(root / f"step-{state['global_step']}", raw, optimizer, scheduler, keep)
        old = sorted((p for p in root.iterdir() if p.name.startswith("step-")), key=lambda p: int(p.name[5:]))
        for path in old[: max(0, len(old) - max(1, self.config.keep_checkpoints))]:
            import shutil

            shutil.rmtree(path, ignore_errors=True)

    def _write_history(self, state: dict[str, Any]) -> None:
        if self.output_dir and self.is_main and state["history"]:
            frame = pd.DataFrame(state["history"])
            write_with_atomic(self.output_dir / "history.csv", lambda p: frame.to_csv(p, index=False))

    def _progress(self, total: int, initial: int) -> Any:
        from tqdm.auto import tqdm

        return tqdm(
            total=total,
            initial=initial,
            disable=not (self.config.progress and self.is_main),
            desc="train",
            unit="step",
            dynamic_ncols=True,
        )


def _in_main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


#: the reference design's spelling: ``EnhancedTrainer(model=..., output_dir=...).train(train, val)``
EnhancedTrainer = Trainer


def reset_stale_accelerate_state(precision: str, cpu: bool) -> None:
    """Let one process train several models with different precisions or devices.

    Accelerate keeps a process-wide state and refuses a second ``Accelerator`` whose mixed precision
    differs (and silently keeps the first device). A notebook, ``bertkit ablate`` or a bench running several
    configurations in one process hits that; in a single-process run the stale state is dropped.
    Under ``torchrun``/``accelerate launch`` (several processes) the state is left alone: one configuration
    per launch, as Accelerate requires.
    """
    from accelerate.state import AcceleratorState, PartialState

    shared = AcceleratorState._shared_state
    if not shared:
        return
    partial = PartialState._shared_state
    if int(partial.get("num_processes", 1) or 1) > 1:
        return
    device = partial.get("device")
    on_cpu = device is None or torch.device(device).type == "cpu"
    accelerated = torch.cuda.is_available() or torch.backends.mps.is_available()
    if shared.get("_mixed_precision") != precision or on_cpu != (cpu or not accelerated):
        AcceleratorState._reset_state(reset_partial_state=True)
