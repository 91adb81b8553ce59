"""Hugging Face vs bertkit on the token-level tasks, same backbone / data subset / epochs / seed, one invocation.

* **NER** (CoNLL-2003): ``AutoModelForTokenClassification`` + ``transformers.Trainer`` (first-sub-token labels,
  truncation at ``max_length``, the standard ``run_ner`` recipe) vs ``bertkit`` without and with a CRF. Both
  score with seqeval, default (conlleval-like) and strict IOB2 mode, and count invalid BIO sequences.
* **QA** (``squad_xquad_en``): ``AutoModelForQuestionAnswering`` with the standard ``run_qa`` preprocessing and
  n-best post-processing vs ``bertkit``; official SQuAD EM/F1.
* **Relation extraction** (SemEval-2010 Task 8): a CLS-pooling ``AutoModelForSequenceClassification`` over the
  marked sentence (markers as plain text) vs bertkit's entity-marker relation head; macro-F1 / accuracy /
  official (direction-aware, Other excluded) macro-F1.
* **Span head**: constructed nested + discontiguous examples, and the CoNLL subset (exact entity F1).

bertkit runs go through the same runner functions as the CLI (``bertkit.runners.runner_by_name(...).train``).
Both sides use the same optimiser settings (AdamW, linear schedule, 10% warmup, weight decay 0.01) and the
final model (no checkpoint selection). Writes a JSON file and prints a table.

Smoke version (a few minutes per task on a free 2-core CPU; too few steps for the scores to mean much)::

    python bench/bench_token_tasks.py --smoke

Full comparisons::

    python bench/bench_token_tasks.py --tasks ner --ner-train-rows 8000 --out bench/results/token_ner.json
    python bench/bench_token_tasks.py --tasks qa --out bench/results/token_qa.json
    python bench/bench_token_tasks.py --tasks relation span --out bench/results/token_re_span.json
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import random
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

from bertkit.data.minilm import minilm_path  # noqa: E402
from bertkit.metrics import entity_metrics, squad_metrics  # noqa: E402
from bertkit.runconfig import build_run_config  # noqa: E402
from bertkit.runners import runner_by_name  # noqa: E402
from bertkit.tasks.ner import read_conll, write_conll  # noqa: E402
from bertkit.tasks.qa import read_qa  # noqa: E402
from bertkit.tasks.relation_runner import official_macro_f1  # noqa: E402
from bertkit.tasks.tags import validate_tags  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


# ------------------------------------------------------------------------------------------------ helpers
_T0 = time.perf_counter()


def log(msg: str) -> None:
    """Progress line with the elapsed wall time."""
    print(f"[{time.perf_counter() - _T0:7.1f}s] {msg}", flush=True)


def subset(n_items: int, n: int | None, seed: int) -> list[int]:
    """The first ``n`` indices after a seeded shuffle (what ``--max-train-samples`` takes in bertkit)."""
    order = np.random.default_rng(seed).permutation(n_items)
    return [int(i) for i in (order if n is None or n >= n_items else order[:n])]


def invalid_count(seqs: Sequence[Sequence[str]]) -> int:
    bad = 0
    for tags in seqs:
        try:
            validate_tags(tags, "BIO", check_transitions=True)
        except Exception:
            bad += 1
    return bad


def hf_args(out: str, epochs: float, batch: int, lr: float, seed: int) -> Any:
    from transformers import TrainingArguments

    return TrainingArguments(
        output_dir=out, per_device_train_batch_size=batch, per_device_eval_batch_size=64, learning_rate=lr,
        num_train_epochs=epochs, seed=seed, warmup_steps=0.1, weight_decay=0.01, lr_scheduler_type="linear",
        eval_strategy="no", save_strategy="no", logging_strategy="no", report_to="none", disable_tqdm=True,
        use_cpu=not torch.cuda.is_available(), dataloader_num_workers=0,
    )  # fmt: skip


def bertkit_cfg(args: argparse.Namespace, task: str, epochs: float, batch: int, lr: float, max_length: int,
                rows: int | None, extra: dict[str, Any] | None = None) -> Any:  # fmt: skip
    data = {"task": task, **({"max_train_samples": rows} if rows else {})}
    model = {"backbone": args.backbone, "head_options": {"extra": extra or {}}}
    training = {"epochs": epochs, "batch_size": batch, "learning_rate": lr, "max_length": max_length,
                "seed": args.seed, "warmup_ratio": 0.1, "weight_decay": 0.01, "eval_strategy": "no",
                "progress": False, "calibrate": False}  # fmt: skip
    return build_run_config("default", overrides={"data": data, "model": model, "training": training})


def run_bertkit(runner: str, train: Path, out: Path, cfg: Any, valid: Path, test: Path) -> dict[str, Any]:
    log(f"bertkit {runner} run {out.name}")
    t0 = time.perf_counter()
    metrics = runner_by_name(runner).train(train, out, cfg, valid=valid, test=test)
    return {
        **metrics["test"],
        "train_seconds": metrics["train_seconds"],
        "wall_seconds": time.perf_counter() - t0,
    }


class ListDataset(torch.utils.data.Dataset):
    def __init__(self, rows: list[dict[str, Any]]) -> None:
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> dict[str, Any]:
        return self.rows[i]


# ---------------------------------------------------------------------------------------------------- NER
def bench_ner(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from transformers import (
        AutoModelForTokenClassification,
        AutoTokenizer,
        DataCollatorForTokenClassification,
        Trainer,
    )

    src = Path(args.data) / "conll2003"
    train_docs = read_conll(src / "train.conll")
    test_docs = read_conll(src / "test.conll")[: args.ner_eval_rows]
    valid_docs = read_conll(src / "validation.conll")[:200]  # only scored at the end (no selection)
    test_file, valid_file = work / "ner_test.conll", work / "ner_valid.conll"
    write_conll(test_file, test_docs)
    write_conll(valid_file, valid_docs)
    picked = [train_docs[i] for i in subset(len(train_docs), args.ner_train_rows, args.seed)]
    res: dict[str, Any] = {"train_sentences": len(picked), "test_sentences": len(test_docs),
                           "epochs": args.ner_epochs, "batch_size": 32, "lr": 5e-5, "max_length": 128}  # fmt: skip

    def scores(pred: list[list[str]], ref: list[list[str]]) -> dict[str, float]:
        d, s = entity_metrics(ref, pred), entity_metrics(ref, pred, mode="strict", scheme="IOB2")
        return {"f1": d["f1"], "precision": d["precision"], "recall": d["recall"], "strict_f1": s["f1"],
                "invalid_sequences": invalid_count(pred)}  # fmt: skip

    # Hugging Face: AutoModelForTokenClassification + Trainer, first sub-token labels, truncation
    path = str(minilm_path() if args.backbone == "minilm" else args.backbone)
    tok = AutoTokenizer.from_pretrained(path)
    labels = sorted({t for d in picked for t in d.tags})
    l2i = {t: i for i, t in enumerate(labels)}

    def encode(docs: Sequence[Any]) -> list[dict[str, Any]]:
        enc = tok([d.tokens for d in docs], is_split_into_words=True, truncation=True, max_length=128)
        rows = []
        for i, d in enumerate(docs):
            prev, lab = None, []
            for w in enc.word_ids(i):
                lab.append(-100 if w is None or w == prev else l2i.get(d.tags[w], l2i["O"]))
                prev = w
            rows.append(
                {"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i], "labels": lab}
            )
        return rows

    torch.manual_seed(args.seed)
    model = AutoModelForTokenClassification.from_pretrained(
        path, num_labels=len(labels), id2label=dict(enumerate(labels)), label2id=l2i)  # fmt: skip
    trainer = Trainer(model=model, args=hf_args(str(work / "hf_ner"), args.ner_epochs, 32, 5e-5, args.seed),
                      train_dataset=ListDataset(encode(picked)), data_collator=DataCollatorForTokenClassification(tok))  # fmt: skip
    log("hf training")
    t0 = time.perf_counter()
    trainer.train()
    secs = time.perf_counter() - t0
    log(f"hf trained in {secs:.1f}s")
    test_rows = encode(test_docs)
    out = trainer.predict(ListDataset(test_rows))
    preds, refs = [], []
    for row, logit in zip(test_rows, out.predictions):
        keep = [
            k for k, lab in enumerate(row["labels"]) if lab != -100
        ]  # the HF recipe scores these positions
        preds.append([labels[int(np.argmax(logit[k]))] for k in keep])
        refs.append([labels[row["labels"][k]] for k in keep])
    res["hf"] = {**scores(preds, refs), "train_seconds": secs}
    # bertkit, without and with CRF (same subset: first N sentences after the seeded shuffle)
    for name, extra in (("bertkit", {}), ("bertkit_crf", {"use_crf": True})):
        cfg = bertkit_cfg(args, "ner", args.ner_epochs, 32, 5e-5, 128, args.ner_train_rows, extra)
        m = run_bertkit("ner", src / "train.conll", work / name, cfg, valid_file, test_file)
        res[name] = {
            k: m[k] for k in ("f1", "precision", "recall", "strict_f1", "invalid_sequences", "train_seconds")
        }
    res["delta_f1_points"] = 100 * (res["bertkit"]["f1"] - res["hf"]["f1"])
    res["delta_f1_points_crf"] = 100 * (res["bertkit_crf"]["f1"] - res["hf"]["f1"])
    return res


# ----------------------------------------------------------------------------------------------------- QA
def _hf_qa_features(
    tok: Any, examples: Sequence[Any], max_length: int, stride: int, train: bool
) -> list[dict]:
    enc = tok([e.question.lstrip() for e in examples], [e.context for e in examples], truncation="only_second",
              max_length=max_length, stride=stride, return_overflowing_tokens=True, return_offsets_mapping=True,
              padding="max_length")  # fmt: skip
    rows = []
    for i, offsets in enumerate(enc["offset_mapping"]):
        ex = examples[enc["overflow_to_sample_mapping"][i]]
        seq = enc.sequence_ids(i)
        row = {"input_ids": enc["input_ids"][i], "attention_mask": enc["attention_mask"][i]}
        if "token_type_ids" in enc:
            row["token_type_ids"] = enc["token_type_ids"][i]
        if train:
            cls = enc["input_ids"][i].index(tok.cls_token_id)
            s_char = ex.answers[0]["answer_start"]
            e_char = s_char + len(ex.answers[0]["text"])
            ts = seq.index(1)
            te = len(seq) - 1 - seq[::-1].index(1)
            if not (offsets[ts][0] <= s_char and offsets[te][1] >= e_char):
                row["start_positions"] = row["end_positions"] = cls
            else:
                while ts < len(offsets) and offsets[ts][0] <= s_char:
                    ts += 1
                while offsets[te][1] >= e_char:
                    te -= 1
                row["start_positions"], row["end_positions"] = ts - 1, te + 1
        else:
            row["_offsets"] = [o if s == 1 else None for o, s in zip(offsets, seq)]
            row["_example"] = ex.id
        rows.append(row)
    return rows


def _hf_postprocess(examples: Sequence[Any], feats: list[dict], starts: np.ndarray, ends: np.ndarray,
                    n_best: int = 20, max_answer_length: int = 30) -> dict[str, str]:  # fmt: skip
    """The ``utils_qa.postprocess_qa_predictions`` logic (SQuAD v1: always answer)."""
    by_ex: dict[str, list[int]] = {}
    for k, f in enumerate(feats):
        by_ex.setdefault(f["_example"], []).append(k)
    out = {}
    for ex in examples:
        best, best_score = "", -1e9
        for k in by_ex.get(ex.id, []):
            offs = feats[k]["_offsets"]
            for a in np.argsort(starts[k])[-1 : -n_best - 1 : -1]:
                for b in np.argsort(ends[k])[-1 : -n_best - 1 : -1]:
                    if a >= len(offs) or b >= len(offs) or offs[a] is None or offs[b] is None:
                        continue
                    if b < a or b - a + 1 > max_answer_length:
                        continue
                    if starts[k][a] + ends[k][b] > best_score:
                        best_score, best = starts[k][a] + ends[k][b], ex.context[offs[a][0] : offs[b][1]]
        out[ex.id] = best
    return out


def bench_qa(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    from transformers import AutoModelForQuestionAnswering, AutoTokenizer, Trainer, default_data_collator

    src = Path(args.data) / "squad_xquad_en"
    train_ex = read_qa(src / "train.json")
    test_ex = read_qa(src / "test.json")[: args.qa_eval_rows]
    test_file = work / "qa_test.jsonl"
    test_file.write_text("\n".join(json.dumps({"id": e.id, "title": e.title, "context": e.context, "question": e.question,
        "answers": {"text": e.answer_texts, "answer_start": [a["answer_start"] for a in e.answers]}}) for e in test_ex) + "\n")  # fmt: skip
    picked = [train_ex[i] for i in subset(len(train_ex), args.qa_train_rows, args.seed)]
    refs = {e.id: e.answer_texts for e in test_ex}
    res: dict[str, Any] = {"train_questions": len(picked), "test_questions": len(test_ex), "epochs": args.qa_epochs,
                           "batch_size": 16, "lr": 1e-4, "max_length": args.qa_max_length, "doc_stride": args.qa_doc_stride}  # fmt: skip
    path = str(minilm_path() if args.backbone == "minilm" else args.backbone)
    tok = AutoTokenizer.from_pretrained(path)
    torch.manual_seed(args.seed)
    model = AutoModelForQuestionAnswering.from_pretrained(path)
    trainer = Trainer(model=model, args=hf_args(str(work / "hf_qa"), args.qa_epochs, 16, 1e-4, args.seed),
                      train_dataset=ListDataset(_hf_qa_features(tok, picked, args.qa_max_length, args.qa_doc_stride, True)),
                      data_collator=default_data_collator)  # fmt: skip
    log("hf training")
    t0 = time.perf_counter()
    trainer.train()
    secs = time.perf_counter() - t0
    log(f"hf trained in {secs:.1f}s")
    feats = _hf_qa_features(tok, test_ex, args.qa_max_length, args.qa_doc_stride, False)
    plain = [{k: v for k, v in f.items() if not k.startswith("_")} for f in feats]
    start, end = trainer.predict(ListDataset(plain)).predictions[:2]
    res["hf"] = {**squad_metrics(_hf_postprocess(test_ex, feats, start, end), refs), "train_seconds": secs}
    extra = {"doc_stride": args.qa_doc_stride}
    cfg = bertkit_cfg(args, "qa", args.qa_epochs, 16, 1e-4, args.qa_max_length, args.qa_train_rows, extra)
    m = run_bertkit("qa", src / "train.json", work / "bertkit_qa", cfg, test_file, test_file)
    res["bertkit"] = {k: m[k] for k in ("exact_match", "f1", "train_seconds")}
    res["delta_em_points"] = res["bertkit"]["exact_match"] - res["hf"]["exact_match"]
    res["delta_f1_points"] = res["bertkit"]["f1"] - res["hf"]["f1"]
    if args.qa_recipe_head_lr:  # same data and epochs; the fresh span head learns faster than the encoder
        recipe = copy.deepcopy(cfg)
        recipe.training.head_learning_rate = args.qa_recipe_head_lr
        m = run_bertkit("qa", src / "train.json", work / "bertkit_qa_head_lr", recipe, test_file, test_file)
        res["bertkit_head_lr"] = {
            "head_learning_rate": args.qa_recipe_head_lr,
            **{k: m[k] for k in ("exact_match", "f1", "train_seconds")},
        }
        if args.qa_recipe_epochs:  # the same head learning rate, trained for longer
            recipe.training.epochs = args.qa_recipe_epochs
            m = run_bertkit(
                "qa", src / "train.json", work / "bertkit_qa_recipe", recipe, test_file, test_file
            )
            res["bertkit_head_lr_more_epochs"] = {
                "head_learning_rate": args.qa_recipe_head_lr,
                "epochs": args.qa_recipe_epochs,
                **{k: m[k] for k in ("exact_match", "f1", "train_seconds")},
            }
    return res


# ----------------------------------------------------------------------------------------------- relation
def bench_relation(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import pandas as pd
    from sklearn.metrics import f1_score
    from transformers import (
        AutoModelForSequenceClassification,
        AutoTokenizer,
        DataCollatorWithPadding,
        Trainer,
    )

    src = Path(args.data) / "semeval2010_task8"
    train = pd.read_csv(src / "train.csv", dtype=str, keep_default_na=False)
    test = pd.read_csv(src / "test.csv", dtype=str, keep_default_na=False).head(args.re_eval_rows)
    test_file = work / "re_test.csv"
    test.to_csv(test_file, index=False)
    picked = train.iloc[subset(len(train), args.re_train_rows, args.seed)]
    labels = sorted(set(train["label"]))
    l2i = {n: i for i, n in enumerate(labels)}
    gold = test["label"].tolist()

    def scores(pred: list[str]) -> dict[str, float]:
        rel = [x for x in sorted(set(gold) | set(pred)) if x != "Other"]
        return {"macro_f1": float(f1_score(gold, pred, average="macro", zero_division=0)),
                "accuracy": float(np.mean([g == p for g, p in zip(gold, pred)])),
                "macro_f1_excluding_other": float(f1_score(gold, pred, labels=rel, average="macro", zero_division=0)),
                "official_macro_f1": official_macro_f1(gold, pred)}  # fmt: skip

    res: dict[str, Any] = {"train_rows": len(picked), "test_rows": len(test), "epochs": args.re_epochs,
                           "batch_size": 32, "lr": 5e-5, "max_length": 128}  # fmt: skip
    path = str(minilm_path() if args.backbone == "minilm" else args.backbone)
    tok = AutoTokenizer.from_pretrained(path)

    def encode(frame: Any, with_labels: bool) -> list[dict[str, Any]]:
        enc = tok(frame["text"].tolist(), truncation=True, max_length=128)
        rows = [{k: enc[k][i] for k in enc} for i in range(len(frame))]
        if with_labels:
            for r, lab in zip(rows, frame["label"]):
                r["labels"] = l2i[lab]
        return rows

    torch.manual_seed(args.seed)
    model = AutoModelForSequenceClassification.from_pretrained(path, num_labels=len(labels))
    trainer = Trainer(model=model, args=hf_args(str(work / "hf_re"), args.re_epochs, 32, 5e-5, args.seed),
                      train_dataset=ListDataset(encode(picked, True)), data_collator=DataCollatorWithPadding(tok))  # fmt: skip
    log("hf training")
    t0 = time.perf_counter()
    trainer.train()
    secs = time.perf_counter() - t0
    log(f"hf trained in {secs:.1f}s")
    logits = trainer.predict(ListDataset(encode(test, False))).predictions
    res["hf_cls_baseline"] = {
        **scores([labels[int(i)] for i in np.argmax(logits, -1)]),
        "train_seconds": secs,
    }
    cfg = bertkit_cfg(args, "relation", args.re_epochs, 32, 5e-5, 128, args.re_train_rows)
    m = run_bertkit("relation", src / "train.csv", work / "bertkit_re", cfg, test_file, test_file)
    res["bertkit"] = {k: m[k] for k in ("macro_f1", "accuracy", "macro_f1_excluding_other", "official_macro_f1",
                                        "train_seconds")}  # fmt: skip
    res["delta_macro_f1_points"] = 100 * (res["bertkit"]["macro_f1"] - res["hf_cls_baseline"]["macro_f1"])
    return res


# --------------------------------------------------------------------------------------------------- span
def nested_examples(n: int, seed: int) -> list[dict[str, Any]]:
    """Constructed records with nested (ORG containing LOC/PER) and discontiguous (coordinated names) entities."""
    rng = random.Random(seed)
    firsts = [
        "Anna",
        "Ben",
        "Carla",
        "David",
        "Eva",
        "Farid",
        "Greta",
        "Hiro",
        "Ines",
        "Jonas",
        "Kemal",
        "Lena",
    ]
    lasts = ["Smith", "Jones", "Okafor", "Novak", "Garcia", "Tanaka", "Kowalski", "Dubois", "Rossi"]
    cities = ["Paris", "Berlin", "Madrid", "Rome", "Oslo", "Vienna", "Lagos", "Lima", "Osaka", "Quebec"]
    kinds = ["University", "Museum", "Bank", "Library", "Hospital", "Zoo"]
    verbs = ["visited", "left", "toured", "praised", "described"]
    out = []
    for i in range(n):
        f1, f2, last, city = rng.choice(firsts), rng.choice(firsts), rng.choice(lasts), rng.choice(cities)
        kind, verb = rng.choice(kinds), rng.choice(verbs)
        form = i % 3
        if form == 0:  # "the Paris Museum": ORG with a nested LOC
            text = f"{f1} {last} {verb} the {city} {kind} yesterday ."
            c = text.index(f" {city} ") + 1
            ents = [
                [0, len(f1) + 1 + len(last), "PER"],
                [c, c + len(city) + 1 + len(kind), "ORG"],
                [c, c + len(city), "LOC"],
            ]
        elif form == 1:  # "Anna and Ben Smith": a discontiguous PER "Anna ... Smith" and "Ben Smith"
            text = f"{f1} and {f2} {last} {verb} {city} ."
            b, s, c = len(f1) + 5, len(f1) + 6 + len(f2), text.rindex(city)
            ents = [{"label": "PER", "fragments": [[0, len(f1)], [s, s + len(last)]]}, [b, s + len(last), "PER"],
                    [c, c + len(city), "LOC"]]  # fmt: skip
        else:  # "the Jonas Novak Foundation": ORG with a nested PER
            text = f"The {f1} {last} {kind} opened in {city} ."
            ents = [[4, 4 + len(f1) + 1 + len(last) + 1 + len(kind), "ORG"], [4, 4 + len(f1) + 1 + len(last), "PER"],
                    [text.rindex(city), text.rindex(city) + len(city), "LOC"]]  # fmt: skip
        ents = [e if isinstance(e, dict) else {"start": e[0], "end": e[1], "label": e[2]} for e in ents]
        out.append({"id": f"s{i}", "text": text, "entities": ents})
    return out


def bench_span(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    train, test = work / "nested_train.jsonl", work / "nested_test.jsonl"
    train.write_text("\n".join(json.dumps(r) for r in nested_examples(args.span_rows, args.seed)) + "\n")
    test.write_text(
        "\n".join(json.dumps(r) for r in nested_examples(max(30, args.span_rows // 4), args.seed + 1)) + "\n"
    )
    cfg = bertkit_cfg(args, "span", args.span_epochs, 16, 2e-4, 64, None, {"max_span_len": 6})
    m = run_bertkit("ner", train, work / "span_nested", cfg, test, test)
    res: dict[str, Any] = {"constructed": {"train_rows": args.span_rows, "epochs": args.span_epochs,
                                           **{k: v for k, v in m.items() if not k.endswith("_support")}}}  # fmt: skip
    pred = [json.loads(x) for x in (work / "span_nested" / "test_predictions.jsonl").read_text().splitlines()]
    gold = [json.loads(x) for x in test.read_text().splitlines()]
    frag = lambda e: tuple(tuple(f) for f in e.get("fragments", [[e.get("start"), e.get("end")]]))  # noqa: E731
    disc_gold = {(g["id"], frag(e)) for g in gold for e in g["entities"] if len(frag(e)) > 1}
    disc_pred = {(p["id"], frag(e)) for p in pred for e in p["entities"] if len(frag(e)) > 1}
    res["constructed"]["discontiguous_recall"] = len(disc_gold & disc_pred) / max(1, len(disc_gold))
    src = Path(args.data) / "conll2003"
    test_file, valid_file = work / "span_conll_test.conll", work / "span_conll_valid.conll"
    write_conll(test_file, read_conll(src / "test.conll")[: args.ner_eval_rows])
    write_conll(valid_file, read_conll(src / "validation.conll")[:200])
    cfg = bertkit_cfg(args, "span", args.ner_epochs, 32, 5e-5, 128, args.ner_train_rows)
    m = run_bertkit("ner", src / "train.conll", work / "span_conll", cfg, valid_file, test_file)
    res["conll"] = {
        "train_sentences": args.ner_train_rows,
        **{k: m[k] for k in ("f1", "precision", "recall", "train_seconds")},
    }
    if (
        args.span_recipe_head_lr
    ):  # a fresh span classifier over ~T*max_span_len candidates needs a faster head
        recipe = copy.deepcopy(cfg)
        recipe.training.head_learning_rate = args.span_recipe_head_lr
        recipe.training.epochs = args.span_recipe_epochs or args.ner_epochs
        m = run_bertkit("ner", src / "train.conll", work / "span_conll_recipe", recipe, valid_file, test_file)
        res["conll_recipe"] = {
            "train_sentences": args.ner_train_rows,
            "head_learning_rate": args.span_recipe_head_lr,
            "epochs": recipe.training.epochs,
            **{k: m[k] for k in ("f1", "precision", "recall", "train_seconds")},
        }
    return res


# ------------------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--tasks",
        nargs="+",
        default=["ner", "qa", "relation", "span"],
        choices=["ner", "qa", "relation", "span"],
    )
    p.add_argument(
        "--smoke", action="store_true", help="300 NER sentences, 100 QA questions, 400 relation rows."
    )
    p.add_argument("--data", default=str(DATA))
    p.add_argument("--backbone", default="minilm")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0, help="torch threads (0: default)")
    p.add_argument("--ner-train-rows", type=int, default=8000)
    p.add_argument("--ner-eval-rows", type=int, default=None)
    p.add_argument("--ner-epochs", type=float, default=1)
    p.add_argument("--qa-train-rows", type=int, default=None, help="default: all 970 questions")
    p.add_argument("--qa-eval-rows", type=int, default=None)
    p.add_argument("--qa-epochs", type=float, default=2)
    p.add_argument("--qa-max-length", type=int, default=256)
    p.add_argument("--qa-doc-stride", type=int, default=128)
    p.add_argument("--qa-recipe-head-lr", type=float, default=1e-3,
                   help="also run bertkit with this head learning rate (0: skip)")  # fmt: skip
    p.add_argument("--qa-recipe-epochs", type=float, default=6,
                   help="also run the head-LR recipe for this many epochs (0: skip)")  # fmt: skip
    p.add_argument("--re-train-rows", type=int, default=None, help="default: all 8,000 rows")
    p.add_argument("--re-eval-rows", type=int, default=None)
    p.add_argument("--re-epochs", type=float, default=2)
    p.add_argument("--span-rows", type=int, default=600)
    p.add_argument("--span-epochs", type=float, default=6)
    p.add_argument("--span-recipe-head-lr", type=float, default=1e-3,
                   help="also run the CoNLL span head with this head learning rate (0: skip)")  # fmt: skip
    p.add_argument("--span-recipe-epochs", type=float, default=3)
    p.add_argument("--out", default=str(ROOT / "bench" / "results" / "token_tasks.json"))
    args = p.parse_args(argv)
    if args.smoke:
        args.ner_train_rows, args.ner_eval_rows, args.qa_train_rows, args.qa_eval_rows = 300, 300, 100, 60
        args.qa_epochs, args.qa_recipe_epochs, args.span_recipe_epochs = 1, 1, 1
        args.re_train_rows, args.re_eval_rows, args.re_epochs = 400, 300, 1
        args.span_rows, args.span_epochs = 150, 8
    if args.threads:
        torch.set_num_threads(args.threads)
    results: dict[str, Any] = {"args": vars(args), "device": "cuda" if torch.cuda.is_available() else "cpu",
                               "torch_threads": torch.get_num_threads()}  # fmt: skip
    benches = {"ner": bench_ner, "qa": bench_qa, "relation": bench_relation, "span": bench_span}
    with tempfile.TemporaryDirectory(prefix="bench_token_") as tmp:
        for task in args.tasks:
            t0 = time.perf_counter()
            work = Path(tmp) / task
            work.mkdir()
            results[task] = benches[task](args, work)
            results[task]["bench_seconds"] = round(time.perf_counter() - t0, 1)
            print(f"[{task}] done in {results[task]['bench_seconds']}s", flush=True)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=float))
    print_table(results)
    print(f"wrote {out}")
    return results


def print_table(results: dict[str, Any]) -> None:
    rows = []
    for task, keys in (("ner", ("f1", "strict_f1", "precision", "recall", "invalid_sequences", "train_seconds")),
                       ("qa", ("exact_match", "f1", "epochs", "head_learning_rate", "train_seconds")),
                       ("relation", ("macro_f1", "accuracy", "official_macro_f1", "train_seconds"))):  # fmt: skip
        for system, vals in results.get(task, {}).items():
            if isinstance(vals, dict) and system not in ("args",):
                rows.append((task, system, "  ".join(f"{k}={vals[k]:.4g}" for k in keys if k in vals)))
    if "span" in results:
        for part in ("constructed", "conll", "conll_recipe"):
            if part not in results["span"]:
                continue
            vals = results["span"][part]
            extra = ("discontiguous_recall",) if part == "constructed" else ()
            rows.append(
                ("span", part, "  ".join(f"{k}={vals[k]:.4g}" for k in ("f1", "precision", "recall", *extra)))
            )
    width = max((len(a) + len(b) for a, b, _ in rows), default=10) + 5
    print(f"{'task / system'.ljust(width)}metrics")
    for task, system, text in rows:
        print(f"{(task + ' / ' + system).ljust(width)}{text}")


if __name__ == "__main__":
    main()
