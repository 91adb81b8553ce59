"""Data loading, analysis, preparation, tokenisation and batching.

Names are imported lazily so that ``import bertkit.data`` (e.g. for ``bertkit analyze``) does not import
torch or transformers until a tokenisation/sampling name is used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

_EXPORTS = {
    "read_table": "readers",
    "SUPPORTED_SUFFIXES": "readers",
    "TASKS": "analyze",
    "HEAD_FOR_TASK": "analyze",
    "LOSS_FOR_TASK": "analyze",
    "DatasetProfile": "analyze",
    "analyze_dataset": "analyze",
    "label_to_str": "prepare",
    "sort_label_names": "prepare",
    "is_missing": "prepare",
    "PreparedData": "prepare",
    "prepare_frame": "prepare",
    "serialize_rows": "prepare",
    "TRUNCATIONS": "tokenize",
    "tokenize_texts": "tokenize",
    "TokenizedDataset": "tokenize",
    "Collator": "tokenize",
    "LengthBucketBatchSampler": "samplers",
    "sorted_inference_batches": "samplers",
    "restore_order": "samplers",
    "minilm_path": "minilm",
    "minilm_tokenizer": "minilm",
}

__all__ = [
    "Collator",
    "DatasetProfile",
    "HEAD_FOR_TASK",
    "LOSS_FOR_TASK",
    "LengthBucketBatchSampler",
    "PreparedData",
    "SUPPORTED_SUFFIXES",
    "TASKS",
    "TRUNCATIONS",
    "TokenizedDataset",
    "analyze_dataset",
    "is_missing",
    "label_to_str",
    "minilm_path",
    "minilm_tokenizer",
    "prepare_frame",
    "read_table",
    "restore_order",
    "serialize_rows",
    "sort_label_names",
    "sorted_inference_batches",
    "tokenize_texts",
]

if TYPE_CHECKING:
    from bertkit.data.analyze import (
        HEAD_FOR_TASK,
        LOSS_FOR_TASK,
        TASKS,
        DatasetProfile,
        analyze_dataset,
    )
    from bertkit.data.minilm import minilm_path, minilm_tokenizer
    from bertkit.data.prepare import (
        PreparedData,
        is_missing,
        label_to_str,
        prepare_frame,
        serialize_rows,
        sort_label_names,
    )
    from bertkit.data.readers import SUPPORTED_SUFFIXES, read_table
    from bertkit.data.samplers import LengthBucketBatchSampler, restore_order, sorted_inference_batches
    from bertkit.data.tokenize import TRUNCATIONS, Collator, TokenizedDataset, tokenize_texts


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'bertkit.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"bertkit.data.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
