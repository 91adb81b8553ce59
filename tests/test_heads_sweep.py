"""Registry sweep: every registered head × several tiny backbones gets the same checks automatically."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_bert_config

from bertkit import BertWithHead, create_bert_with_head, get_head_class, list_heads

SWEEP_BACKBONES = ["bert", "modernbert", "qwen3"]


def _build(head_name: str, arch: str, tokenizer) -> BertWithHead:
    torch.manual_seed(0)
    cls = get_head_class(head_name)
    return create_bert_with_head(
        head_type=head_name,
        bert_config=tiny_bert_config(arch),
        head_config=cls.example_config(),
        tokenizer=tokenizer,
    )


def _inputs(model: BertWithHead, tokenizer) -> dict:
    texts = ["first text", "the second text is longer than the first", "third", "a fourth example text"]
    tokenizer.padding_side = "left" if model.bert.decoder_only else "right"
    enc = tokenizer(texts, padding=True, return_tensors="pt")
    tokenizer.padding_side = "right"
    return dict(enc)


@pytest.mark.parametrize("arch", SWEEP_BACKBONES)
@pytest.mark.parametrize("head_name", list_heads())
def test_head_contract(head_name: str, arch: str, tokenizer, tmp_path: Path) -> None:
    model = _build(head_name, arch, tokenizer)
    inputs = _inputs(model, tokenizer)
    B, T = inputs["input_ids"].shape
    gen = torch.Generator().manual_seed(0)
    targets = model.head.example_targets(B, T, gen)
    model.train()
    out = model(**inputs, labels=targets)
    # shapes: every tensor output is batch-first
    for key, value in out.items():
        if key != "loss" and isinstance(value, torch.Tensor):
            assert value.shape[0] == B, f"{key} has shape {tuple(value.shape)}"
    assert torch.isfinite(out["loss"]) and out["loss"].dim() == 0
    # gradients reach the head and the encoder
    out["loss"].backward()
    head_grads = [p.grad for p in model.head.parameters() if p.requires_grad]
    assert any(g is not None and g.abs().sum() > 0 for g in head_grads)
    enc_grads = [p.grad for p in model.bert.layers[-1].parameters()]
    assert any(g is not None and g.abs().sum() > 0 for g in enc_grads)
    # freezing really stops gradients
    model.zero_grad(set_to_none=True)
    model.freeze_bert()
    model(**inputs, labels=targets)["loss"].backward()
    assert all(p.grad is None for p in model.bert.parameters())
    model.unfreeze_bert()
    model.zero_grad(set_to_none=True)
    model.freeze_bert(num_layers=1)
    model(**inputs, labels=targets)["loss"].backward()
    assert all(p.grad is None for p in model.bert.layers[0].parameters())
    assert any(p.grad is not None for p in model.bert.layers[1].parameters())
    # save -> load gives identical outputs
    model.unfreeze_bert()
    model.eval()
    with torch.no_grad():
        before = model(**inputs)
    model.save_pretrained(tmp_path / "m")
    loaded = BertWithHead.from_pretrained(tmp_path / "m")
    with torch.no_grad():
        after = loaded(**inputs)
    for key, value in before.items():
        if isinstance(value, torch.Tensor):
            assert torch.equal(value, after[key]), key
    assert loaded.head.registry_name == head_name


@pytest.mark.parametrize("head_name", list_heads())
def test_head_metrics_and_predictions_format(head_name: str, tokenizer) -> None:
    model = _build(head_name, "bert", tokenizer).eval()
    inputs = _inputs(model, tokenizer)
    B, T = inputs["input_ids"].shape
    targets = model.head.example_targets(B, T, torch.Generator().manual_seed(1))
    with torch.no_grad():
        out = model(**inputs)
    np_out = {k: v.numpy() for k, v in out.items() if isinstance(v, torch.Tensor)}
    metrics = model.head.compute_metrics(np_out, targets.numpy())
    name, mode = model.head.primary_metric()
    assert name in metrics and mode in ("max", "min")
    cols = model.head.format_predictions(np_out)
    assert cols and all(len(v) == B for v in cols.values())
