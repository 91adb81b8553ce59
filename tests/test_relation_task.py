"""Relation extraction: marked-entity readers, marker tokens, the relation head and its save/load."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_data, tiny_bert_config

from bertkit import BertWithHead, ConfigError, DataError, create_bert_core, create_head, load_tokenizer
from bertkit.heads.relation import RelationExtractionHead, add_entity_markers
from bertkit.tasks import relation as rel

LABELS = ["Other", "Cause-Effect(e1,e2)", "Cause-Effect(e2,e1)"]
CSV = (
    "text,label,id\n"
    '"The <e1>fire</e1> caused the <e2>smoke</e2>.","Cause-Effect(e1,e2)",1\n'
    '"A <e1>child</e1> in a\nmultiline <e2>cradle</e2>.",Other,2\n'
    '"The <e1>smoke</e1> came from the fire.",Other,3\n'
)


def _model(tokenizer, labels: list[str] = LABELS, use_cls: bool = False) -> tuple[BertWithHead, list[int]]:
    """Encoder -> add markers (resizes embeddings) -> relation head built with the marker ids."""
    torch.manual_seed(0)
    bert = create_bert_core(config=tiny_bert_config("bert"))
    ids = add_entity_markers(tokenizer, bert)
    head = create_head(
        {
            "head_type": "relation_extraction",
            "input_size": bert.hidden_size,
            "num_labels": len(labels),
            "label_names": labels,
            "extra": {"marker_token_ids": ids, "use_cls": use_cls, "no_relation_label": "Other"},
        }
    )
    return BertWithHead(bert, head, tokenizer=tokenizer), ids


def test_reader_csv_jsonl_and_missing_markers(tmp_path: Path) -> None:
    path = tmp_path / "rel.csv"
    path.write_text(CSV, encoding="utf-8")
    with pytest.raises(
        DataError, match=r"rel\.csv:5: relation row needs both entity markers .*missing <e2>, </e2>"
    ):
        rel.read_relations(path)
    path.write_text(CSV.rsplit("\n", 2)[0] + "\n", encoding="utf-8")
    rows = rel.read_relations(path)
    assert [(r.e1, r.e2, r.label, r.line) for r in rows] == [
        ("fire", "smoke", "Cause-Effect(e1,e2)", 2),
        ("child", "cradle", "Other", 3),
    ]
    jl = tmp_path / "rel.jsonl"
    jl.write_text(
        json.dumps(
            {
                "text": "Smoke from fire.",
                "e1_start": 0,
                "e1_end": 5,
                "e2_start": 11,
                "e2_end": 15,
                "label": "Cause-Effect(e2,e1)",
            }
        )
        + "\n"
        + json.dumps({"text": "<e2>b</e2> then <e1>a</e1>", "relation": "Other"})
        + "\n"
        + json.dumps({"text": "</e1>x<e1> <e2>y</e2>"})
        + "\n",
        encoding="utf-8",
    )
    with pytest.raises(DataError, match=r"rel\.jsonl:3: </e1> comes before <e1>"):
        rel.read_relations(jl)


def test_direction_helpers() -> None:
    assert rel.split_direction("Cause-Effect(e2,e1)") == ("Cause-Effect", "e2,e1")
    assert rel.split_direction("Other") == ("Other", None)
    assert (
        rel.flip_direction("Cause-Effect(e2,e1)") == "Cause-Effect(e1,e2)"
        and rel.flip_direction("Other") == "Other"
    )
    assert rel.insert_markers("Smoke from fire.", (0, 5), (11, 15)) == "<e1>Smoke</e1> from <e2>fire</e2>."


def test_markers_head_positions_and_round_trip(tmp_path: Path) -> None:
    tokenizer = load_tokenizer("minilm")  # a private copy: markers are added to it
    model, ids = _model(tokenizer, use_cls=True)
    assert add_entity_markers(tokenizer, model.bert) == ids  # idempotent
    assert model.bert.get_input_embeddings().num_embeddings == len(tokenizer) == 30526
    exs = [
        rel.RelationExample(
            "A <e2>cause</e2> and its <e1>effect</e1> here.", "Cause-Effect(e2,e1)", "effect", "cause"
        ),
        rel.RelationExample("The <e1>fire</e1> made <e2>smoke</e2>.", "Cause-Effect(e1,e2)", "fire", "smoke"),
    ]
    rows = rel.tokenize_relations(tokenizer, exs, {n: i for i, n in enumerate(LABELS)}, max_length=32)
    width = max(len(r["input_ids"]) for r in rows)
    batch = {
        k: torch.tensor([r[k] + [0] * (width - len(r[k])) for r in rows])
        for k in ("input_ids", "attention_mask")
    }
    model.eval()
    with torch.no_grad():
        out = model(**batch, labels=torch.tensor([r["labels"] for r in rows]))
    toks = [tokenizer.convert_ids_to_tokens(r["input_ids"]) for r in rows]
    for b, (p1, p2) in enumerate(out["marker_positions"].tolist()):
        assert toks[b][p1] == "<e1>" and toks[b][p2] == "<e2>"
    assert out["logits"].shape == (2, 3) and torch.isfinite(out["loss"])
    model.save_pretrained(tmp_path / "m")
    cfg = json.loads((tmp_path / "m" / "bert" / "config.json").read_text())
    assert cfg["vocab_size"] == 30526
    loaded = BertWithHead.from_pretrained(tmp_path / "m")
    assert loaded.tokenizer.convert_tokens_to_ids(["<e1>", "<e2>"]) == ids
    assert loaded.head.config.extra["marker_token_ids"] == ids and loaded.head.use_cls
    with torch.no_grad():
        again = loaded(**batch)
    assert torch.equal(again["logits"], out["logits"])


def test_tokenize_crops_long_sentences_and_checks_markers() -> None:
    tokenizer = load_tokenizer("minilm")
    long = "word " * 50 + "<e1>fire</e1> made <e2>smoke</e2> " + "word " * 50
    ex = rel.RelationExample(long, None, "fire", "smoke", source="f.csv", line=7)
    with pytest.raises(ConfigError, match="add_entity_markers"):
        rel.tokenize_relations(tokenizer, [ex], max_length=16)
    tokenizer.add_tokens(list(rel.ENTITY_MARKERS), special_tokens=True)
    (row,) = rel.tokenize_relations(tokenizer, [ex], max_length=16)
    toks = tokenizer.convert_ids_to_tokens(row["input_ids"])
    assert len(toks) == 16 and "<e1>" in toks and "</e2>" in toks
    far = rel.RelationExample(
        "<e1>a</e1> " + "word " * 30 + "<e2>b</e2>", None, "a", "b", source="f.csv", line=9
    )
    with pytest.raises(DataError, match=r"f\.csv:9: the two entities span"):
        rel.tokenize_relations(tokenizer, [far], max_length=16)


def test_metrics_exclude_other() -> None:
    from bertkit import HeadConfig

    head = RelationExtractionHead(
        HeadConfig.from_dict(
            {**RelationExtractionHead.example_config(), "head_type": "relation_extraction", "input_size": 8}
        )
    )
    y = np.array([0, 1, 2, 1, 0])
    proba = np.eye(3)[[0, 1, 1, 1, 2]]
    out = head.compute_metrics({"probabilities": proba, "predictions": proba.argmax(1)}, y)
    # class 1: P=2/3 R=1 F1=0.8; class 2: F1=0 ("Other" left out) -> 0.4
    assert out["macro_f1_excluding_other"] == pytest.approx(0.4)
    with pytest.raises(ConfigError, match="marker_token_ids"):
        RelationExtractionHead(HeadConfig.from_dict({"head_type": "relation_extraction", "num_labels": 2}))


def test_semeval_smoke() -> None:
    rows = rel.read_relations(shared_data("semeval2010_task8") / "train.csv")[:20]
    tokenizer = load_tokenizer("minilm")
    labels = sorted({r.label for r in rows} | {"Other"})
    model, ids = _model(tokenizer, labels)
    feats = rel.tokenize_relations(tokenizer, rows, {n: i for i, n in enumerate(labels)}, max_length=64)
    width = max(len(f["input_ids"]) for f in feats)
    batch = {
        k: torch.tensor([f[k] + [0] * (width - len(f[k])) for f in feats])
        for k in ("input_ids", "attention_mask")
    }
    out = model(**batch, labels=torch.tensor([f["labels"] for f in feats]))
    assert torch.isfinite(out["loss"])
    assert (batch["input_ids"].gather(1, out["marker_positions"]) == torch.tensor(ids)).all()
