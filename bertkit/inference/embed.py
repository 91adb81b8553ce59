"""Sentence embeddings from a saved model, in input order (``bertkit embed``).

Bi-encoder heads (``text_similarity``, ``contrastive``, ``ranking_bi_encoder``) give their own embeddings
(pooling, projection and, for ``contrastive``, L2 normalisation exactly as in training); any other model gives
its head's pooled encoder state ``[N, H]``.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from bertkit.data.prepare import is_missing
from bertkit.data.readers import read_table
from bertkit.data.tokenize import Collator, TokenizedDataset, tokenize_texts
from bertkit.errors import ConfigError, DataError
from bertkit.fileio import write_with_atomic
from bertkit.inference.batched import predict_outputs
from bertkit.model import BertWithHead

OUTPUT_SUFFIXES = (".npy", ".parquet")


class _Embedder(nn.Module):
    """``forward(input_ids, attention_mask, token_type_ids) -> {"embeddings": [B, D]}`` for any saved model."""

    def __init__(self, model: BertWithHead) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        head, bert = self.model.head, self.model.bert
        if head.level == "bi_encoder":
            return {"embeddings": head.encode(bert, input_ids, attention_mask, token_type_ids)}  # [B, D]
        encoded = bert(input_ids, attention_mask, token_type_ids)
        return {"embeddings": head._apply_pooling(encoded, encoded.attention_mask)}  # [B, H]


def encode_texts(
    model: BertWithHead,
    texts: list[str],
    batch_size: int = 64,
    max_length: int | None = None,
    device: str = "auto",
) -> np.ndarray:
    """Embeddings ``[N, D]`` (float32) of ``texts`` in their input order."""
    from bertkit.inference.predictor import pick_device

    if model.tokenizer is None:
        raise ConfigError("the model has no tokenizer; save it with one (create_bert_with_head adds it)")
    length = int(max_length or model.metadata.get("max_length", 128))
    features = tokenize_texts(model.tokenizer, texts, max_length=length)
    dev = pick_device(device)
    model.to(dev)
    side = "left" if model.bert.decoder_only else "right"
    collator = Collator.from_tokenizer(model.tokenizer, padding_side=side)
    out = predict_outputs(_Embedder(model), TokenizedDataset(features), collator, batch_size, dev)
    hidden = int(model.bert.hidden_size)
    return out.get("embeddings", np.zeros((0, hidden), dtype=np.float32)).astype(np.float32)


def _text_column(frame: pd.DataFrame, model: BertWithHead, text_column: str | None) -> str:
    if text_column is not None:
        if text_column not in frame.columns:
            raise DataError(
                f"text column '{text_column}' is not in the data; columns: "
                f"{', '.join(map(repr, frame.columns))}"
            )
        return text_column
    profile = model.metadata.get("pair") or model.metadata.get("data") or {}
    for col in profile.get("text_columns", []):
        if col in frame.columns:
            return col
    for col in ("text", "sentence", "query", "anchor", "text_a"):
        if col in frame.columns:
            return col
    if len(frame.columns) == 1:
        return str(frame.columns[0])
    raise DataError(
        f"which column holds the text? pass --text-column; columns: {', '.join(map(repr, frame.columns))}"
    )


def embed_texts(
    model_dir: str | Path | BertWithHead,
    data: str | Path | pd.DataFrame | list[str],
    output: str | Path | None = None,
    text_column: str | None = None,
    batch_size: int = 64,
    id_column: str | None = None,
) -> np.ndarray:
    """Embed every row of ``data`` (file, DataFrame or list of strings) and optionally write them.

    Rows keep their input order; an empty text is embedded as ``""`` (counted in a warning) so that row i of
    the output is always row i of the input.

    Args:
        model_dir: a model or run folder (or a loaded model).
        data: the texts: a data file / DataFrame (its text column) or a list of strings.
        output: ``.npy`` (float32 ``[N, D]``) or ``.parquet`` (an ``embedding`` list column, plus the id
            column when there is one); None writes nothing.
        text_column: column to embed (default: the model's first text column, else ``text``...).
        batch_size: texts per forward pass.
        id_column: column copied into a ``.parquet`` output (default: the training profile's id column).

    Returns:
        The embeddings ``[N, D]``.
    """
    model = model_dir if isinstance(model_dir, BertWithHead) else BertWithHead.from_pretrained(model_dir)
    if output is not None and Path(output).suffix.lower() not in OUTPUT_SUFFIXES:
        raise ConfigError(f"--output must end in {' or '.join(OUTPUT_SUFFIXES)}, got '{Path(output).name}'")
    if isinstance(data, list | tuple):
        frame = pd.DataFrame({"text": list(data)})
        column = "text"
    else:
        frame = read_table(data)
        column = _text_column(frame, model, text_column)
    empty = frame[column].map(is_missing)
    if empty.any():
        warnings.warn(
            f"{int(empty.sum())} of {len(frame)} rows have an empty '{column}' (embedded as '')",
            UserWarning,
            stacklevel=2,
        )
    texts = ["" if e else str(v) for v, e in zip(frame[column].tolist(), empty.tolist())]
    emb = encode_texts(model, texts, batch_size=batch_size)
    if output is not None:
        _write(Path(output), emb, frame, id_column or _profile_id(model))
    return emb


def _profile_id(model: BertWithHead) -> str | None:
    profile: dict[str, Any] = model.metadata.get("pair") or model.metadata.get("data") or {}
    return profile.get("id_column")


def _write(path: Path, emb: np.ndarray, frame: pd.DataFrame, id_column: str | None) -> None:
    if path.suffix.lower() == ".npy":

        def save(p: Path) -> None:
            with open(p, "wb") as fh:  # np.save on a path would append ".npy" to the temporary name
                np.save(fh, emb)

        write_with_atomic(path, save)
        return
    table = pd.DataFrame({"embedding": list(emb)})
    if id_column and id_column in frame.columns:
        table.insert(0, id_column, frame[id_column].to_numpy())
    write_with_atomic(path, lambda p: table.to_parquet(p, index=False))
