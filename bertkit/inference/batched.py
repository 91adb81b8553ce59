"""Batched inference in input order: length-sorted batches inside, original order outside."""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any

import numpy as np
import torch

from bertkit.data.samplers import sorted_inference_batches
from bertkit.data.tokenize import TokenizedDataset


def concat_outputs(chunks: list[np.ndarray], pad_value: float = 0.0) -> np.ndarray:
    """Concatenate per-batch arrays along axis 0, right-padding the other axes when they differ.

    Token outputs differ in axis 1 (``[B, T, C]``); pairwise outputs such as span ``link_logits [B, S, S]``
    differ in axes 1 and 2.
    """
    if not chunks:
        return np.zeros((0,))
    if chunks[0].ndim >= 2 and len({c.shape[1:] for c in chunks}) > 1:
        shape = [max(c.shape[d] for c in chunks) for d in range(1, chunks[0].ndim)]
        chunks = [
            np.pad(c, [(0, 0)] + [(0, s - n) for s, n in zip(shape, c.shape[1:])], constant_values=pad_value)
            for c in chunks
        ]
    return np.concatenate(chunks, axis=0)


@torch.no_grad()
def predict_outputs(
    model: Any,
    dataset: TokenizedDataset,
    collator: Any,
    batch_size: int = 64,
    device: torch.device | str = "cpu",
    autocast: Any = None,
) -> dict[str, np.ndarray]:
    """Run ``model`` over ``dataset``; returns every batch-first output in input order (+ mean ``loss``).

    Args:
        model: a :class:`~bertkit.model.BertWithHead` (any module returning a dict of tensors).
        dataset: tokenized texts (targets optional; with targets the mean loss is added).
        collator: builds padded tensors from dataset items.
        batch_size: examples per forward pass.
        device: where the model lives.
        autocast: a context-manager factory for mixed precision (None: fp32).
    """
    was_training = model.training
    model.eval()
    batches = sorted_inference_batches(dataset.lengths, batch_size)
    chunks: dict[str, list[np.ndarray]] = {}
    loss_sum, n_loss = 0.0, 0
    for idx in batches:
        batch = collator([dataset[i] for i in idx])
        batch = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in batch.items()}
        with autocast() if autocast is not None else nullcontext():
            out = model(**batch)
        if "loss" in out:
            loss_sum += float(out.pop("loss")) * len(idx)
            n_loss += len(idx)
        for key, value in out.items():
            if isinstance(value, torch.Tensor) and value.dim() > 0 and value.shape[0] == len(idx):
                value = value.detach().cpu()
                chunks.setdefault(key, []).append(
                    value.float().numpy() if value.is_floating_point() else value.numpy()
                )
    order = (
        np.concatenate([np.asarray(i, dtype=np.int64) for i in batches]) if batches else np.zeros(0, np.int64)
    )
    inverse = np.empty_like(order)
    inverse[order] = np.arange(len(order))
    outputs = {k: concat_outputs(v)[inverse] for k, v in chunks.items()}
    if n_loss:
        outputs["loss"] = np.asarray(loss_sum / n_loss)
    model.train(was_training)
    return outputs
