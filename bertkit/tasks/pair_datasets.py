"""Datasets and collator of the pair tasks.

* :class:`PairDataset`: one row per item, each text tokenized on its own (parts ``""``, ``"_b"``, ``"_neg"``) or
  one cross-encoder pair (part ``""`` only), with targets and query ``group_ids``.
* :class:`GroupedDataset`: one query group per item (pairwise and listwise objectives need whole groups).
* :class:`PairCollator`: pads every part separately and flattens group items.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from bertkit.data.tokenize import Collator
from bertkit.errors import ConfigError

SUFFIXES = ("", "_b", "_neg")


class PairDataset(Dataset):
    """Rows of separately tokenized texts (``parts`` keyed by suffix ``""``, ``"_b"``, ``"_neg"``).

    Attributes:
        targets: [N] labels (float scores/relevance, int classes, or anchor ids for contrastive) or None.
        group_ids: [N] int query ids (ranking) or None.
    """

    def __init__(
        self,
        parts: dict[str, dict[str, list[list[int]]]],
        targets: np.ndarray | None = None,
        group_ids: np.ndarray | None = None,
    ) -> None:
        self.parts = parts
        self.targets = targets
        self.group_ids = group_ids
        n = len(parts[""]["input_ids"])
        if any(len(p["input_ids"]) != n for p in parts.values()):
            raise ConfigError("pair parts have different numbers of rows")
        self._lengths = [sum(len(p["input_ids"][i]) for p in parts.values()) for i in range(n)]

    def __len__(self) -> int:
        return len(self._lengths)

    @property
    def lengths(self) -> list[int]:
        """Total tokens of each row (all its texts)."""
        return self._lengths

    def subset(self, index: np.ndarray) -> PairDataset:
        """The rows at ``index`` as a new dataset."""
        parts = {s: {k: [v[i] for i in index] for k, v in p.items()} for s, p in self.parts.items()}
        pick = lambda a: None if a is None else np.asarray(a)[index]  # noqa: E731
        return PairDataset(parts, pick(self.targets), pick(self.group_ids))

    def __getitem__(self, index: int) -> dict[str, Any]:
        item: dict[str, Any] = {f"{k}{s}": v[index] for s, p in self.parts.items() for k, v in p.items()}
        if self.targets is not None:
            item["labels"] = self.targets[index]
        if self.group_ids is not None:
            item["group_ids"] = int(self.group_ids[index])
        return item


class GroupedDataset(Dataset):
    """One item per query: all its candidate rows (pairwise and listwise objectives need whole groups)."""

    def __init__(self, rows: PairDataset) -> None:
        if rows.group_ids is None:
            raise ConfigError("grouped batches need group ids (ranking data)")
        self.rows = rows
        order = np.argsort(rows.group_ids, kind="stable")
        _, starts = np.unique(rows.group_ids[order], return_index=True)
        self.groups = np.split(order, starts[1:])
        self.targets = rows.targets
        self._lengths = [sum(rows.lengths[i] for i in g) for g in self.groups]

    def __len__(self) -> int:
        return len(self.groups)

    @property
    def lengths(self) -> list[int]:
        """Total tokens of each query group."""
        return self._lengths

    def __getitem__(self, index: int) -> dict[str, Any]:
        return {"rows": [self.rows[int(i)] for i in self.groups[index]]}


class PairCollator:
    """Pad each text part separately: ``input_ids``/``attention_mask``/``token_type_ids`` [B, T], the same with
    ``_b`` and ``_neg`` suffixes [B, T_b], ``labels`` [B] and ``group_ids`` [B]; group items are flattened.
    """

    def __init__(self, pad_token_id: int = 0, padding_side: str = "right") -> None:
        self.base = Collator(pad_token_id, padding_side=padding_side)

    @classmethod
    def from_tokenizer(cls, tokenizer: Any, decoder_only: bool = False) -> PairCollator:
        """Collator using the tokenizer's pad id; left padding for decoder-only backbones."""
        pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (tokenizer.eos_token_id or 0)
        return cls(pad, "left" if decoder_only else "right")

    def __call__(self, items: list[dict[str, Any]]) -> dict[str, torch.Tensor]:
        if items and "rows" in items[0]:
            items = [row for it in items for row in it["rows"]]
        batch: dict[str, torch.Tensor] = {}
        for s in SUFFIXES:
            if f"input_ids{s}" not in items[0]:
                continue
            keys = [k for k in ("input_ids", "token_type_ids") if f"{k}{s}" in items[0]]
            part = self.base([{k: it[f"{k}{s}"] for k in keys} for it in items])
            batch.update({f"{k}{s}": v for k, v in part.items()})
        if "labels" in items[0]:
            labels = np.asarray([it["labels"] for it in items])
            batch["labels"] = torch.from_numpy(
                labels.astype(np.float32 if labels.dtype.kind == "f" else np.int64)
            )
        if "group_ids" in items[0]:
            batch["group_ids"] = torch.tensor([it["group_ids"] for it in items], dtype=torch.long)
        return batch
