"""Domain-adaptive masked-LM pre-training (Gururangan et al. 2020, "Don't Stop Pretraining") on unlabelled
text, before fine-tuning: ``bertkit pretrain texts.(txt|csv) --output DIR`` then ``--backbone DIR``.

The backbone is loaded with ``AutoModelForMaskedLM`` (a checkpoint without an MLM head, like the bundled
MiniLM, gets a freshly initialised one), texts are split into ``max_length`` blocks, and
``DataCollatorForLanguageModeling`` masks 15% of the tokens. The output folder holds the transformers model
(encoder + MLM head), its tokenizer and ``pretrain.json``; ``create_bert_core(DIR)`` loads the encoder.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bertkit.errors import DataError
from bertkit.fileio import write_json_atomic

logger = logging.getLogger(__name__)


@dataclass
class PretrainConfig:
    """MLM settings.

    Attributes:
        backbone: "minilm", a local folder or a hub id.
        epochs: passes over the blocks.
        max_steps: stop after this many optimiser steps (0: no limit).
        batch_size: blocks per step.
        learning_rate: peak AdamW learning rate (linear warmup 6% then linear decay).
        max_length: tokens per block (special tokens included).
        mlm_probability: share of tokens masked.
        text_column: CSV column holding the text (None: "text", else the first string column).
        max_texts: use only the first N texts (0: all).
        seed: random seed.
    """

    backbone: str = "minilm"
    epochs: float = 1.0
    max_steps: int = 0
    batch_size: int = 16
    learning_rate: float = 5e-5
    max_length: int = 128
    mlm_probability: float = 0.15
    text_column: str | None = None
    max_texts: int = 0
    seed: int = 0


def read_texts(path: str | Path, text_column: str | None = None) -> list[str]:
    """Texts from a ``.txt`` file (one per non-empty line) or a table (CSV/TSV/Parquet/JSONL)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"text file {path} does not exist")
    if path.suffix.lower() == ".txt":
        texts = [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]
    else:
        from bertkit.data import read_table

        df = read_table(path)
        col = text_column or ("text" if "text" in df.columns else None)
        if col is None:
            obj = [c for c in df.columns if df[c].dtype == object]
            if not obj:
                raise DataError(f"{path} has no text column; pass --text-column")
            col = max(obj, key=lambda c: df[c].astype(str).str.len().mean())
        if col not in df.columns:
            raise DataError(f"column '{col}' is not in {path}; columns: {', '.join(map(str, df.columns))}")
        texts = df[col].dropna().astype(str).str.strip().tolist()
    texts = [t for t in texts if t]
    if not texts:
        raise DataError(f"{path} holds no text")
    return texts


def make_blocks(tokenizer: Any, texts: list[str], max_length: int) -> list[list[int]]:
    """Concatenate the tokenised texts (separated by [SEP]) and cut them into blocks with special tokens."""
    body = max_length - tokenizer.num_special_tokens_to_add(pair=False)
    ids = tokenizer(texts, add_special_tokens=False, truncation=False, return_attention_mask=False)[
        "input_ids"
    ]
    sep = tokenizer.sep_token_id
    stream: list[int] = []
    for seq in ids:
        stream.extend(seq)
        if sep is not None:
            stream.append(sep)
    blocks = [stream[i : i + body] for i in range(0, len(stream), body)]
    return [
        tokenizer.build_inputs_with_special_tokens(b)
        if hasattr(tokenizer, "build_inputs_with_special_tokens")
        else [tokenizer.cls_token_id, *b, sep]
        for b in blocks
        if b
    ]


def pretrain(
    texts_path: str | Path, output_dir: str | Path, config: PretrainConfig | None = None
) -> dict[str, Any]:
    """Continue masked-LM pre-training of ``config.backbone`` on the texts; write a backbone folder.

    Returns:
        A report (steps, blocks, first/last loss, seconds), also written to ``output_dir/pretrain.json``.
    """
    from transformers import AutoModelForMaskedLM, DataCollatorForLanguageModeling

    from bertkit.encoder import resolve_model_path
    from bertkit.model import load_tokenizer
    from bertkit.training.optim import WarmupSchedule

    cfg = config or PretrainConfig()
    torch.manual_seed(cfg.seed)
    rng = np.random.default_rng(cfg.seed)
    out = Path(output_dir)
    texts = read_texts(texts_path, cfg.text_column)
    if cfg.max_texts:
        texts = texts[: cfg.max_texts]
    tokenizer = load_tokenizer(cfg.backbone)
    model = AutoModelForMaskedLM.from_pretrained(resolve_model_path(cfg.backbone))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).train()
    blocks = make_blocks(tokenizer, texts, cfg.max_length)
    collator = DataCollatorForLanguageModeling(tokenizer, mlm_probability=cfg.mlm_probability, seed=cfg.seed)
    per_epoch = max(1, math.ceil(len(blocks) / cfg.batch_size))
    total = max(1, math.ceil(cfg.epochs * per_epoch))
    if cfg.max_steps:
        total = min(total, cfg.max_steps)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.learning_rate, weight_decay=0.01)
    scheduler = WarmupSchedule(optimizer, total, max(1, int(0.06 * total)), "linear")
    losses: list[float] = []
    step, t0 = 0, time.perf_counter()
    while step < total:
        order = rng.permutation(len(blocks))
        for i in range(0, len(order), cfg.batch_size):
            batch = collator([{"input_ids": blocks[j]} for j in order[i : i + cfg.batch_size]])
            batch = {k: v.to(device) for k, v in batch.items()}
            loss = model(**batch).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            step += 1
            if step >= total:
                break
    model.save_pretrained(out)
    tokenizer.save_pretrained(str(out))
    k = max(1, min(10, len(losses) // 4))
    report = {
        "config": asdict(cfg),
        "texts": len(texts),
        "blocks": len(blocks),
        "steps": step,
        "first_loss": float(np.mean(losses[:k])),
        "last_loss": float(np.mean(losses[-k:])),
        "seconds": round(time.perf_counter() - t0, 2),
    }
    write_json_atomic(out / "pretrain.json", report)
    logger.info("pretrain: %s", report)
    return report
