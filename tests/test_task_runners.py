"""CLI end to end for the NER, span, QA and relation runners with a tiny local backbone folder."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch
from conftest import shared_data, tiny_bert_config
from typer.testing import CliRunner

from bertkit.cli import app
from bertkit.runners import runner_for

runner = CliRunner()


def fast(max_length: int = 32, epochs: int = 2) -> list[str]:
    """Small, quick training flags."""
    return ["--epochs", str(epochs), "--batch-size", "8", "--lr", "5e-3", "--max-length", str(max_length),
            "--set", "training.progress=false"]  # fmt: skip


@pytest.fixture(scope="module")
def tiny_backbone(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BERT saved as a Hugging Face folder (config + safetensors + the bundled tokenizer)."""
    from bertkit import create_bert_core, load_tokenizer

    tokenizer = load_tokenizer("minilm")

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny_bert")
    create_bert_core(config=tiny_bert_config("bert")).model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def _invoke(*args: Any) -> Any:
    return runner.invoke(app, [str(a) for a in args])


def _ok(*args: Any) -> Any:
    res = _invoke(*args)
    assert res.exit_code == 0, res.output
    return res


# ------------------------------------------------------------------------------------------ constructed data
PEOPLE = ["John Smith", "Mary Jones", "Ali Khan", "Sara Lee", "Tom"]
CITIES = ["Paris", "London", "Tokyo", "New York"]
ORGS = ["Acme Corp", "Globex", "Initech Labs"]


def _sentences(n: int, seed: int, long_every: int = 7) -> list[tuple[list[str], list[str]]]:
    rng = random.Random(seed)
    out = []
    for i in range(n):
        words: list[str] = []
        tags: list[str] = []
        for _ in range(4 if i % long_every == 0 else 1):  # some documents need several windows
            p, o, c = rng.choice(PEOPLE).split(), rng.choice(ORGS).split(), rng.choice(CITIES).split()
            words += [*p, "joined", *o, "in", *c, "."]
            tags += ["B-PER"] + ["I-PER"] * (len(p) - 1) + ["O"] + ["B-ORG"] + ["I-ORG"] * (len(o) - 1)
            tags += ["O", "B-LOC"] + ["I-LOC"] * (len(c) - 1) + ["O"]
        out.append((words, tags))
    return out


def _write_conll(path: Path, sents: list[tuple[list[str], list[str]]]) -> Path:
    path.write_text("".join("".join(f"{w} {t}\n" for w, t in zip(*s)) + "\n" for s in sents))
    return path


def _write_nested(path: Path, n: int, seed: int) -> Path:
    """Nested (ORG containing LOC) and discontiguous ("Anna and Ben Smith": Anna ... Smith) entities."""
    rng = random.Random(seed)
    firsts, lasts, cities = (
        ["Anna", "Ben", "Carla", "David"],
        ["Smith", "Jones", "Brown"],
        ["Paris", "Rome", "Oslo"],
    )
    lines = []
    for i in range(n):
        f1, f2, last, city = rng.choice(firsts), rng.choice(firsts), rng.choice(lasts), rng.choice(cities)
        if i % 2 == 0:
            text = f"{f1} {last} works at the {city} Museum ."
            c = text.index(city)
            ents: list[dict[str, Any]] = [
                {"start": 0, "end": len(f1) + 1 + len(last), "label": "PER"},
                {"start": c, "end": c + len(city) + 7, "label": "ORG"},
                {"start": c, "end": c + len(city), "label": "LOC"},
            ]
        else:
            text = f"{f1} and {f2} {last} visited {city} ."
            b, s, c = text.index(f2, len(f1)), text.rindex(last), text.index(city)
            ents = [
                {"label": "PER", "fragments": [[0, len(f1)], [s, s + len(last)]]},
                {"start": b, "end": s + len(last), "label": "PER"},
                {"start": c, "end": c + len(city), "label": "LOC"},
            ]
        lines.append(json.dumps({"id": f"d{i}", "text": text, "entities": ents}))
    path.write_text("\n".join(lines) + "\n")
    return path


CONTEXTS = [
    "The Eiffel Tower was completed in 1889 and is located in Paris. It was designed by Gustave Eiffel.",
    "Mount Fuji is the highest mountain in Japan, rising to 3776 metres. It last erupted in 1707.",
    "The river Thames flows through London. Its length is 346 kilometres and it reaches the North Sea.",
]
QUESTIONS = [
    (0, "When was the Eiffel Tower completed?", "1889"),
    (0, "Who designed the tower?", "Gustave Eiffel"),
    (0, "Where is the Eiffel Tower?", "Paris"),
    (1, "How high is Mount Fuji?", "3776 metres"),
    (1, "When did Mount Fuji last erupt?", "1707"),
    (2, "What flows through London?", "river Thames"),
    (2, "How long is the Thames?", "346 kilometres"),
    (2, "Which sea does the Thames reach?", "North Sea"),
]


def _write_qa(tmp: Path, unanswerable: bool = False) -> tuple[Path, Path]:
    rows = []
    for k, (c, q, a) in enumerate(QUESTIONS * 2):
        ctx = CONTEXTS[c]
        ans = {"text": [a], "answer_start": [ctx.index(a)]}
        if unanswerable and k % 5 == 4:
            ans = {"text": [], "answer_start": []}
        rows.append({"id": f"q{k}", "title": f"t{c}", "context": ctx, "question": q, "answers": ans})
    train = tmp / "qa_train.jsonl"
    train.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    paras = [
        {"context": CONTEXTS[c], "qas": [{"id": f"t{i}", "question": q, "answers": [
            {"text": a, "answer_start": CONTEXTS[c].index(a)}]} for i, (cc, q, a) in enumerate(QUESTIONS) if cc == c]}
        for c in range(len(CONTEXTS))
    ]  # fmt: skip
    test = tmp / "qa_test.json"
    test.write_text(json.dumps({"version": "1.1", "data": [{"title": "x", "paragraphs": paras}]}))
    return train, test


def _write_relations(path: Path, n: int, seed: int) -> Path:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        kind = i % 3
        if kind == 0:
            text, label = "The <e1>fire</e1> caused heavy <e2>smoke</e2> in the hall.", "Cause-Effect(e1,e2)"
        elif kind == 1:
            text, label = "The <e1>smoke</e1> came from a small <e2>fire</e2>.", "Cause-Effect(e2,e1)"
        else:
            text, label = "A <e1>cat</e1> sat next to the <e2>door</e2>.", "Other"
        rows.append(
            {"id": i, "text": text.replace("hall", rng.choice(["hall", "room", "barn"])), "label": label}
        )
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


# ------------------------------------------------------------------------------------------------ detection
def test_task_detection(tmp_path: Path) -> None:
    conll = _write_conll(tmp_path / "a.conll", _sentences(3, 0))
    txt = _write_conll(tmp_path / "a.txt", _sentences(3, 0))
    (tmp_path / "tok.jsonl").write_text(json.dumps({"tokens": ["a", "b"], "tags": ["O", "B-X"]}) + "\n")
    nested = _write_nested(tmp_path / "n.jsonl", 2, 0)
    qa_jsonl, qa_json = _write_qa(tmp_path)
    rel = _write_relations(tmp_path / "r.csv", 3, 0)
    (tmp_path / "r.jsonl").write_text(json.dumps({"text": "ab cd", "e1_start": 0, "e1_end": 2, "e2_start": 3,
                                                  "e2_end": 5, "label": "X"}) + "\n")  # fmt: skip
    cls = tmp_path / "c.csv"
    pd.DataFrame({"text": ["good", "bad"], "label": ["p", "n"]}).to_csv(cls, index=False)
    expected = {conll: "ner", txt: "ner", tmp_path / "tok.jsonl": "ner", nested: "ner", qa_jsonl: "qa",
                qa_json: "qa", rel: "relation", tmp_path / "r.jsonl": "relation", cls: "sequence"}  # fmt: skip
    for path, name in expected.items():
        assert runner_for(path).name == name, path.name
    assert runner_for(cls, "span").name == "ner"


# ------------------------------------------------------------------------------------------------------ NER
def test_ner_crf_train_predict_evaluate(tiny_backbone: Path, tmp_path: Path) -> None:
    train = _write_conll(tmp_path / "train.conll", _sentences(24, 0))
    test = _write_conll(tmp_path / "test.conll", _sentences(10, 1))
    run = tmp_path / "run"
    _ok("train", train, "--test", test, "-o", run, "--backbone", tiny_backbone, *fast(),
        "--set", "model.head_options.extra.use_crf=true")  # fmt: skip
    metrics = json.loads((run / "metrics.json").read_text())
    for split in ("valid", "test"):
        assert {"f1", "precision", "recall", "strict_f1", "loss"} <= set(metrics[split])
        assert (
            metrics[split]["invalid_sequences"] == 0
        )  # the CRF never predicts O -> I-X, even across windows
    for name in ("config.yaml", "history.csv", "report.html", "profile.json", "valid_predictions.conll"):
        assert (run / name).is_file(), name
    meta = json.loads((run / "model" / "model_metadata.json").read_text())
    extra = json.loads((run / "model" / "head" / "config.json").read_text())["extra"]
    assert meta["runner"] == "ner" and extra["use_crf"] is True and extra["scheme"] == "BIO"
    from safetensors.torch import load_file

    assert any("crf" in k for k in load_file(run / "model" / "head" / "model.safetensors"))
    pred = tmp_path / "pred.conll"
    _ok("predict", run, test, "-o", pred)
    lines, gold = pred.read_text().splitlines(), test.read_text().splitlines()
    assert [x.split(" ")[0] for x in lines] == [x.split(" ")[0] for x in gold]
    assert pred.read_text() == (run / "test_predictions.conll").read_text()  # reloaded model = trained model
    _ok("evaluate", run, test)
    ev = json.loads((run / "evaluation.json").read_text())
    assert ev["f1"] == pytest.approx(metrics["test"]["f1"]) and ev["rows"] == 10


def test_ner_jsonl_spans_round_trip(tiny_backbone: Path, tmp_path: Path) -> None:
    recs = []
    for words, tags in _sentences(24, 2, long_every=100):
        text = " ".join(words)
        from bertkit.tasks.ner import tags_to_spans

        starts = [len(" ".join(words[:i])) + (1 if i else 0) for i in range(len(words))]
        ents = [{"start": starts[s], "end": starts[e - 1] + len(words[e - 1]), "label": t}
                for s, e, t in tags_to_spans(tags)]  # fmt: skip
        recs.append({"id": len(recs), "text": text, "entities": ents})
    data = tmp_path / "ner.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    run = tmp_path / "run"
    _ok("train", data, "-o", run, "--backbone", tiny_backbone, *fast())
    out = [json.loads(x) for x in (run / "valid_predictions.jsonl").read_text().splitlines()]
    assert out and all({"id", "text", "entities"} <= set(r) for r in out)
    for r in out:
        for e in r["entities"]:
            assert r["text"][e["start"] : e["end"]] == e["text"]


def test_span_nested_and_discontiguous(tiny_backbone: Path, tmp_path: Path) -> None:
    train, test = _write_nested(tmp_path / "train.jsonl", 20, 0), _write_nested(tmp_path / "test.jsonl", 6, 1)
    res = _ok("analyze", train, "--json")
    prof = json.loads(res.output)
    assert prof["nested_documents"] == 20 and prof["discontiguous_entities"] == 10
    assert prof["entity_types"] == {"LOC": 20, "ORG": 10, "PER": 30}
    run = tmp_path / "run"
    _ok("train", train, "--test", test, "--task", "span", "-o", run, "--backbone", tiny_backbone, *fast(),
        "--set", "model.head_options.extra.max_span_len=4")  # fmt: skip
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"f1", "precision", "recall", "PER_f1"} <= set(metrics["test"])
    head = json.loads((run / "model" / "head" / "config.json").read_text())
    assert head["head_type"] == "span_classification" and head["label_names"] == ["O", "LOC", "ORG", "PER"]
    assert head["extra"]["max_span_len"] == 4 and head["extra"]["use_linking"] is True
    pred = tmp_path / "pred.jsonl"
    _ok("predict", run, test, "-o", pred)
    assert pred.read_text() == (run / "test_predictions.jsonl").read_text()
    assert len(pred.read_text().splitlines()) == 6


def test_ner_cv(tiny_backbone: Path, tmp_path: Path) -> None:
    train = _write_conll(tmp_path / "train.conll", _sentences(16, 3))
    test = _write_conll(tmp_path / "test.conll", _sentences(4, 4))
    run = tmp_path / "cv"
    res = _ok("cv", train, "--folds", "2", "--test", test, "-o", run, "--backbone", tiny_backbone, *fast())
    assert "oof.conll" in res.output
    metrics = json.loads((run / "metrics.json").read_text())
    assert len(metrics["folds"]) == 2 and "f1" in metrics["oof"] and "f1" in metrics["fold_summary"]
    assert len((run / "oof.conll").read_text().split("\n\n")) == len(train.read_text().split("\n\n"))
    assert (run / "test_predictions.conll").is_file() and (run / "fold_1" / "model").is_dir()


# ------------------------------------------------------------------------------------------------------- QA
def test_qa_train_predict_evaluate(tiny_backbone: Path, tmp_path: Path) -> None:
    train, test = _write_qa(tmp_path)
    prof = json.loads(_ok("analyze", train, "--json").output)
    assert prof["task"] == "qa" and prof["questions"] == 16 and prof["contexts"] == 3
    assert {"answer_length_tokens", "context_length_tokens"} <= set(prof)
    run = tmp_path / "run"
    _ok("train", train, "--test", test, "-o", run, "--backbone", tiny_backbone, *fast(48))
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"exact_match", "f1"} <= set(metrics["test"]) and 0 <= metrics["test"]["f1"] <= 100
    answers = json.loads((run / "test_predictions.json").read_text())
    nbest = json.loads((run / "test_predictions_nbest.json").read_text())
    assert set(answers) == {f"t{i}" for i in range(len(QUESTIONS))} and set(nbest) == set(answers)
    assert all("probability" in c for c in nbest["t0"])
    extra = json.loads((run / "model" / "head" / "config.json").read_text())["extra"]
    assert extra["doc_stride"] == 24 and extra["version_2"] is False
    pred = tmp_path / "pred.json"
    _ok("predict", run, test, "-o", pred)
    assert json.loads(pred.read_text()) == answers and (tmp_path / "pred_nbest.json").is_file()
    _ok("evaluate", run, test, "-o", tmp_path / "ev.json")
    assert json.loads((tmp_path / "ev.json").read_text())["f1"] == pytest.approx(metrics["test"]["f1"])


def test_qa_v2_threshold_and_cv(tiny_backbone: Path, tmp_path: Path) -> None:
    train, _ = _write_qa(tmp_path, unanswerable=True)
    run = tmp_path / "run"
    _ok("train", train, "--valid", train, "-o", run, "--backbone", tiny_backbone, *fast(48))
    metrics = json.loads((run / "metrics.json").read_text())
    assert "null_threshold" in metrics["postprocessing"]
    extra = json.loads((run / "model" / "head" / "config.json").read_text())["extra"]
    assert extra["version_2"] is True
    from bertkit.model import BertWithHead

    model = BertWithHead.from_pretrained(run / "model")
    assert float(model.head.null_threshold) == pytest.approx(metrics["postprocessing"]["null_threshold"])
    cv = tmp_path / "cv"
    _ok("cv", train, "--folds", "3", "-o", cv, "--backbone", tiny_backbone, "--epochs", "1", "--max-length", "48",
        "--set", "training.progress=false")  # fmt: skip
    folds = pd.read_csv(cv / "folds.csv")
    ctx = [json.loads(x)["context"] for x in train.read_text().splitlines()]
    assert all(len(set(folds["fold"][[c == x for c in ctx]])) == 1 for x in set(ctx))  # one context, one fold
    assert "f1" in json.loads((cv / "metrics.json").read_text())["oof"]


# ------------------------------------------------------------------------------------------------- relation
def test_relation_train_predict_evaluate(tiny_backbone: Path, tmp_path: Path) -> None:
    train, test = (
        _write_relations(tmp_path / "train.csv", 36, 0),
        _write_relations(tmp_path / "test.csv", 9, 1),
    )
    prof = json.loads(_ok("analyze", train, "--json").output)
    assert prof["relation_types"] == {"Cause-Effect(e1,e2)": 12, "Cause-Effect(e2,e1)": 12, "Other": 12}
    run = tmp_path / "run"
    _ok("train", train, "--test", test, "-o", run, "--backbone", tiny_backbone, *fast())
    metrics = json.loads((run / "metrics.json").read_text())
    assert {"macro_f1", "accuracy", "macro_f1_excluding_other", "official_macro_f1"} <= set(metrics["test"])
    from bertkit.model import BertWithHead

    model = BertWithHead.from_pretrained(run / "model")
    ids = model.head.config.extra["marker_token_ids"]
    assert model.tokenizer.convert_tokens_to_ids(["<e1>", "<e2>"]) == ids
    assert model.bert.get_input_embeddings().num_embeddings >= len(model.tokenizer)
    pred = tmp_path / "pred.csv"
    _ok("predict", run, test, "-o", pred, "--proba")
    frame, gold = pd.read_csv(pred), pd.read_csv(test)
    assert list(frame.columns[:3]) == ["id", "text", "label"] and frame["id"].tolist() == gold["id"].tolist()
    assert frame["label"].isin(["Cause-Effect(e1,e2)", "Cause-Effect(e2,e1)", "Other"]).all()
    assert "proba_Other" in frame.columns
    _ok("evaluate", run, test, "-o", tmp_path / "ev.json")
    ev = json.loads((tmp_path / "ev.json").read_text())
    assert ev["accuracy"] == pytest.approx(metrics["test"]["accuracy"])


# ----------------------------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("bad.conll", "EU B-ORG\nrejects\n", "expected 2 columns"),
        ("bad2.conll", "EU X-ORG\n", "not a valid BIO tag"),
        ("bad.jsonl", json.dumps({"text": "Anna Smith", "entities": [[0, 4, "PER"], [0, 10, "PER"]]}),
         "use the span_classification head"),
        ("qa.jsonl", json.dumps({"id": "a", "question": "q?", "context": "abc def", "answers":
                                 {"text": ["def"], "answer_start": [1]}}), "does not match the context"),
        ("rel.csv", "text,label\n<e1>a</e1> b <e2>c</e2>,X\n<e1>a</e1> b c,Y\n", "missing <e2>"),
    ],
)  # fmt: skip
def test_bad_input_gives_one_line(tmp_path: Path, name: str, content: str, message: str) -> None:
    path = tmp_path / name
    path.write_text(content + "\n")
    task = {"qa.jsonl": "qa", "rel.csv": "relation"}.get(name, "ner")
    res = _invoke("train", path, "-o", tmp_path / "run", "--task", task)
    assert res.exit_code == 2, res.output
    assert message in res.output and "Traceback" not in res.output
    assert len([ln for ln in res.output.strip().splitlines() if ln.startswith("error:")]) == 1


# ---------------------------------------------------------------------------------------------- real data
def test_real_data_subsets(tiny_backbone: Path, tmp_path: Path) -> None:
    conll = shared_data("conll2003")
    squad, semeval = shared_data("squad_xquad_en"), shared_data("semeval2010_task8")
    assert runner_for(conll / "train.conll").name == "ner"
    assert runner_for(squad / "train.json").name == "qa" and runner_for(squad / "train.jsonl").name == "qa"
    assert runner_for(semeval / "train.csv").name == "relation"
    prof = json.loads(_ok("analyze", semeval / "test.csv", "--json").output)
    assert len(prof["relation_types"]) == 19 and prof["rows"] == 2717
    blocks = (conll / "train.conll").read_text().split("\n\n")
    small = tmp_path / "train.conll"
    small.write_text("\n\n".join(blocks[:30]) + "\n\n")
    valid = tmp_path / "valid.conll"
    valid.write_text("\n\n".join(blocks[30:40]) + "\n\n")
    run = tmp_path / "ner"
    _ok("train", small, "--valid", valid, "-o", run, "--backbone", tiny_backbone, *fast(epochs=1))
    assert "f1" in json.loads((run / "metrics.json").read_text())["valid"]
    lines = (squad / "train.jsonl").read_text().splitlines()[:12]
    qa = tmp_path / "qa.jsonl"
    qa.write_text("\n".join(lines) + "\n")
    _ok("train", qa, "-o", tmp_path / "qa", "--backbone", tiny_backbone, "--epochs", "1", "--max-length", "64",
        "--set", "training.progress=false")  # fmt: skip
    rel = tmp_path / "rel.csv"
    pd.read_csv(semeval / "train.csv").head(40).to_csv(rel, index=False)
    _ok("train", rel, "-o", tmp_path / "rel", "--backbone", tiny_backbone, *fast(epochs=1))
    assert "official_macro_f1" in json.loads((tmp_path / "rel" / "metrics.json").read_text())["valid"]
