"""BertWithHead API, factories, registry behaviour and model-folder bad-input cases."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import tiny_bert_config

from bertkit import (
    BaseHead,
    BertWithHead,
    ConfigError,
    HeadConfig,
    HeadType,
    ModelFolderError,
    RegistryError,
    create_bert_core,
    create_bert_for_competition,
    create_bert_for_task,
    create_bert_with_head,
    create_model,
    get_head_class,
    heads_for_competition,
    list_heads,
    register_head,
)
from bertkit.heads import HEADS


@pytest.fixture()
def tiny_model(tokenizer) -> BertWithHead:
    torch.manual_seed(0)
    return create_bert_with_head(
        head_type=HeadType.MULTICLASS_CLASSIFICATION,
        num_labels=3,
        label_names=["a", "b", "c"],
        bert_config=tiny_bert_config("bert"),
        tokenizer=tokenizer,
    )


def test_readme_snippet_with_minilm(batch: dict) -> None:
    model = create_bert_with_head(
        head_type=HeadType.BINARY_CLASSIFICATION, num_labels=2, bert_name="minilm", freeze_bert_layers=2
    )
    labels = torch.tensor([0, 1, 1])
    out = model(batch["input_ids"], batch["attention_mask"], labels=labels)
    assert {"loss", "logits", "predictions", "probabilities"} <= set(out)
    assert not any(p.requires_grad for p in model.get_bert().layers[1].parameters())
    assert all(p.requires_grad for p in model.get_bert().layers[2].parameters())
    model.freeze_bert()
    assert not any(p.requires_grad for p in model.get_bert().parameters())
    model.freeze_bert(num_layers=4)
    model.unfreeze_bert()
    assert all(p.requires_grad for p in model.parameters())
    assert isinstance(model.get_head(), BaseHead)


def test_from_scratch_core_sizes() -> None:
    bert = create_bert_core(hidden_size=64, num_hidden_layers=2, num_attention_heads=4)
    assert bert.hidden_size == 64 and bert.num_layers == 2


def test_model_folder_layout(tiny_model: BertWithHead, tmp_path: Path) -> None:
    folder = tiny_model.save_pretrained(tmp_path / "m")
    for rel in (
        "bert/config.json",
        "bert/model.safetensors",
        "bert/bert_core_config.json",
        "head/config.json",
        "head/model.safetensors",
        "model_metadata.json",
        "tokenizer_config.json",
    ):
        assert (folder / rel).is_file(), rel
    meta = json.loads((folder / "model_metadata.json").read_text())
    assert meta["head_type"] == "multiclass_classification" and meta["label_names"] == ["a", "b", "c"]
    assert meta["format_version"] == 1 and "bertkit_version" in meta
    assert not list(folder.rglob("*.bin")) and not list(folder.rglob("*.pkl"))
    # re-saving over an existing folder works and leaves no temporary folders behind
    tiny_model.save_pretrained(folder)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]


def test_bad_model_folders(tiny_model: BertWithHead, tmp_path: Path) -> None:
    with pytest.raises(ModelFolderError, match="does not exist"):
        BertWithHead.from_pretrained(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFolderError, match="not a bertkit model folder"):
        BertWithHead.from_pretrained(tmp_path / "empty")
    folder = tiny_model.save_pretrained(tmp_path / "m")
    weights = folder / "head" / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFolderError, match="truncated or corrupt"):
        BertWithHead.from_pretrained(folder)
    weights.unlink()
    with pytest.raises(ModelFolderError, match="is missing"):
        BertWithHead.from_pretrained(folder)
    folder = tiny_model.save_pretrained(tmp_path / "m2")
    cfg = json.loads((folder / "head" / "config.json").read_text())
    cfg["head_type"] = "no_such_head"
    (folder / "head" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ModelFolderError, match="not registered.*valid names"):
        BertWithHead.from_pretrained(folder)
    (folder / "model_metadata.json").write_text("{not json")
    with pytest.raises(ModelFolderError, match="not valid JSON"):
        BertWithHead.from_pretrained(folder)


def test_size_mismatch_fails_at_construction(tokenizer) -> None:
    with pytest.raises(ConfigError, match="input_size=768 does not match.*hidden_size=32"):
        create_bert_with_head(
            head_config={"head_type": "binary_classification", "input_size": 768},
            bert_config=tiny_bert_config("bert"),
            tokenizer=tokenizer,
        )


def test_registry_is_loud() -> None:
    assert {"binary_classification", "regression", "ordinal_regression"} <= set(list_heads())
    with pytest.raises(RegistryError, match="unknown head 'nope'; valid names: .*binary_classification"):
        get_head_class("nope")
    with pytest.raises(RegistryError, match="already registered"):

        @register_head("binary_classification")
        class Dup(BaseHead):
            pass

    assert heads_for_competition("multiclass_classification")[0] == "multiclass_classification"


def test_custom_head_in_twenty_lines(tokenizer, tmp_path: Path) -> None:
    @register_head("test_mse_head", competition_types=["custom"], description="test head")
    class MSEHead(BaseHead):
        task = "regression"

        def _build_output_layer(self) -> None:
            self.output = torch.nn.Linear(self.projection_output_size, 1)

        def _build_loss_function(self) -> None:
            self.loss_fn = torch.nn.functional.mse_loss

        def forward(self, hidden_states, attention_mask=None, **kwargs):
            pooled = self._apply_pooling(hidden_states, attention_mask)
            return {"predictions": self.output(self.projection(pooled)).squeeze(-1)}

        def compute_loss(self, outputs, targets):
            return self.loss_fn(outputs["predictions"], targets.float())

    try:
        model = create_bert_with_head(
            head_type="test_mse_head", num_labels=1, bert_config=tiny_bert_config("bert"), tokenizer=tokenizer
        )
        enc = tokenizer(["x y", "z"], padding=True, return_tensors="pt")
        out = model(**enc, labels=torch.tensor([0.5, 1.0]))
        assert torch.isfinite(out["loss"])
        model.eval()
        model.save_pretrained(tmp_path / "c")
        loaded = BertWithHead.from_pretrained(tmp_path / "c")
        with torch.no_grad():
            assert torch.equal(model(**enc)["predictions"], loaded(**enc)["predictions"])
    finally:
        HEADS.unregister("test_mse_head")


def test_factories(tokenizer) -> None:
    cfg = tiny_bert_config("bert")
    m = create_model(
        "bert_with_head", head_type="multiclass_classification", num_labels=5, config=cfg, tokenizer=tokenizer
    )
    assert m.head.config.num_labels == 5
    core = create_model("bert_core", config=cfg)
    assert core.hidden_size == 32
    with pytest.raises(ConfigError, match="bert_core, bert_with_head"):
        create_model("bertish")
    r = create_bert_for_task(
        "regression", num_labels=1, freeze_bert=True, bert_config=cfg, tokenizer=tokenizer
    )
    assert r.head.registry_name == "regression" and not any(p.requires_grad for p in r.bert.parameters())
    assert r.head.config.pooling_type == "mean"
    o = create_bert_for_task(HeadType.ORDINAL_REGRESSION, num_labels=5, bert_config=cfg, tokenizer=tokenizer)
    assert o.head.registry_name == "ordinal_regression"
    c = create_bert_for_competition(
        "multilabel_classification", num_labels=6, bert_config=cfg, tokenizer=tokenizer
    )
    assert c.head.registry_name == "multilabel_classification"
    f = create_bert_for_competition("imbalanced_binary", num_labels=2, bert_config=cfg, tokenizer=tokenizer)
    assert f.head.loss_type == "focal"
    with pytest.raises(ConfigError, match="unknown competition type"):
        create_bert_for_competition("cooking", num_labels=2, bert_config=cfg, tokenizer=tokenizer)
    q = create_bert_with_head(num_labels=3, bert_config=tiny_bert_config("qwen3"), tokenizer=tokenizer)
    assert q.head.config.pooling_type == "last"
    with pytest.raises(ConfigError, match="unknown HeadConfig key 'pooling'"):
        HeadConfig.from_dict({"pooling": "cls"})
    with pytest.raises(ConfigError, match="pooling_type='median' is not valid"):
        HeadConfig(pooling_type="median")


def test_head_specific_behaviour(tokenizer) -> None:
    cfg = tiny_bert_config("bert")
    ml = create_bert_with_head(
        head_type="multilabel_classification",
        bert_config=cfg,
        tokenizer=tokenizer,
        head_config=get_head_class("multilabel_classification").example_config(),
    )
    assert ml.head.decode_dimensions([[1, 1, 0, 1], [0, 0, 1, 0]]) == ["INTP", "ESFJ"]
    hier = create_bert_with_head(
        head_type="hierarchical_classification",
        bert_config=cfg,
        tokenizer=tokenizer,
        head_config=get_head_class("hierarchical_classification").example_config(),
    ).eval()
    enc = tokenizer(["one", "two words", "three more words"], padding=True, return_tensors="pt")
    with torch.no_grad():
        out = hier(**enc)
    # the predicted parent is always the predicted leaf's parent, and joint probabilities sum to 1
    assert torch.equal(out["parent_predictions"], hier.head.leaf_parent[out["predictions"]])
    torch.testing.assert_close(out["probabilities"].sum(-1), torch.ones(3))
    ordinal = create_bert_with_head(
        head_type="ordinal_regression", num_labels=5, bert_config=cfg, tokenizer=tokenizer
    )
    th = ordinal.head.thresholds()
    assert torch.all(th[1:] > th[:-1])  # ordered by construction
