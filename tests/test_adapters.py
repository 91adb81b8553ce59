"""Adapter strategies S1–S4 (PEFT LoRA + fusion), save → load, parity, the loader decisions and batch finder."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import tiny_bert_config

from bertkit import ConfigError, ModelFolderError, create_bert_core, create_multi_task_model
from bertkit.multitask import (
    AttentionFusion,
    ConcatFusion,
    GatedResidual,
    MultiTaskModel,
    ParityError,
    assert_parameter_parity,
    build_ablation_models,
    count_trainable_parameters,
    find_batch_size,
    plan_loading,
)
from bertkit.multitask.config import AdapterConfig
from bertkit.multitask.hierarchical import CrossLevelAttention, FeatureAdapter

TASKS = {
    "sentiment": {"head_type": "binary", "num_labels": 2},
    "topic": {"head_type": "multiclass", "label_names": ["a", "b", "c"]},
    "ner": {"head_type": "ner", "label_names": ["O", "B-PER", "I-PER"]},
}
STRATEGIES = [
    {"strategy": "s1"},
    {"strategy": "s2"},
    {"strategy": "s3a", "fusion": "attention"},
    {"strategy": "s3a", "fusion": "gated"},
    {"strategy": "s3a", "fusion": "concat"},
    {"strategy": "s3b"},
    {"strategy": "s3b", "cross_level": "concat", "detach_l1_for_l2": False},
    {"strategy": "s4"},
]


@pytest.fixture(autouse=True)
def one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture()
def batch(tokenizer) -> dict[str, torch.Tensor]:
    enc = tokenizer(["a short text", "a longer text with more words"], padding=True, return_tensors="pt")
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}


def _tiny(adapters: dict | None, tokenizer, bert_name: str | None = None) -> MultiTaskModel:
    torch.manual_seed(0)
    return create_multi_task_model(
        TASKS,
        bert_name=bert_name,
        bert_config=None if bert_name else tiny_bert_config("bert"),
        adapters=adapters,
        tokenizer=tokenizer,
    )


def _perturb(model: MultiTaskModel) -> None:
    """Random values in every trainable tensor (LoRA B starts at 0, which would hide routing bugs)."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(0.1 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("adapters", STRATEGIES, ids=lambda a: "-".join(str(v) for v in a.values()))
def test_strategy_routes_trains_and_round_trips(adapters: dict, tokenizer, batch, tmp_path: Path) -> None:
    model = _tiny(adapters, tokenizer)
    base = [p for n, p in model.bert.named_parameters() if "lora_" not in n]
    assert not any(p.requires_grad for p in base)  # the base is frozen under LoRA
    if adapters["strategy"] == "s4":
        model.set_stage(2)
    loss = model(**batch, task_name="sentiment", labels=torch.tensor([0, 1]))["loss"]
    loss.backward()
    lora_grads = [p.grad for n, p in model.bert.named_parameters() if "lora_" in n and p.grad is not None]
    assert lora_grads and any(float(g.abs().sum()) > 0 for g in lora_grads)
    _perturb(model)
    model.eval()
    with torch.no_grad():
        ref = model(**batch)
    n_trainable = count_trainable_parameters(model)
    model.save_pretrained(tmp_path / "m")
    adapter_files = sorted(
        p.parent.name for p in (tmp_path / "m" / "adapters").rglob("adapter_model.safetensors")
    )
    assert adapter_files == sorted(model.strategy.adapter_ranks())
    assert not list((tmp_path / "m").rglob("*.bin")) and not list((tmp_path / "m").rglob("*.pt"))
    loaded = MultiTaskModel.from_pretrained(tmp_path / "m")
    with torch.no_grad():
        got = loaded(**batch)
    for task in TASKS:
        assert torch.allclose(ref[task]["logits"], got[task]["logits"], atol=1e-5), task
    assert count_trainable_parameters(loaded) == n_trainable


def test_routing_activates_the_right_adapters(tokenizer, batch) -> None:
    model = _tiny({"strategy": "s3a"}, tokenizer)
    assert model.strategy.passes("ner") == [("shared",), ("task_ner",)]
    model(**batch, task_name="ner")
    layer = model.strategy._tuner_layers[0]
    assert layer.active_adapters == ["task_ner"]  # the last pass of the fused pair
    assert all(p.requires_grad for p, _ in model.strategy._lora_params)  # routing never freezes adapters
    s4 = _tiny({"strategy": "s4"}, tokenizer)
    assert s4.strategy.passes("topic") == [("shared",)]
    s4.set_stage(2)
    assert s4.strategy.passes("topic") == [("shared", "task_topic")]
    frozen = {a for p, a in s4.strategy._lora_params if not p.requires_grad}
    assert frozen == {"shared"}


def test_hierarchical_detach_controls_level1_gradients(tokenizer, batch) -> None:
    for detach in (True, False):
        model = _tiny({"strategy": "s3b", "detach_l1_for_l2": detach}, tokenizer)
        _perturb(model)
        assert model.strategy.hierarchy.levels == {"sentiment": 2, "topic": 2, "ner": 1}
        model(**batch, task_name="topic", labels=torch.tensor([0, 2]))["loss"].backward()
        l1 = [p.grad for p, a in model.strategy._lora_params if a == "level1"]
        got_grad = any(g is not None and float(g.abs().sum()) > 0 for g in l1)
        assert got_grad is (not detach)


def test_fusion_modules() -> None:
    torch.manual_seed(0)
    s, p = torch.randn(2, 3, 8), torch.randn(2, 3, 8)
    att = AttentionFusion(8, dim=4)
    out = att(s, p).detach()
    lam = (out - p) / (s - p)  # a convex combination per token: one weight for every dimension
    assert out.shape == s.shape and torch.allclose(lam, lam[..., :1].expand_as(lam), atol=1e-4)
    assert float(lam.min()) >= -1e-5 and float(lam.max()) <= 1 + 1e-5
    gate = GatedResidual(8)
    g = torch.sigmoid(gate.gate(torch.cat([s, p], -1)))
    assert torch.allclose(gate(s, p), g * s + (1 - g) * p)
    assert ConcatFusion()(s, p).shape == (2, 3, 16)
    mask = torch.tensor([[1, 1, 0], [1, 1, 1]])
    cross = CrossLevelAttention(8, heads=2)
    assert float(cross(s, p, mask)[0, 2].detach().abs().sum()) == 0.0  # padded positions stay zero
    assert torch.equal(FeatureAdapter(8, 2)(s).detach(), s)  # starts as the identity


def test_concat_fusion_heads_read_twice_the_width(tokenizer) -> None:
    model = _tiny({"strategy": "s3a", "fusion": "concat"}, tokenizer)
    assert model.get_head("topic").config.input_size == 2 * model.bert.hidden_size


def test_parameter_parity(tokenizer) -> None:
    with pytest.raises(ParityError, match="differ"):
        assert_parameter_parity({"a": 100, "b": 90}, tolerance=0.05)
    assert assert_parameter_parity({"a": 100, "b": 96}) == {"a": 100, "b": 96}
    models, settings = build_ablation_models(
        TASKS, bert_name=None, bert_config=tiny_bert_config("bert"), tokenizer=tokenizer, tolerance=0.05
    )
    counts = assert_parameter_parity(models, tolerance=0.05)
    assert set(counts) == {"A1", "A2", "A3", "A4"}
    assert settings["A4"]["shared_rank"] == 16 and settings["A4"]["private_rank"] == 8
    assert settings["A2"]["strategy"] == "s1" and settings["A1"]["strategy"] == "s2"


def test_reference_backbone_is_not_copied_and_is_checked(tokenizer, batch, tmp_path: Path) -> None:
    backbone = tmp_path / "backbone"
    torch.manual_seed(0)
    create_bert_core(config=tiny_bert_config("bert")).model.save_pretrained(backbone)
    model = _tiny({"strategy": "s2"}, tokenizer, bert_name=str(backbone))
    _perturb(model)
    model.save_pretrained(tmp_path / "m")
    assert not (tmp_path / "m" / "bert" / "model.safetensors").exists()  # a reference, not a copy
    model.eval()
    loaded = MultiTaskModel.from_pretrained(tmp_path / "m")
    with torch.no_grad():
        assert torch.allclose(
            model(**batch, task_name="ner")["logits"], loaded(**batch, task_name="ner")["logits"]
        )
    torch.manual_seed(5)
    create_bert_core(config=tiny_bert_config("bert")).model.save_pretrained(backbone)  # the reference changed
    with pytest.raises(ModelFolderError, match="fingerprint"):
        MultiTaskModel.from_pretrained(tmp_path / "m")


def test_loader_decisions_and_qlora_requirement() -> None:
    from bertkit.config import BertConfig

    cfg = BertConfig.from_dict(tiny_bert_config("bert"))
    small = plan_loading(cfg, parameters=10_000_000, free_memory=None)
    assert (
        not small.quantize_4bit and not small.gradient_checkpointing and small.attn_implementation == "sdpa"
    )
    big = plan_loading(cfg, parameters=7_000_000_000, free_memory=None)
    assert big.gradient_checkpointing  # > 1B parameters
    assert big.quantize_4bit is (torch.cuda.is_available() and _has_bnb())
    forced = plan_loading(
        cfg, gradient_checkpointing=True, attn_implementation="eager", parameters=10, free_memory=None
    )
    assert forced.gradient_checkpointing and forced.attn_implementation == "eager"
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA"):
            plan_loading(cfg, quantization="4bit", parameters=10, free_memory=None)
    with pytest.raises(ConfigError):
        AdapterConfig(strategy="s9")


def _has_bnb() -> bool:
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return False
    return True


@pytest.mark.parametrize(
    "adapters", [{"strategy": "s2"}, {"strategy": "s3a", "fusion": "gated"}, {"strategy": "s3b"}], ids=str
)
def test_gradient_checkpointing_switch(tokenizer, batch, adapters) -> None:
    """Recomputation in backward sees the adapters active in the forward: same gradients as without it."""
    grads = []
    for checkpointing in (False, True):
        torch.manual_seed(0)
        model = create_multi_task_model(
            TASKS,
            bert_name=None,
            bert_config={**tiny_bert_config("bert"), "hidden_size": 48, "hidden_dropout_prob": 0.0},
            adapters=adapters,
            tokenizer=tokenizer,
            gradient_checkpointing=checkpointing,
        )
        assert model.bert.model.get_base_model().is_gradient_checkpointing is checkpointing
        _perturb(model)
        model.train()
        model(**batch, task_name="sentiment", labels=torch.tensor([0, 1]))["loss"].backward()
        grads.append([p.grad.clone() if p.grad is not None else None for p, _ in model.strategy._lora_params])
    assert any(g is not None and float(g.abs().sum()) > 0 for g in grads[1])
    for plain, ckpt in zip(*grads, strict=True):
        assert (plain is None) == (ckpt is None)
        if plain is not None:
            torch.testing.assert_close(ckpt, plain, atol=1e-6, rtol=1e-4)


def test_find_batch_size_halves_on_oom() -> None:
    tried: list[int] = []

    def trial(bs: int) -> None:
        tried.append(bs)
        if bs > 24:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")

    assert find_batch_size(trial, start=128) == 16
    assert tried == [128, 64, 32, 16]

    def broken(bs: int) -> None:
        raise RuntimeError("shape mismatch")

    with pytest.raises(RuntimeError, match="shape"):
        find_batch_size(broken, start=8)
    with pytest.raises(ConfigError, match="even batch size"):
        find_batch_size(lambda bs: (_ for _ in ()).throw(MemoryError("out of memory")), start=4)
