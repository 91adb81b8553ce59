"""Extractive QA: SQuAD readers, doc-stride features, n-best post-processing, null threshold, QA head."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_data, tiny_bert_config

from bertkit import BertWithHead, DataError, create_bert_with_head
from bertkit.heads.qa import QuestionAnsweringHead, best_spans
from bertkit.metrics import squad_metrics
from bertkit.tasks import qa

CONTEXT = (
    "The Panthers defense gave up just 308 points, ranking sixth in the league. Kawann Short led the team."
)


def _squad(tmp_path: Path, version: str = "2.0") -> Path:
    data = {
        "version": version,
        "data": [
            {
                "title": "T",
                "paragraphs": [
                    {
                        "context": CONTEXT,
                        "qas": [
                            {
                                "id": "q1",
                                "question": "How many points?",
                                "answers": [{"text": "308", "answer_start": 34}],
                            },
                            {
                                "id": "q2",
                                "question": "Who led the team?",
                                "answers": [{"text": "Kawann Short", "answer_start": 75}],
                            },
                            {"id": "q3", "question": "Who won?", "answers": [], "is_impossible": True},
                        ],
                    }
                ],
            }
        ],
    }
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(data, indent=1), encoding="utf-8")
    return path


def _hand_logits(features: list[dict], examples: list[qa.QAExample], null_for: set[str]) -> tuple:
    """Logits peaking at each feature's target (or at [CLS] for ``null_for`` questions)."""
    t = max(len(f["input_ids"]) for f in features)
    start, end = np.zeros((len(features), t)), np.zeros((len(features), t))
    for i, f in enumerate(features):
        ex = examples[f["example_index"]]
        start[i, f["start_positions"]] += 5.0
        end[i, f["end_positions"]] += 5.0
        if ex.id in null_for:
            start[i, f["cls_index"]] += 20.0
            end[i, f["cls_index"]] += 20.0
    return start, end


def test_readers_and_answer_validation(tmp_path: Path) -> None:
    exs = qa.read_qa(_squad(tmp_path))
    assert [e.id for e in exs] == ["q1", "q2", "q3"] and exs[2].is_impossible and exs[2].answers == []
    assert exs[1].line > 1  # the line of the question id in the file
    rows = [
        {
            "id": "a",
            "question": "How many points?",
            "context": CONTEXT,
            "answers": {"text": ["308"], "answer_start": [34]},
        }
    ]
    jl = tmp_path / "q.jsonl"
    jl.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    assert qa.read_qa(jl)[0].answer_texts == ["308"]
    rows.append({**rows[0], "id": "b", "answers": {"text": ["308"], "answer_start": [30]}})
    jl.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    with pytest.raises(
        DataError,
        match=r"q\.jsonl:2: question 'b': answer '308' does not match the context at "
        r"answer_start=30",
    ):
        qa.read_squad_jsonl(jl)
    bad = json.loads(_squad(tmp_path).read_text())
    bad["data"][0]["paragraphs"][0]["qas"][1]["answers"][0]["answer_start"] = 70
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(bad, indent=1), encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.json:\d+: question 'q2'.*answer_start=70"):
        qa.read_squad_json(path)


def test_features_with_doc_stride_recover_answers(tokenizer, tmp_path: Path) -> None:
    exs = qa.read_qa(_squad(tmp_path))
    feats = qa.prepare_qa_features(tokenizer, exs, max_length=24, doc_stride=8)
    assert len(feats) > len(exs)  # long contexts overflow into several windows
    assert all(len(f["input_ids"]) == 24 for f in feats)
    for f in feats:
        ex = exs[f["example_index"]]
        if f["start_positions"] != f["cls_index"]:
            s, e = f["offset_mapping"][f["start_positions"]][0], f["offset_mapping"][f["end_positions"]][1]
            assert ex.context[s:e] == ex.answers[0]["text"]
        assert f["offset_mapping"][0] is None  # [CLS] and question tokens carry no context offsets
    start, end = _hand_logits(feats, exs, null_for={"q3"})
    preds, nbest, diffs = qa.postprocess_qa_predictions(exs, feats, start, end, n_best=5, null_threshold=0.0)
    assert preds == {"q1": "308", "q2": "Kawann Short", "q3": ""}
    assert squad_metrics(preds, {e.id: e.answer_texts for e in exs}) == {"exact_match": 100.0, "f1": 100.0}
    assert len(nbest["q1"]) <= 5 and abs(sum(c["probability"] for c in nbest["q1"]) - 1) < 1e-6
    assert diffs["q3"] > 0 > diffs["q1"]
    v1, _, _ = qa.postprocess_qa_predictions(exs, feats, start, end)  # v1.1: always answer
    assert v1["q3"] != ""


def test_postprocessing_picks_span_and_respects_max_answer_length(tokenizer) -> None:
    ex = qa.QAExample("x", "Who led?", CONTEXT, [{"text": "Kawann Short", "answer_start": 75}])
    (feat,) = qa.prepare_qa_features(tokenizer, [ex], max_length=64, doc_stride=16)
    t = len(feat["input_ids"])
    start, end = np.zeros((1, t)), np.zeros((1, t))
    s, e = feat["start_positions"], feat["end_positions"]
    start[0, s], end[0, e] = 4.0, 4.0
    end[0, s + 5] = 6.0  # a longer span scores higher but exceeds max_answer_length=4 (tokens)
    start[0, 1] = end[0, 1] = 50.0  # question tokens are never answers
    preds, nbest, _ = qa.postprocess_qa_predictions([ex], [feat], start, end, max_answer_length=4)
    assert preds["x"] == "Kawann Short"
    assert nbest["x"][0]["start"] == 75 and nbest["x"][0]["score"] == 8.0
    bs, be = best_spans(start[:, 2:], end[:, 2:], 4)
    assert (int(bs[0]), int(be[0])) == (s - 2, e - 2)


def test_null_threshold_tuning(tmp_path: Path) -> None:
    exs = [
        qa.QAExample(str(i), "q", "ctx answer", [{"text": "answer", "answer_start": 4}] if i < 3 else [])
        for i in range(5)
    ]
    preds = {str(i): "answer" for i in range(5)}
    diffs = {"0": -3.0, "1": -2.0, "2": 0.5, "3": 1.0, "4": 2.0}
    thr, scores = qa.tune_null_threshold(exs, preds, diffs)
    assert thr == 0.5 and scores["f1"] == 100.0 and scores["exact_match"] == 100.0
    assert qa.tune_null_threshold(exs, preds, {**diffs, "2": 5.0})[1]["f1"] == 80.0
    qa.write_qa_predictions(tmp_path / "p.json", preds)
    qa.write_nbest(tmp_path / "n.json", {"0": [{"text": "answer", "probability": 1.0}]})
    assert json.loads((tmp_path / "p.json").read_text()) == preds


def test_head_loss_targets_and_threshold_round_trip(tokenizer, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_bert_with_head(
        head_type="question_answering",
        bert_config=tiny_bert_config("bert"),
        head_config=QuestionAnsweringHead.example_config(),
        tokenizer=tokenizer,
    ).eval()
    enc = tokenizer(
        ["who is it", "a question"], ["some context here", "other context"], padding=True, return_tensors="pt"
    )
    as_dict = {"start_positions": torch.tensor([5, 0]), "end_positions": torch.tensor([6, 0])}
    out = model(**enc, labels=as_dict)
    out2 = model(**enc, labels=torch.tensor([[5, 6], [0, 0]]))
    assert torch.allclose(out["loss"], out2["loss"])
    pad = enc["attention_mask"] == 0
    assert (out["start_logits"][pad] <= -1e4).all()
    model.head.set_null_threshold(1.25)
    model.save_pretrained(tmp_path / "m")
    assert BertWithHead.from_pretrained(tmp_path / "m").head.null_threshold.item() == 1.25


def test_squad_smoke(tokenizer) -> None:
    folder = shared_data("squad_xquad_en")
    exs = qa.read_squad_jsonl(folder / "train.jsonl")[:10]
    assert [e.id for e in qa.read_squad_json(folder / "train.json")[:10]] == [e.id for e in exs]
    feats = qa.prepare_qa_features(tokenizer, exs, max_length=128, doc_stride=32)
    torch.manual_seed(0)
    model = create_bert_with_head(
        head_type="question_answering",
        bert_config=tiny_bert_config("bert"),
        head_config={"num_labels": 2},
        tokenizer=tokenizer,
    )
    batch = {
        k: torch.tensor([f[k] for f in feats]) for k in ("input_ids", "attention_mask", "token_type_ids")
    }
    targets = {k: torch.tensor([f[k] for f in feats]) for k in ("start_positions", "end_positions")}
    with torch.no_grad():
        out = model(**batch, labels=targets)
    assert torch.isfinite(out["loss"])
    preds, nbest, _ = qa.postprocess_qa_predictions(
        exs, feats, out["start_logits"].numpy(), out["end_logits"].numpy()
    )
    assert set(preds) == {e.id for e in exs} and all(nbest[e.id] for e in exs)
    gold_start, gold_end = _hand_logits(feats, exs, set())
    gold_preds, _, _ = qa.postprocess_qa_predictions(exs, feats, gold_start, gold_end)
    assert squad_metrics(gold_preds, {e.id: e.answer_texts for e in exs})["exact_match"] == 100.0
