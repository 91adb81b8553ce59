"""CUDA-only checks: mixed-precision training and prediction on a GPU, QLoRA (4-bit base + LoRA adapters).

Every test here skips on a machine without CUDA (CI and laptops); they run on a GPU host with
``python -m pytest tests/test_gpu.py``. The CPU paths of the same code are covered by the rest of the suite.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, tiny_bert_config

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")

DEMO = REPO_ROOT / "bertkit" / "data" / "examples" / "demo_reviews.csv"
DEMO_TEST = REPO_ROOT / "bertkit" / "data" / "examples" / "demo_reviews_test.csv"
TASKS = {
    "sentiment": {"head_type": "binary", "num_labels": 2},
    "topic": {"head_type": "multiclass", "label_names": ["a", "b", "c"]},
    "ner": {"head_type": "ner", "label_names": ["O", "B-PER", "I-PER"]},
}


def _has_bnb() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.fixture(scope="module")
def small_backbone(tmp_path_factory: pytest.TempPathFactory, tokenizer) -> Path:
    """A small random BERT (hidden 128: wide enough for 4-bit blocks) saved as a Hugging Face folder."""
    from bertkit import create_bert_core

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("small_bert")
    cfg = {**tiny_bert_config("bert"), "hidden_size": 128, "intermediate_size": 256, "num_attention_heads": 4}
    create_bert_core(config=cfg).model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_train_run_on_cuda_mixed_precision(tmp_path: Path, small_backbone: Path, precision: str) -> None:
    from bertkit.inference.predictor import Predictor
    from bertkit.runconfig import build_run_config
    from bertkit.training.run import train_run

    cfg = build_run_config(
        "quick",
        overrides={
            "model": {"backbone": str(small_backbone)},
            "data": {"max_train_samples": 160},
            "training": {
                "epochs": 2,
                "batch_size": 16,
                "max_length": 32,
                "learning_rate": 1e-3,
                "device": "cuda",
                "mixed_precision": precision,
                "progress": False,
            },
        },
    )
    result = train_run(DEMO, tmp_path / "run", cfg, test_path=DEMO_TEST, write_report=False)
    assert next(result.model.parameters()).device.type == "cuda"
    assert np.isfinite(result.metrics["valid"]["loss"]) and "accuracy" in result.metrics["test"]
    texts = ["great product, works well", "awful, broke after a day"]
    gpu = Predictor.from_dir(tmp_path / "run", device="cuda").outputs(texts)
    cpu = Predictor.from_dir(tmp_path / "run", device="cpu").outputs(texts)
    assert gpu.keys() == cpu.keys()
    for key, value in cpu.items():
        if np.issubdtype(value.dtype, np.floating):
            np.testing.assert_allclose(gpu[key], value, atol=2e-2, err_msg=key)


@pytest.mark.skipif(not _has_bnb(), reason="needs bitsandbytes")
def test_qlora_multitask_trains_saves_and_loads(tmp_path: Path, small_backbone: Path, tokenizer) -> None:
    import bitsandbytes as bnb

    from bertkit import create_multi_task_model
    from bertkit.multitask import MultiTaskModel

    torch.manual_seed(0)
    model = create_multi_task_model(
        TASKS,
        bert_name=str(small_backbone),
        adapters={"strategy": "s3a", "fusion": "gated"},
        tokenizer=tokenizer,
        quantization="4bit",
        gradient_checkpointing=True,
    )
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in model.modules()), "base is not 4-bit"
    frozen_base = [p for n, p in model.bert.named_parameters() if "lora_" not in n]
    assert frozen_base and not any(p.requires_grad for p in frozen_base)
    model.to("cuda")
    enc = tokenizer(["a great day", "a terrible film", "so so"], padding=True, return_tensors="pt")
    batch = {k: v.to("cuda") for k, v in enc.items() if k in ("input_ids", "attention_mask")}
    labels = torch.tensor([1, 0, 1], device="cuda")
    optim = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=5e-3)
    model.train()
    losses = []
    for _ in range(30):
        optim.zero_grad()
        loss = model(**batch, task_name="sentiment", labels=labels)["loss"]
        loss.backward()
        optim.step()
        losses.append(float(loss))
    assert np.isfinite(losses).all() and losses[-1] < 0.5 * losses[0], losses
    model.eval()
    with torch.no_grad():
        before = model(**batch, task_name="topic")["logits"].float().cpu()
    model.save_pretrained(tmp_path / "m")
    loaded = MultiTaskModel.from_pretrained(tmp_path / "m").to("cuda").eval()
    assert any(isinstance(m, bnb.nn.Linear4bit) for m in loaded.modules()), "reload lost the 4-bit base"
    with torch.no_grad():
        after = loaded(**batch, task_name="topic")["logits"].float().cpu()
    torch.testing.assert_close(after, before, atol=1e-2, rtol=1e-2)


def test_multitask_loader_picks_sdpa_or_flash_on_cuda() -> None:
    from bertkit.config import BertConfig
    from bertkit.multitask import plan_loading

    plan = plan_loading(BertConfig.from_dict(tiny_bert_config("bert")), parameters=10_000_000)
    assert plan.device == "cuda" and plan.free_memory_bytes and plan.free_memory_bytes > 0
    assert plan.attn_implementation in ("sdpa", "flash_attention_2")
