"""The first-token shortcut of the last encoder layer gives the full layer's [CLS] values, forward and backward."""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import TINY_BACKBONES, tiny_bert_config

from bertkit import HeadConfig, create_bert_core, create_head
from bertkit.model import BertWithHead

SHORTCUT_ARCHS = ("bert", "roberta", "electra")


def _model(
    arch: str, head: str = "multiclass_classification", pooling: str = "cls", **extra: object
) -> BertWithHead:
    torch.manual_seed(0)
    cfg = {**tiny_bert_config(arch), "hidden_dropout_prob": 0.0, "attention_probs_dropout_prob": 0.0}
    core = create_bert_core(config=cfg)
    head_cfg = HeadConfig(
        head_type=head, input_size=32, num_labels=3, pooling_type=pooling, dropout_prob=0.0, extra=dict(extra)
    )
    return BertWithHead(core, create_head(head_cfg))


@pytest.mark.parametrize("arch", sorted(TINY_BACKBONES))
def test_shortcut_only_where_the_layer_layout_allows(arch: str) -> None:
    core = create_bert_core(config=tiny_bert_config(arch))
    assert core.supports_first_token_only == (arch in SHORTCUT_ARCHS)


@pytest.mark.parametrize("arch", SHORTCUT_ARCHS)
def test_encoder_first_token_equals_full_layer(arch: str, batch: dict) -> None:
    core = create_bert_core(config=tiny_bert_config(arch)).eval()
    args = (batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
    with torch.no_grad():
        full = core(*args)
        short = core(*args, first_token_only=True)
    B = batch["input_ids"].shape[0]
    assert short.last_hidden_state.shape == (B, 1, 32) and short.attention_mask.shape == (B, 1)
    torch.testing.assert_close(
        short.last_hidden_state[:, 0], full.last_hidden_state[:, 0], rtol=1e-5, atol=1e-5
    )
    torch.testing.assert_close(short.pooler_output, full.pooler_output, rtol=1e-5, atol=1e-5)
    # the switch is per call: the next plain call is the full layer again
    assert core(*args).last_hidden_state.shape[1] == batch["input_ids"].shape[1]


@pytest.mark.parametrize("arch", SHORTCUT_ARCHS)
def test_model_outputs_and_gradients_match_the_full_path(arch: str, batch: dict) -> None:
    model = _model(arch)
    assert model.head.reads_first_token_only
    labels = torch.tensor([0, 2, 1])
    inputs = {k: v for k, v in batch.items() if k != "token_type_ids"}
    widths: list[int] = []
    model.bert.layers[-1].register_forward_hook(
        lambda _m, _i, out: widths.append((out[0] if isinstance(out, tuple) else out).shape[1])
    )
    grads, logits = [], []
    for shortcut in (False, True):
        model.first_token_shortcut = shortcut
        model.zero_grad()
        out = model(**inputs, labels=labels)
        out["loss"].backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
        logits.append(out["logits"].detach())
    torch.testing.assert_close(logits[1], logits[0], rtol=1e-5, atol=1e-5)
    assert widths == [batch["input_ids"].shape[1], 1]  # full layer, then the first token alone
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-6, msg=name)


def test_heads_reading_token_states_keep_the_full_layer() -> None:
    assert not _model("bert", pooling="mean").head.reads_first_token_only
    assert not _model("bert", pooling="attention").head.reads_first_token_only
    assert not _model("bert", task_attention="multi_head").head.reads_first_token_only
    assert _model("bert", head="multilabel_classification", pooling="pooler").head.reads_first_token_only


def test_deepcopy_and_state_dict_are_unchanged(batch: dict) -> None:
    model = _model("bert").eval()
    twin = copy.deepcopy(model)
    with torch.no_grad():  # the copy's layer computes with its own weights, not the original's
        for p in twin.parameters():
            p.add_(0.01)
        assert not torch.allclose(model(batch["input_ids"])["logits"], twin(batch["input_ids"])["logits"])
    plain = create_bert_core(config=tiny_bert_config("bert"))
    assert set(model.bert.state_dict()) == set(plain.state_dict())


def test_gradient_checkpointing_disables_the_shortcut(batch: dict) -> None:
    core = create_bert_core(config={**tiny_bert_config("bert"), "gradient_checkpointing": True})
    assert not core.supports_first_token_only
    late = create_bert_core(config=tiny_bert_config("bert")).train()
    late.model.gradient_checkpointing_enable()  # switched on after construction: the full layer runs
    out = late(batch["input_ids"], batch["attention_mask"], first_token_only=True)
    assert out.last_hidden_state.shape[1] == batch["input_ids"].shape[1]
