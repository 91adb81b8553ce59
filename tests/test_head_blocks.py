"""Head building blocks (attention, FFN, norms, intermediate projection) and every create_nlp_head option."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import tiny_bert_config

from bertkit import BertWithHead, HeadConfig, create_bert_core, create_bert_with_head, list_heads
from bertkit.errors import ConfigError, RegistryError
from bertkit.heads.blocks import (
    ATTENTION_TYPES,
    FFN_TYPES,
    NORM_TYPES,
    BandRMSNorm,
    IntermediateProjection,
    TokenBlockStack,
    ZeroCenteredRMSNorm,
    build_attention,
    build_ffn,
    build_norm,
)
from bertkit.heads.classification import MulticlassClassificationHead
from bertkit.heads.nlp_head import (
    NLP_HEAD_PRESETS,
    NLP_TASK_HEADS,
    NLPTaskConfig,
    NLPTaskType,
    create_nlp_head,
    nlp_head_config,
)

H = 16


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    """Tiny models: one intra-op thread is faster than two on a shared machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _padded_batch(left: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(3, 6, H)
    lengths = [6, 4, 2]
    mask = torch.zeros(3, 6, dtype=torch.long)
    for i, n in enumerate(lengths):
        if left:
            mask[i, 6 - n :] = 1
        else:
            mask[i, :n] = 1
    return x, mask


def _check_padding_invariance(block: torch.nn.Module, left: bool) -> None:
    """Changing padded positions never changes real outputs; padded outputs are zero; grads are finite."""
    block.eval()
    x, mask = _padded_batch(left)
    out = block(x, mask)
    assert out.shape == x.shape
    noisy = torch.where(mask.bool().unsqueeze(-1), x, 100 * torch.randn_like(x))
    out2 = block(noisy, mask)
    real = mask.bool()
    torch.testing.assert_close(out[real], out2[real], rtol=1e-5, atol=1e-5)
    assert torch.all(out[~real] == 0)
    x.requires_grad_(True)
    block.train()
    block(x, mask).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    assert all(p.grad is None or torch.isfinite(p.grad).all() for p in block.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in block.parameters())


@pytest.mark.parametrize("left", [False, True], ids=["right_pad", "left_pad"])
@pytest.mark.parametrize("kind", ATTENTION_TYPES)
def test_attention_block_shape_masking_grads(kind: str, left: bool) -> None:
    torch.manual_seed(0)
    _check_padding_invariance(build_attention(kind, H, num_heads=4), left)


@pytest.mark.parametrize("kind", ATTENTION_TYPES)
def test_attention_block_fully_padded_row_is_finite(kind: str) -> None:
    block = build_attention(kind, H, num_heads=2).eval()
    x = torch.randn(2, 4, H)
    mask = torch.tensor([[1, 1, 0, 0], [0, 0, 0, 0]])
    out = block(x, mask)
    assert torch.isfinite(out).all() and torch.all(out[1] == 0)


def test_attention_heads_must_divide_width() -> None:
    with pytest.raises(ConfigError, match="attention_heads"):
        build_attention("multi_head", H, num_heads=3)
    with pytest.raises(ConfigError, match="even head width"):
        build_attention("differential", 12, num_heads=4)  # head width 3


def test_differential_attention_lambda_is_learned() -> None:
    block = build_attention("differential", H, num_heads=2)
    x, mask = _padded_batch()
    block(x, mask).sum().backward()
    assert torch.isfinite(block.lambda_value())
    assert block.lambda_params.grad is not None and block.lambda_params.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", FFN_TYPES)
def test_ffn_shape_expansion_grads(kind: str) -> None:
    ffn = build_ffn(kind, H, expansion_factor=2)
    gated = kind != "mlp"
    assert ffn.w_in.out_features == 2 * H * (2 if gated else 1) and ffn.w_out.in_features == 2 * H
    x = torch.randn(3, 5, H, requires_grad=True)
    out = ffn(x)
    assert out.shape == x.shape
    out.sum().backward()
    assert torch.isfinite(x.grad).all() and ffn.w_in.weight.grad.abs().sum() > 0


def test_ffn_rejects_unknown_kind() -> None:
    with pytest.raises(ConfigError, match="ffn"):
        build_ffn("relu2", H)


@pytest.mark.parametrize("kind", [k for k in NORM_TYPES if k != "none"])
def test_norm_shape_scale_grads(kind: str) -> None:
    norm = build_norm(kind, H)
    x = (3 * torch.randn(4, 5, H) + 2).requires_grad_(True)
    y = norm(x)
    assert y.shape == x.shape
    rms = y.pow(2).mean(-1).sqrt()
    if kind == "band_rms":
        assert torch.all(rms <= 1 + 1e-4) and torch.all(rms >= 0.9 - 1e-4)
    else:
        torch.testing.assert_close(rms, torch.ones_like(rms), rtol=1e-3, atol=1e-3)
    if kind in ("layer_norm", "zero_centered_rms_norm"):
        torch.testing.assert_close(y.mean(-1), torch.zeros(4, 5), rtol=0, atol=1e-4)
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


def test_band_rms_scale_stays_in_band() -> None:
    norm = BandRMSNorm(H, band=0.2)
    x = torch.randn(8, H)
    for value in (-50.0, 50.0):
        with torch.no_grad():
            norm.band_logit.fill_(value)
        rms = norm(x).pow(2).mean(-1).sqrt()
        assert torch.all(rms >= 0.8 - 1e-4) and torch.all(rms <= 1 + 1e-4)


def test_zero_centered_rms_norm_scale_is_offset_from_one() -> None:
    norm = ZeroCenteredRMSNorm(H)
    assert torch.all(norm.weight == 0)  # weight decay pulls the scale towards 1, not 0


def test_norm_none_is_identity_and_unknown_raises() -> None:
    x = torch.randn(2, H)
    assert torch.equal(build_norm("none", H)(x), x)
    with pytest.raises(ConfigError, match="norm"):
        build_norm("batch_norm", H)


def test_intermediate_projection() -> None:
    proj = IntermediateProjection(H, 8, norm="rms_norm", dropout=0.1)
    x = torch.randn(5, H, requires_grad=True)
    y = proj(x)
    assert y.shape == (5, 8)
    y.sum().backward()
    assert torch.isfinite(x.grad).all()


@pytest.mark.parametrize("left", [False, True], ids=["right_pad", "left_pad"])
def test_token_block_stack_masking(left: bool) -> None:
    torch.manual_seed(0)
    stack = TokenBlockStack(H, attention="cbam", ffn="swiglu", expansion_factor=2, norm="rms_norm")
    _check_padding_invariance(stack, left)


# ------------------------------------------------------------------ create_nlp_head
TASK = NLPTaskConfig("sentiment", NLPTaskType.SENTIMENT_ANALYSIS, num_classes=3, dropout_rate=0.1)


def test_create_nlp_head_maps_to_registered_head_and_extra(tokenizer: Any) -> None:
    head = create_nlp_head(
        TASK,
        32,
        use_task_attention=True,
        attention_type="cbam",
        use_ffn=True,
        ffn_type="swiglu",
        ffn_expansion_factor=2,
        normalization_type="rms_norm",
        use_intermediate=True,
        intermediate_size=24,
    )
    assert type(head) is MulticlassClassificationHead and head.registry_name == "multiclass_classification"
    extra = head.config.extra
    assert extra["task_attention"] == "cbam" and extra["ffn"] == "swiglu" and extra["norm"] == "rms_norm"
    assert extra["intermediate_size"] == 24 and head.projection_output_size == 24
    # the other spelling builds the same head from the same config
    model = create_bert_with_head(
        bert_config=tiny_bert_config("bert"),
        head_config=nlp_head_config(TASK, 32, attention_type="cbam"),
        tokenizer=tokenizer,
    )
    assert type(model.head) is MulticlassClassificationHead and model.head.token_blocks is not None


def test_create_nlp_head_default_is_plain_head() -> None:
    head = create_nlp_head(TASK, 32)
    assert head.token_blocks is None and isinstance(head.projection, torch.nn.Identity)
    plain = MulticlassClassificationHead(
        HeadConfig(head_type="multiclass_classification", input_size=32, num_labels=3)
    )
    assert set(head.state_dict()) == set(plain.state_dict())


def test_presets_and_precedence() -> None:
    assert set(NLP_HEAD_PRESETS) == {"efficient", "high_capacity"}
    eff = create_nlp_head(TASK, 32, preset="efficient")
    assert eff.token_blocks is None
    hc = create_nlp_head(TASK, 32, preset="high_capacity", attention_type="cbam")
    assert hc.config.extra["task_attention"] == "cbam" and hc.config.extra["ffn"] == "swiglu"
    off = create_nlp_head(TASK, 32, preset="high_capacity", use_task_attention=False, dropout_rate=0.0)
    assert "task_attention" not in off.config.extra and off.config.dropout_prob == 0.0
    with pytest.raises(ConfigError, match="preset"):
        create_nlp_head(TASK, 32, preset="huge")


def test_input_formats() -> None:
    head = create_nlp_head(TASK, 32, attention_type="multi_head", pooling_type="mean").eval()
    states, mask = torch.randn(2, 5, 32), torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    a = head({"hidden_states": states, "attention_mask": mask, "pooler_output": None})
    b = head(states, mask)
    assert torch.equal(a["logits"], b["logits"]) and set(a) >= {"logits", "probabilities"}
    assert head(torch.randn(2, 32))["probabilities"].shape == (2, 3)  # already pooled
    assert head(states)["logits"].shape == (2, 3)


def test_task_types_without_registered_heads_raise_registry_error() -> None:
    for task_type, name in (
        (NLPTaskType.NAMED_ENTITY_RECOGNITION, "token_classification"),
        (NLPTaskType.QUESTION_ANSWERING, "question_answering"),
        (NLPTaskType.TEXT_SIMILARITY, "text_similarity"),
    ):
        if name in list_heads():
            continue
        with pytest.raises(RegistryError, match="valid names"):
            create_nlp_head(NLPTaskConfig("t", task_type), 32)
    with pytest.raises(ConfigError, match="use_crf"):
        NLPTaskConfig("t", NLPTaskType.SENTIMENT_ANALYSIS, use_crf=True)


# -------------------------------------------- sweep: every option x three backbones
TAGS = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
_ALL_BLOCKS = {
    "attention_type": "cbam",
    "ffn_type": "mlp",
    "ffn_expansion_factor": 2,
    "intermediate_size": 16,
}
_TASKS: dict[str, tuple[NLPTaskConfig, dict[str, Any]]] = {
    "binary": (NLPTaskConfig("b", NLPTaskType.BINARY_CLASSIFICATION, 2), {}),
    "multilabel": (NLPTaskConfig("m", NLPTaskType.MULTILABEL_CLASSIFICATION, 4), {}),
    "regression": (NLPTaskConfig("r", NLPTaskType.REGRESSION, 1), {}),
    "ordinal": (NLPTaskConfig("o", NLPTaskType.ORDINAL_REGRESSION, 4), {}),
    "ts_classification": (NLPTaskConfig("tc", NLPTaskType.TIMESERIES_CLASSIFICATION, 3), {"rnn_hidden": 8}),
    "ts_regression": (
        NLPTaskConfig("tr", NLPTaskType.TIMESERIES_REGRESSION),
        {"rnn_hidden": 8, "horizon": 2},
    ),
    "ner_crf": (
        NLPTaskConfig("n", NLPTaskType.NAMED_ENTITY_RECOGNITION, 5, use_crf=True, label_names=TAGS),
        {},
    ),
    "qa": (NLPTaskConfig("q", NLPTaskType.QUESTION_ANSWERING), {}),
}
# heads written elsewhere are swept once they are registered
_TASKS = {
    k: v for k, v in _TASKS.items() if NLP_TASK_HEADS[NLPTaskType(v[0].task_type).value] in list_heads()
}
CONTRACTS = {
    "multiclass_classification": {"logits", "probabilities"},
    "binary_classification": {"logits", "probabilities"},
    "multilabel_classification": {"logits", "probabilities"},
    "timeseries_classification": {"logits", "probabilities"},
    "token_classification": {"logits", "predictions"},
    "question_answering": {"start_logits", "end_logits"},
    "timeseries_regression": {"predictions"},
}
OPTIONS: dict[str, tuple[str, dict[str, Any]]] = {
    **{
        f"pooling-{p}": ("sentiment", {"pooling_type": p})
        for p in ("cls", "mean", "max", "attention", "weighted_mean", "last", "pooler")
    },
    **{
        f"attention-{k}": ("sentiment", {"use_task_attention": True, "attention_type": k})
        for k in ATTENTION_TYPES
    },
    "attention-2-heads": ("sentiment", {"attention_type": "multi_head", "num_attention_heads": 2}),
    **{
        f"ffn-{k}": ("sentiment", {"use_ffn": True, "ffn_type": k, "ffn_expansion_factor": 2})
        for k in FFN_TYPES
    },
    **{
        f"norm-{k}": ("sentiment", {**_ALL_BLOCKS, "normalization_type": k})
        for k in NORM_TYPES
        if k != "none"
    },
    "intermediate": ("sentiment", {"use_intermediate": True, "intermediate_size": 24}),
    "dropout": ("sentiment", {"dropout_rate": 0.3}),
    **{f"preset-{p}": ("sentiment", {"preset": p}) for p in NLP_HEAD_PRESETS},
    **{f"task-{t}": (t, _ALL_BLOCKS) for t in _TASKS},
}


def _build_model(option: str, arch: str, tokenizer: Any) -> BertWithHead:
    torch.manual_seed(0)
    task_name, opts = OPTIONS[option]
    task, extra = _TASKS.get(task_name, (TASK, {}))
    bert = create_bert_core(config=tiny_bert_config(arch))
    opts = dict(opts)
    if bert.decoder_only and "pooling_type" not in opts:
        opts["pooling_type"] = "last"
    head = create_nlp_head(task, bert.hidden_size, extra=dict(extra), **opts)
    return BertWithHead(bert, head, tokenizer=tokenizer)


@pytest.mark.parametrize("arch", ["bert", "modernbert", "qwen3"])
@pytest.mark.parametrize("option", list(OPTIONS))
def test_create_nlp_head_option_sweep(option: str, arch: str, tokenizer: Any, tmp_path: Path) -> None:
    model = _build_model(option, arch, tokenizer)
    tokenizer.padding_side = "left" if model.bert.decoder_only else "right"
    inputs = dict(
        tokenizer(["first text", "a second, longer text here", "third"], padding=True, return_tensors="pt")
    )
    tokenizer.padding_side = "right"
    B, T = inputs["input_ids"].shape
    targets = model.head.example_targets(B, T, torch.Generator().manual_seed(0))
    model.train()
    out = model(**inputs, labels=targets)
    for key, value in out.items():
        if key != "loss":
            assert value.shape[0] == B, f"{key} has shape {tuple(value.shape)}"
    assert CONTRACTS.get(model.head.registry_name, set()) <= set(out)
    assert torch.isfinite(out["loss"]) and out["loss"].dim() == 0
    out["loss"].backward()
    blocks = model.head.token_blocks
    if blocks is not None:
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in blocks.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.bert.layers[-1].parameters())
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    model.eval()
    with torch.no_grad():
        before = model(**inputs)
    model.save_pretrained(tmp_path / "m")
    loaded = BertWithHead.from_pretrained(tmp_path / "m")
    assert loaded.head.config.extra == model.head.config.extra
    with torch.no_grad():
        after = loaded(**inputs)
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
