"""NER data layer (readers, writers, schemes, alignment, windows) and the token / span heads."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import shared_data, tiny_bert_config

from bertkit import DataError, HeadConfig, create_bert_with_head
from bertkit.heads.span import SpanClassificationHead, TargetDict
from bertkit.tasks import ner
from bertkit.tasks.alignment import IGNORE_INDEX
from bertkit.tasks.spans import merge_span_predictions, prepare_span_features
from bertkit.tasks.tags import label_list, normalize_tags, subtoken_tags, word_tag

CONLL = (
    "-DOCSTART- -X- -X- O\n\n"
    "EU NNP B-NP B-ORG\nrejects VBZ B-VP O\nGerman JJ B-NP B-MISC\ncall NN I-NP O\n\n"
    "Peter NNP B-NP B-PER\nBlackburn NNP I-NP I-PER\n\n"
    "-DOCSTART- -X- -X- O\n\n"
    "BRUSSELS NNP B-NP B-LOC\n1996-08-22 CD I-NP O\n\n"
)


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------------------- readers/writers
def test_conll_round_trip_is_identical(tmp_path: Path) -> None:
    src = _write(tmp_path, "in.conll", CONLL)
    docs = ner.read_conll(src)
    assert [d.tokens for d in docs][1] == ["Peter", "Blackburn"]
    assert docs[0].docstart and docs[2].docstart and docs[1].docstart is None
    assert docs[1].entities[0].label == "PER" and docs[1].text[slice(*docs[1].offsets[1])] == "Blackburn"
    ner.write_conll(tmp_path / "out.conll", docs)
    assert (tmp_path / "out.conll").read_text() == CONLL
    # predictions replace the tag column; append_column keeps gold and adds the prediction
    preds = [["O"] * len(d.tokens) for d in docs]
    ner.write_ner(tmp_path / "pred.conll", docs, preds)
    assert "EU NNP B-NP O\n" in (tmp_path / "pred.conll").read_text()
    ner.write_conll(tmp_path / "both.conll", docs, preds, append_column=True)
    assert "EU NNP B-NP B-ORG O\n" in (tmp_path / "both.conll").read_text()


def test_conll_bad_inputs_name_file_and_line(tmp_path: Path) -> None:
    bad_cols = _write(tmp_path, "cols.conll", "EU B-ORG\nrejects\n")
    with pytest.raises(DataError, match=r"cols\.conll:2: expected 2 columns"):
        ner.read_conll(bad_cols)
    bad_tag = _write(tmp_path, "tag.conll", "EU B-ORG\n\nPeter X-PER\n")
    with pytest.raises(DataError, match=r"tag\.conll:3: tag 'X-PER' is not a valid BIO tag"):
        ner.read_conll(bad_tag)
    with pytest.raises(DataError, match="not a valid BIO tag"):
        ner.read_conll(_write(tmp_path, "s.conll", "EU S-ORG\n"))
    assert ner.read_conll(_write(tmp_path, "s2.conll", "EU S-ORG\n"), scheme="BIOES")[0].tags == ["S-ORG"]


def test_jsonl_tokens_and_spans(tmp_path: Path) -> None:
    recs = [
        {"id": "a", "tokens": ["Peter", "Blackburn", "spoke"], "tags": ["B-PER", "I-PER", "O"]},
        {
            "id": "b",
            "text": "Mr. Smith went to New York.",
            "entities": [{"start": 4, "end": 9, "label": "PER"}, [18, 26, "LOC"]],
        },
    ]
    src = _write(tmp_path, "in.jsonl", "\n".join(json.dumps(r) for r in recs) + "\n")
    docs = ner.read_ner(src)
    assert docs[0].fmt == "jsonl_tokens" and docs[1].fmt == "jsonl_spans"
    assert docs[1].tokens == ["Mr", ".", "Smith", "went", "to", "New", "York", "."]
    assert docs[1].tags == ["O", "O", "B-PER", "O", "O", "B-LOC", "I-LOC", "O"]
    ner.write_ner(tmp_path / "same.jsonl", docs)
    back = [json.loads(x) for x in (tmp_path / "same.jsonl").read_text().splitlines()]
    assert back[0] == recs[0]
    assert back[1]["entities"][1] == {"start": 18, "end": 26, "label": "LOC", "text": "New York"}
    preds = [["B-PER", "I-PER", "O"], ["O", "O", "B-PER", "O", "O", "B-LOC", "O", "O"]]
    ner.write_ner(tmp_path / "pred.jsonl", docs, preds)
    out = [json.loads(x) for x in (tmp_path / "pred.jsonl").read_text().splitlines()]
    assert out[1]["entities"] == [
        {"start": 4, "end": 9, "label": "PER", "text": "Smith"},
        {"start": 18, "end": 21, "label": "LOC", "text": "New"},
    ]
    assert out[0]["id"] == "a" and out[0]["tags"] == preds[0]


def test_jsonl_bad_inputs(tmp_path: Path) -> None:
    cases = {
        '{"tokens": ["a", "b"], "tags": ["O"]}': "2 tokens but 1 tags",
        '{"text": "abc", "entities": [{"start": 0, "end": 9, "label": "X"}]}': "outside the text",
        '{"text": "abc", "entities": [{"start": 0, "end": 2, "label": "X", "text": "zz"}]}': "does not match",
        '{"text": "New York", "entities": [[0, 8, "LOC"], [4, 8, "LOC"]]}': "overlap",
        '{"tokens": ["a"], "tags": ["B_X"]}': "not a valid BIO tag",
        "{not json": "invalid JSON",
    }
    for i, (line, message) in enumerate(cases.items()):
        path = _write(tmp_path, f"bad{i}.jsonl", '{"tokens": ["ok"], "tags": ["O"]}\n' + line + "\n")
        with pytest.raises(DataError, match=rf"bad{i}\.jsonl:2: .*{message}"):
            ner.read_ner_jsonl(path)


# ----------------------------------------------------------------------------------------------- schemes
def test_bio_bioes_conversion_and_validation() -> None:
    bio = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "I-LOC"]
    bioes = ["B-PER", "E-PER", "O", "S-LOC", "B-LOC", "I-LOC", "E-LOC"]
    assert ner.bio_to_bioes(bio) == bioes and ner.bioes_to_bio(bioes) == bio
    assert ner.convert_tags(bio, "BIOES") == bioes
    assert normalize_tags(["O", "I-PER", "I-PER", "I-LOC"]) == ["O", "B-PER", "I-PER", "B-LOC"]  # IOB1 repair
    ner.validate_tags(bio, "BIO", check_transitions=True)
    ner.validate_tags(bioes, "BIOES", check_transitions=True)
    with pytest.raises(DataError, match="f.conll:2: tag 'I-PER' cannot follow 'O'"):
        ner.validate_tags(["O", "I-PER"], "BIO", ["f.conll:1", "f.conll:2"], check_transitions=True)
    with pytest.raises(DataError, match="BIOES entities end with E-"):
        ner.validate_tags(["B-PER", "O"], "BIOES", "x", check_transitions=True)
    assert label_list([["B-PER", "O"], ["I-LOC"]]) == ["O", "B-LOC", "I-LOC", "B-PER", "I-PER"]
    assert subtoken_tags("S-X", 3, "BIOES") == ["B-X", "I-X", "E-X"]
    assert word_tag(["B-X", "I-X", "E-X"], "BIOES") == "S-X" and word_tag(["B-X", "I-X"], "BIO") == "B-X"


# --------------------------------------------------------------------------------------------- alignment
def test_align_labels_first_and_all_subtokens(tokenizer) -> None:
    words = [["Supercalifragilistic", "Blackburn", "visits", "EU"]]
    tags = [["O", "B-PER", "O", "B-ORG"]]
    labels = label_list(tags)
    l2i = {t: i for i, t in enumerate(labels)}
    (win,) = ner.align_labels(tokenizer, words, tags, l2i, max_length=64, stride=8)
    toks = tokenizer.convert_ids_to_tokens(win["input_ids"])
    assert toks[0] == "[CLS]" and toks[-1] == "[SEP]"
    got = [(t, labels[lab]) for t, lab in zip(toks, win["labels"]) if lab != IGNORE_INDEX]
    assert got == [("super", "O"), ("blackburn", "B-PER"), ("visits", "O"), ("eu", "B-ORG")]
    assert sum(win["word_mask"]) == 4 and win["word_ids"][0] is None and win["word_ids"][2] == 0
    (win_all,) = ner.align_labels(
        tokenizer, [["Blackburnite"]], [["B-PER"]], l2i, 64, 8, label_all_subtokens=True
    )
    sub = [labels[x] for x in win_all["labels"] if x != IGNORE_INDEX]
    assert sub[0] == "B-PER" and set(sub[1:]) == {"I-PER"} and len(sub) > 1
    merged = ner.merge_window_predictions(
        [win_all], [win_all["labels"]], [1], labels, label_all_subtokens=True
    )
    assert merged == [["B-PER"]]
    padded = ner.align_labels(tokenizer, words, None, None, max_length=32, stride=4, padding=True)[0]
    assert (
        len(padded["input_ids"]) == 32
        and padded["labels"][-1] == IGNORE_INDEX
        and padded["attention_mask"][-1] == 0
    )


@pytest.mark.parametrize("scheme", ["BIO", "BIOES"])
def test_sliding_windows_reconstruct_long_document(tokenizer, scheme: str) -> None:
    rng = np.random.default_rng(0)
    vocab = [
        "alpha",
        "Blackburn",
        "unbelievable",
        "EU",
        "of",
        "the",
        "Rotterdam",
        "x",
        "supercalifragilistic",
    ]
    words = [str(rng.choice(vocab)) for _ in range(300)]
    spans, i = [], 0
    while i < 295:
        n = int(rng.integers(1, 4))
        spans.append((i, i + n, str(rng.choice(["PER", "LOC"]))))
        i += n + int(rng.integers(0, 3))
    gold = ner.spans_to_tags(len(words), spans, scheme)
    labels = label_list([gold], scheme)
    l2i = {t: i for i, t in enumerate(labels)}
    wins = ner.align_labels(tokenizer, [words], [gold], l2i, max_length=32, stride=8, scheme=scheme)
    assert len(wins) > 10 and all(len(w["input_ids"]) <= 32 for w in wins)
    for w in wins:  # every window is a valid tag sequence on its own (cut entities re-begin)
        seq = [labels[x] for x in w["labels"] if x != IGNORE_INDEX]
        ner.validate_tags(seq, scheme, "window", check_transitions=True)
    # padded rows with the gold labels as "predictions" merge back to the document's tags
    preds = [
        np.pad(np.where(np.array(w["labels"]) < 0, 0, w["labels"]), (0, 40 - len(w["labels"]))) for w in wins
    ]
    assert ner.merge_window_predictions(wins, preds, [len(words)], labels, scheme=scheme) == [gold]
    left = [np.pad(np.where(np.array(w["labels"]) < 0, 0, w["labels"]), (7, 0)) for w in wins]
    assert ner.merge_window_predictions(
        wins, left, [len(words)], labels, scheme=scheme, padding_side="left"
    ) == [gold]


# ----------------------------------------------------------------------------------------------- span head
def _span_head(linking: bool = True) -> SpanClassificationHead:
    torch.manual_seed(0)
    cfg = SpanClassificationHead.example_config()
    cfg.update({"head_type": "span_classification", "input_size": 8, "dropout_prob": 0.0})
    cfg["extra"] = {"max_span_len": 4, "use_linking": linking}
    return SpanClassificationHead(HeadConfig.from_dict(cfg))


def test_span_features_nested_and_discontiguous(tokenizer, tmp_path: Path) -> None:
    rec = {
        "text": "Bank of China and its head office staff",
        "entities": [
            {"start": 0, "end": 13, "label": "ORG"},
            {"start": 8, "end": 13, "label": "LOC"},
            {"label": "PER", "fragments": [[22, 33], [34, 39]]},
        ],
    }
    path = _write(tmp_path, "nested.jsonl", json.dumps(rec) + "\n")
    with pytest.raises(DataError, match="span_classification"):
        ner.read_ner_jsonl(path)
    docs = ner.read_ner_jsonl(path, allow_nested=True)
    assert docs[0].tags is None and len(docs[0].entities) == 3
    names = ["O", "PER", "LOC", "ORG"]
    (feat,), dropped = prepare_span_features(tokenizer, docs, names, max_length=32, stride=4, max_span_len=4)
    assert dropped == 0
    gold = {span: names[lab] for span, lab in zip(feat["span_words"], feat["span_labels"]) if lab != 0}
    assert gold == {(0, 2): "ORG", (2, 2): "LOC", (5, 6): "PER", (7, 7): "PER"}  # nested ORG ⊃ LOC
    groups = {span: g for span, g in zip(feat["span_words"], feat["span_groups"]) if g >= 0}
    assert groups[(5, 6)] == groups[(7, 7)] != groups[(0, 2)]


@pytest.fixture()
def one_thread():
    """Tiny tensors: extra intra-op threads only add contention on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_span_head_trains_on_nested_spans_and_links_fragments(one_thread) -> None:
    head = _span_head()
    states = torch.randn(1, 8, 8)
    starts, ends = torch.tensor([[0, 2, 5, 7, 1, 3]]), torch.tensor([[2, 2, 6, 7, 1, 4]])
    labels = torch.tensor([[2, 1, 1, 1, 0, 0]])  # (0,2) LOC contains (2,2) PER; (5,6)+(7,7) one PER entity
    groups = torch.tensor([[0, 1, 2, 2, -1, -1]])
    targets = TargetDict(span_labels=labels, span_groups=groups)
    opt = torch.optim.Adam(head.parameters(), lr=0.02)
    for _ in range(60):
        out = head(states, span_starts=starts, span_ends=ends, span_mask=torch.ones_like(starts))
        loss = head.compute_loss(out, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
    head.eval()
    with torch.no_grad():
        out = head(states, span_starts=starts, span_ends=ends)
    np_out = {k: v.numpy() for k, v in out.items()}
    ents = head.decode_entities(np_out)[0]
    assert {(tuple(e["fragments"]), e["label"]) for e in ents} == {
        (((0, 2),), "LOC"),
        (((2, 2),), "PER"),
        (((5, 6), (7, 7)), "PER"),
    }
    m = head.compute_metrics(np_out, targets.numpy())
    assert m["f1"] == 1.0 and m["entity_f1"] == 1.0
    merged = merge_span_predictions([{"word_ids": list(range(8)), "doc_index": 0}], [ents], 1)
    assert merged[0][0]["fragments"] == [(0, 2)]


def test_span_head_without_kwargs_enumerates_and_masks() -> None:
    head = _span_head(linking=False)
    out = head(torch.randn(2, 5, 8), torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]]))
    assert out["logits"].shape == (2, 5 + 4 + 3 + 2, 3)
    masked = out["span_mask"][1].bool()
    assert not masked[3] and (out["predictions"][1][~masked] == head.null_index).all()


# ------------------------------------------------------------------------------------------ real data
def test_conll2003_smoke(tokenizer) -> None:
    path = shared_data("conll2003") / "validation.conll"
    docs = ner.read_conll(path)[:20]
    labels = label_list([d.tags for d in docs])
    l2i = {t: i for i, t in enumerate(labels)}
    wins = ner.align_labels(
        tokenizer, [d.tokens for d in docs], [d.tags for d in docs], l2i, max_length=24, stride=6
    )
    torch.manual_seed(0)
    model = create_bert_with_head(
        head_type="token_classification",
        bert_config=tiny_bert_config("bert"),
        tokenizer=tokenizer,
        head_config={"num_labels": len(labels), "label_names": labels, "extra": {"use_crf": True}},
    )
    width = max(len(w["input_ids"]) for w in wins)
    batch = {
        k: torch.tensor([w[k] + [0 if k != "labels" else IGNORE_INDEX] * (width - len(w[k])) for w in wins])
        for k in ("input_ids", "attention_mask", "labels", "word_mask")
    }
    out = model(
        batch["input_ids"], batch["attention_mask"], labels=batch["labels"], word_mask=batch["word_mask"]
    )
    assert torch.isfinite(out["loss"])
    np_out = {"predictions": out["predictions"].numpy()}
    assert 0.0 <= model.head.compute_metrics(np_out, batch["labels"].numpy())["f1"] <= 1.0
    merged = ner.merge_window_predictions(wins, np_out["predictions"], [len(d.tokens) for d in docs], labels)
    assert [len(m) for m in merged] == [len(d.tokens) for d in docs]
    for m in merged:
        ner.validate_tags(m, "BIO", "merged", check_transitions=True)  # CRF + repair: always valid
