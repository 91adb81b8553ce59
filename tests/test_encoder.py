"""BertCore / BertOutput over every supported architecture, pooling semantics and MiniLM parity."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_BACKBONES, tiny_bert_config

from bertkit import BertConfig, BertOutput, ConfigError, Pooler, PoolingType, create_bert_core
from bertkit.pooling import last_token_index


@pytest.mark.parametrize("arch", sorted(TINY_BACKBONES))
def test_every_architecture_gives_uniform_output(arch: str, batch: dict) -> None:
    torch.manual_seed(0)
    core = create_bert_core(config=tiny_bert_config(arch))
    out = core(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
    B, T = batch["input_ids"].shape
    assert isinstance(out, BertOutput)
    assert out.last_hidden_state.shape == (B, T, 32)
    for kind in ("cls", "mean", "max", "pooler", "last"):
        pooled = out.get_pooled_output(kind)
        assert pooled.shape == (B, 32) and torch.isfinite(pooled).all()
    assert out.cls_output.shape == out.mean_pooled.shape == out.max_pooled.shape == (B, 32)
    assert core.decoder_only == (arch == "qwen3")
    # token_type_ids only where the architecture uses them
    assert core.uses_token_type_ids == (arch in ("bert", "roberta", "electra"))


def test_hidden_states_optional(batch: dict) -> None:
    core = create_bert_core(config={**tiny_bert_config("bert"), "output_hidden_states": True})
    out = core(batch["input_ids"], batch["attention_mask"])
    assert out.hidden_states is not None and len(out.hidden_states) == 3  # embeddings + 2 layers


def test_pooling_ignores_padding() -> None:
    hidden = torch.tensor([[[1.0], [3.0], [100.0]], [[-5.0], [2.0], [4.0]]])  # [2, 3, 1]
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]])  # row 0 right-padded, row 1 left-padded
    out = BertOutput(last_hidden_state=hidden, attention_mask=mask)
    assert out.mean_pooled.flatten().tolist() == [2.0, 3.0]
    assert out.max_pooled.flatten().tolist() == [3.0, 4.0]  # the padded 100 and -5 never count
    assert out.cls_output.flatten().tolist() == [1.0, 2.0]  # first real token, even with left padding
    assert out.get_pooled_output("last").flatten().tolist() == [3.0, 4.0]
    assert last_token_index(mask).tolist() == [1, 2]
    with pytest.raises(ConfigError, match="choose one of"):
        out.get_pooled_output("median")


@pytest.mark.parametrize("kind", [p.value for p in PoolingType if p.value != "none"])
def test_learned_poolings_mask_padding(kind: str) -> None:
    torch.manual_seed(0)
    pool = Pooler(kind, hidden_size=4, max_positions=16)
    hidden = torch.randn(2, 5, 4)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    a = pool(hidden, mask)
    hidden2 = hidden.clone()
    hidden2[0, 3:] = 1e4  # changing padded positions must not change row 0
    b = pool(hidden2, mask)
    assert torch.allclose(a[0], b[0]) and a.shape == (2, 4)


def test_freeze_layers_per_architecture() -> None:
    for arch in sorted(TINY_BACKBONES):
        core = create_bert_core(config=tiny_bert_config(arch))
        core.freeze(num_layers=1)
        emb = {id(p) for m in core.embedding_modules() for p in m.parameters()}
        assert emb and all(not p.requires_grad for p in core.parameters() if id(p) in emb), arch
        assert all(not p.requires_grad for p in core.layers[0].parameters()), arch
        assert all(p.requires_grad for p in core.layers[1].parameters()), arch
        core.unfreeze()
        assert all(p.requires_grad for p in core.parameters())
        with pytest.raises(ConfigError, match="out of range"):
            core.freeze(num_layers=5)


def test_parameter_depth_orders_layers() -> None:
    core = create_bert_core(config=tiny_bert_config("bert"))
    depth = core.parameter_depth()
    assert depth["model.embeddings.word_embeddings.weight"] == 0
    assert depth["model.encoder.layer.0.attention.self.query.weight"] == 1
    assert depth["model.encoder.layer.1.output.dense.weight"] == 2
    assert depth["model.pooler.dense.weight"] == 3


def test_bad_configs_are_reported() -> None:
    with pytest.raises(ConfigError, match="divisible"):
        BertConfig(hidden_size=30, num_attention_heads=4)
    with pytest.raises(ConfigError, match="unknown BertConfig key 'hiden_size'.*hidden_size"):
        BertConfig.from_dict({"hiden_size": 32})
    with pytest.raises(ConfigError, match="cannot load encoder"):
        create_bert_core("/nonexistent/folder/for/sure")


def test_cnn_hybrid_variant(batch: dict) -> None:
    core = create_bert_core(config={**tiny_bert_config("bert"), "bert_variant": "cnn_hybrid"})
    out = core(batch["input_ids"], batch["attention_mask"])
    assert out.last_hidden_state.shape[-1] == 32
    pad = batch["attention_mask"] == 0
    assert torch.all(out.last_hidden_state[pad] == 0)


def test_minilm_parity_with_automodel(batch: dict) -> None:
    from transformers import AutoModel

    from bertkit.data.minilm import minilm_path

    core = create_bert_core("minilm").eval()
    ref = AutoModel.from_pretrained(str(minilm_path())).eval()
    with torch.no_grad():
        ours = core(batch["input_ids"], batch["attention_mask"], batch["token_type_ids"]).last_hidden_state
        theirs = ref(**batch).last_hidden_state
    assert core.hidden_size == 384 and core.num_layers == 6
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)
