"""Fast batched tokenisation with head/tail/head+tail truncation, a Dataset and a dynamic-padding collator."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from bertkit.errors import ConfigError

__all__ = ["TRUNCATIONS", "tokenize_texts", "TokenizedDataset", "Collator"]

TRUNCATIONS = ("head", "tail", "head_tail")
HEAD_TAIL_HEAD_SHARE = 0.25  # head_tail keeps the first 1/4 and the last 3/4 of the token budget


def _as_texts(texts: Sequence[Any], what: str) -> list[str]:
    if isinstance(texts, str):
        raise ConfigError(f"{what} must be a list of strings, not a single string")
    return [t if isinstance(t, str) else ("" if t is None else str(t)) for t in texts]


def _special_layout(tokenizer: Any) -> tuple[list[int], list[int], list[int], list[int]]:
    """Return (prefix ids, suffix ids, prefix type ids, suffix type ids) the tokenizer adds to one text."""
    for probe in ("hello", "a", "x", "1"):
        plain = tokenizer(probe, add_special_tokens=False, return_attention_mask=False, verbose=False)[
            "input_ids"
        ]
        if plain:
            break
    else:
        raise ConfigError(
            "cannot find how this tokenizer adds special tokens (probe texts tokenise to nothing)"
        )
    if hasattr(tokenizer, "build_inputs_with_special_tokens"):  # slow tokenizers / transformers < 5
        full = list(tokenizer.build_inputs_with_special_tokens(list(plain)))
        types = list(tokenizer.create_token_type_ids_from_sequences(list(plain)))
    else:
        enc = tokenizer(probe, add_special_tokens=True, return_attention_mask=False, verbose=False)
        full = list(enc["input_ids"])
        types = list(enc.get("token_type_ids") or [0] * len(full))
    k = len(plain)
    for start in range(len(full) - k + 1):
        if full[start : start + k] == list(plain):
            end = start + k
            return full[:start], full[end:], types[:start], types[end:]
    raise ConfigError("cannot find how this tokenizer adds special tokens; use truncation='head'")


def tokenize_texts(
    tokenizer: Any,
    texts_a: Sequence[str],
    texts_b: Sequence[str] | None = None,
    max_length: int = 128,
    truncation: str = "head",
) -> dict[str, list[list[int]]]:
    """Tokenise texts (or text pairs) in one batched call, without padding.

    Truncation strategies for single texts (``max_length`` counts the special tokens):

    * ``head``: keep the first tokens (the tokenizer's own truncation).
    * ``tail``: keep the last tokens; ``[CLS]``/``[SEP]`` are still added around them.
    * ``head_tail``: keep the first 1/4 and the last 3/4 of the token budget
      (``budget = max_length - number of special tokens``; head = ``budget // 4``), the "head+tail" trick
      of Sun et al. 2019 for long documents.

    Pairs always use the tokenizer's pair encoding with ``longest_first`` truncation (``head`` only).

    Args:
        tokenizer: A Hugging Face (fast) tokenizer.
        texts_a: First texts.
        texts_b: Second texts of pairs (same length as ``texts_a``) or None.
        max_length: Maximum sequence length including special tokens.
        truncation: ``head``, ``tail`` or ``head_tail``.

    Returns:
        ``{"input_ids": [[...], ...]}`` plus ``"token_type_ids"`` when the tokenizer returns them.

    Raises:
        ConfigError: Unknown strategy, non-head strategy for pairs, mismatched pair lengths or a
            ``max_length`` too small for the special tokens.
    """
    if truncation not in TRUNCATIONS:
        raise ConfigError(f"unknown truncation {truncation!r}; valid: {', '.join(TRUNCATIONS)}")
    a = _as_texts(texts_a, "texts_a")
    b = _as_texts(texts_b, "texts_b") if texts_b is not None else None
    if b is not None and len(b) != len(a):
        raise ConfigError(f"texts_a has {len(a)} texts but texts_b has {len(b)}; they must pair up")
    if b is not None and truncation != "head":
        raise ConfigError(f"truncation {truncation!r} is not supported for text pairs; use 'head'")
    n_special = tokenizer.num_special_tokens_to_add(pair=b is not None)
    if max_length <= n_special:
        raise ConfigError(f"max_length={max_length} leaves no room for text after {n_special} special tokens")
    want_types = "token_type_ids" in getattr(tokenizer, "model_input_names", ["token_type_ids"])
    if not a:
        return {"input_ids": [], **({"token_type_ids": []} if want_types else {})}
    if truncation == "head":
        enc = tokenizer(
            a,
            b,
            truncation=True,
            max_length=max_length,
            padding=False,
            return_attention_mask=False,
            verbose=False,
        )
        out = {"input_ids": [list(x) for x in enc["input_ids"]]}
        if "token_type_ids" in enc:
            out["token_type_ids"] = [list(x) for x in enc["token_type_ids"]]
        return out
    enc = tokenizer(
        a,
        add_special_tokens=False,
        truncation=False,
        padding=False,
        return_attention_mask=False,
        return_token_type_ids=False,
        verbose=False,
    )
    prefix, suffix, prefix_t, suffix_t = _special_layout(tokenizer)
    budget = max_length - len(prefix) - len(suffix)
    head = int(budget * HEAD_TAIL_HEAD_SHARE) if truncation == "head_tail" else 0
    tail = budget - head
    ids: list[list[int]] = []
    for seq in enc["input_ids"]:
        if len(seq) > budget:
            seq = (seq[:head] if head else []) + seq[len(seq) - tail :]
        ids.append(prefix + list(seq) + suffix)
    out = {"input_ids": ids}
    if want_types:
        out["token_type_ids"] = [
            prefix_t + [0] * (len(x) - len(prefix) - len(suffix)) + suffix_t for x in ids
        ]
    return out


class TokenizedDataset(Dataset):
    """Token ids (unpadded) plus optional targets.

    Args:
        features: ``{"input_ids": [[...], ...], "token_type_ids": ...}`` as returned by :func:`tokenize_texts`.
        targets: Optional array whose first axis matches the number of texts (int64 class indices,
            float32 [N] or [N, L] targets).
    """

    def __init__(self, features: dict[str, list[list[int]]], targets: np.ndarray | None = None) -> None:
        if "input_ids" not in features:
            raise ConfigError("features must contain 'input_ids'")
        n = len(features["input_ids"])
        bad = {k: len(v) for k, v in features.items() if len(v) != n}
        if bad:
            raise ConfigError(f"feature lists have different lengths: input_ids={n}, {bad}")
        if targets is not None and len(targets) != n:
            raise ConfigError(f"{len(targets)} targets for {n} texts; they must match")
        self.features = features
        self.targets = targets
        self._lengths: list[int] | None = None

    def __len__(self) -> int:
        return len(self.features["input_ids"])

    @property
    def lengths(self) -> list[int]:
        """Number of tokens of each example (for length-bucketed sampling)."""
        if self._lengths is None:
            self._lengths = [len(x) for x in self.features["input_ids"]]
        return self._lengths

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {k: v[index] for k, v in self.features.items()}
        if self.targets is not None:
            item["labels"] = self.targets[index]
        return item


class Collator:
    """Pad a list of dataset items to the longest in the batch and build tensors.

    Args:
        pad_token_id: Id used to pad ``input_ids`` (``tokenizer.pad_token_id``).
        pad_to_multiple_of: Round the padded length up to a multiple of this (8 helps tensor cores).
        padding_side: ``"right"`` (encoders) or ``"left"`` (decoder-only backbones).

    Returns of ``__call__``: ``input_ids`` long [B, T], ``attention_mask`` long [B, T], ``token_type_ids``
    long [B, T] when the items have them, ``labels`` when present: long [B] for integer targets, float32 [B]
    or [B, L] for float targets (float64 is cast to float32).
    """

    def __init__(
        self, pad_token_id: int = 0, pad_to_multiple_of: int | None = None, padding_side: str = "right"
    ) -> None:
        if padding_side not in ("right", "left"):
            raise ConfigError(f"padding_side must be 'right' or 'left', got {padding_side!r}")
        if pad_to_multiple_of is not None and pad_to_multiple_of < 1:
            raise ConfigError(f"pad_to_multiple_of must be a positive integer, got {pad_to_multiple_of}")
        self.pad_token_id = int(pad_token_id)
        self.pad_to_multiple_of = pad_to_multiple_of
        self.padding_side = padding_side

    @classmethod
    def from_tokenizer(
        cls, tokenizer: Any, pad_to_multiple_of: int | None = None, padding_side: str | None = None
    ) -> Collator:
        """Build a collator using the tokenizer's pad id (or eos id) and padding side."""
        pad = tokenizer.pad_token_id
        if pad is None:
            pad = getattr(tokenizer, "eos_token_id", None) or 0
        side = str(padding_side or getattr(tokenizer, "padding_side", None) or "right")
        return cls(pad, pad_to_multiple_of, side)

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if not items:
            raise ConfigError("cannot collate an empty batch")
        lengths = [len(it["input_ids"]) for it in items]
        width = max(1, max(lengths))
        if self.pad_to_multiple_of:
            m = self.pad_to_multiple_of
            width = (width + m - 1) // m * m
        bsz = len(items)
        ids = np.full((bsz, width), self.pad_token_id, dtype=np.int64)  # [B, T]
        mask = np.zeros((bsz, width), dtype=np.int64)  # [B, T]
        has_types = "token_type_ids" in items[0]
        types = np.zeros((bsz, width), dtype=np.int64) if has_types else None  # [B, T]
        for i, (it, n) in enumerate(zip(items, lengths)):
            sl = slice(0, n) if self.padding_side == "right" else slice(width - n, width)
            if n:
                ids[i, sl] = it["input_ids"]
                mask[i, sl] = 1
                if types is not None:
                    types[i, sl] = it["token_type_ids"]
        batch = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        if types is not None:
            batch["token_type_ids"] = torch.from_numpy(types)
        if "labels" in items[0]:
            labels = np.stack([np.asarray(it["labels"]) for it in items])  # [B] or [B, L]
            if labels.dtype.kind in "fb":
                labels = labels.astype(np.float32, copy=False)
            elif labels.dtype.kind in "iu":
                labels = labels.astype(np.int64, copy=False)
            batch["labels"] = torch.from_numpy(np.ascontiguousarray(labels))
        return batch
