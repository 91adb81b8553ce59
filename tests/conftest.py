"""Shared fixtures: tiny random-initialised backbones of several architectures (no downloads)."""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
warnings.filterwarnings("ignore", category=UserWarning, module="transformers")
torch.set_num_threads(min(2, torch.get_num_threads()))

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

#: tiny from-scratch configs (2 layers, hidden 32) for every architecture bertkit supports
TINY_BACKBONES: dict[str, dict[str, Any]] = {
    "bert": {"model_type": "bert"},
    "distilbert": {"model_type": "distilbert"},
    "roberta": {"model_type": "roberta"},
    "deberta-v2": {
        "model_type": "deberta-v2",
        "extra_config": {
            "relative_attention": True,
            "position_biased_input": False,
            "pos_att_type": ["p2c", "c2p"],
            "max_relative_positions": 64,
        },
    },
    "electra": {"model_type": "electra"},
    "modernbert": {"model_type": "modernbert"},
    "qwen3": {"model_type": "qwen3"},
}


def tiny_bert_config(arch: str) -> dict[str, Any]:
    """BertConfig dict for a tiny random model of ``arch``."""
    base = {"hidden_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64}
    base.update(TINY_BACKBONES[arch])
    return base


def shared_data(name: str) -> Path:
    """Path of a shared dataset folder; skips the test when ../shared/data is absent."""
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"real data {path} is not available (needs the ../shared checkout used in CI)")
    return path


@pytest.fixture(scope="session")
def tokenizer() -> Any:
    """The bundled tokenizer, shared by the whole session (see ``_right_padding``)."""
    from bertkit import load_tokenizer

    return load_tokenizer("minilm")


@pytest.fixture(autouse=True)
def _right_padding(tokenizer: Any) -> None:
    """Models for decoder-only backbones switch their tokenizer to left padding; start each test from right."""
    tokenizer.padding_side = "right"


@pytest.fixture()
def batch(tokenizer: Any) -> dict[str, torch.Tensor]:
    texts = ["a short text", "a somewhat longer text with more words in it", "mid length one here"]
    return dict(tokenizer(texts, padding=True, return_tensors="pt"))
