"""Tests for bertkit.data.analyze (real datasets + constructed frames) and bertkit.data.prepare."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bertkit.data.analyze import DatasetProfile, analyze_dataset
from bertkit.data.prepare import label_to_str, prepare_frame, serialize_rows, sort_label_names
from bertkit.errors import BertkitError, ConfigError, DataError

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"shared datasets not found at {DATA}")

SEMEVAL = ["anger", "anticipation", "disgust", "fear", "joy", "love", "optimism", "pessimism", "sadness",
           "surprise", "trust"]  # fmt: skip
# name: (task, text_columns, label_columns, label_names (None = don't check), id, group, is_pair)
EXPECTED = {
    "sst2": ("binary", ["text"], ["label"], ["0", "1"], None, None, False),
    "trec": (
        "multiclass",
        ["text"],
        ["label"],
        ["ABBR", "DESC", "ENTY", "HUM", "LOC", "NUM"],
        None,
        None,
        False,
    ),
    "emotion": ("multiclass", ["text"], ["label"], None, None, None, False),
    "semeval2018_ec": ("multilabel", ["text"], SEMEVAL, SEMEVAL, "id", None, False),
    "commonlit": ("regression", ["text"], ["label"], [], "id", None, False),
    "yelp_stars": ("ordinal", ["text"], ["label"], ["1", "2", "3", "4", "5"], None, None, False),
    "stsb": ("regression", ["text_a", "text_b"], ["label"], [], None, None, True),
    "mrpc": ("binary", ["text_a", "text_b"], ["label"], ["0", "1"], None, None, True),
    "wikiqa": ("binary", ["text_a", "text_b"], ["label"], ["0", "1"], None, "query_id", True),
}


@needs_data
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_datasets(name: str) -> None:
    path = DATA / name / "train.csv"
    if not path.exists():
        pytest.skip(f"{path} not present")
    task, texts, labels, names, id_col, group, pair = EXPECTED[name]
    prof = analyze_dataset(path)
    assert prof.task == task, prof.notes
    assert prof.text_columns == texts
    assert prof.label_columns == labels
    if names is not None:
        assert prof.label_names == names
    assert (prof.id_column, prof.group_column, prof.is_pair) == (id_col, group, pair)
    assert prof.template is None
    assert 32 <= prof.recommended_max_length <= 512 and prof.recommended_max_length % 32 == 0
    assert prof.notes and prof.recommended_head and prof.recommended_loss
    if task == "regression":
        assert prof.recommended_pooling == "mean" and set(prof.target_stats) == {"mean", "std", "min", "max"}


@needs_data
def test_real_dataset_with_tokenizer_and_prepare() -> None:
    from bertkit.data.minilm import minilm_tokenizer

    path = DATA / "emotion" / "validation.csv"
    if not path.exists():
        pytest.skip(f"{path} not present")
    prof = analyze_dataset(path, minilm_tokenizer())
    assert prof.task == "multiclass" and len(prof.label_names) == 6
    assert set(prof.token_length_percentiles) == {"p50", "p90", "p95", "p99", "max"}
    assert prof.token_length_percentiles["p50"] <= prof.token_length_percentiles["p95"]
    assert sum(prof.label_distribution.values()) == prof.num_rows
    data = prepare_frame(pd.read_csv(path), prof)
    assert data.targets is not None and data.targets.dtype == np.int64 and data.targets.max() == 5


def _frame(n: int = 40) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    words = ["good", "bad", "movie", "plot", "actor", "scene", "boring", "great"]
    return pd.DataFrame(
        {
            "review": [" ".join(rng.choice(words, 8)) for _ in range(n)],
            "label": rng.integers(0, 2, n),
            "id": [f"r{i}" for i in range(n)],
        }
    )


def test_constructed_binary_and_json_round_trip() -> None:
    prof = analyze_dataset(_frame())
    assert (prof.task, prof.text_columns, prof.id_column) == ("binary", ["review"], "id")
    back = DatasetProfile.from_dict(json.loads(json.dumps(prof.to_dict())))
    assert back == prof
    text = prof.summary()
    assert "binary" in text and "review" in text and "\n" in text
    with pytest.raises(ConfigError):
        DatasetProfile.from_dict({"source": "x"})


def test_multilabel_formats() -> None:
    df = pd.DataFrame(
        {
            "text": [f"tweet number {i} about things" for i in range(8)],
            "labels": ["joy;love", "anger", "joy", "anger;fear", None, "love;joy", "fear", "anger;joy"],
        }
    )
    prof = analyze_dataset(df)
    assert prof.task == "multilabel" and prof.multilabel_delimiter == ";"
    assert prof.label_names == ["anger", "fear", "joy", "love"]
    delimited = prepare_frame(df, prof).targets
    for name in prof.label_names:
        df[name] = [int(name in str(v).split(";")) for v in df["labels"]]
    prof2 = analyze_dataset(df)  # 0/1 columns win over the delimited column
    assert prof2.label_columns == ["anger", "fear", "joy", "love"] and prof2.multilabel_delimiter is None
    binary = prepare_frame(df, prof2).targets
    forced = analyze_dataset(df, label_column="labels")  # an explicit delimited column stays delimited
    assert (
        forced.task == "multilabel"
        and forced.multilabel_delimiter == ";"
        and forced.label_columns == ["labels"]
    )
    assert delimited is not None and binary is not None and delimited.dtype == np.float32
    np.testing.assert_array_equal(delimited, binary)
    assert delimited.shape == (8, 4) and delimited[4].sum() == 0  # empty labels = no label, row kept
    bad = df.copy()
    bad.loc[0, "labels"] = "joy;surprise"
    with pytest.raises(DataError, match="unseen at training time: 'surprise'"):
        prepare_frame(bad, prof)
    only_cols = df.drop(columns=["labels"])
    assert analyze_dataset(only_cols).task == "multilabel"


def test_regression_ordinal_multiclass_rules() -> None:
    n = 60
    base = _frame(n)
    reg = base.assign(label=np.linspace(-2, 2, n), standard_error=0.5)
    assert analyze_dataset(reg).task == "regression"
    stars = base.drop(columns="label").assign(stars=np.arange(n) % 5 + 1)
    prof = analyze_dataset(stars)
    assert prof.task == "ordinal" and prof.label_names == ["1", "2", "3", "4", "5"]
    assert prof.recommended_head == "ordinal_regression" and prof.recommended_pooling == "mean"
    plain = base.assign(label=np.arange(n) % 5 + 1)
    assert analyze_dataset(plain).task == "multiclass"  # no order hint, not a ratings file
    assert analyze_dataset(plain, task="ordinal").task == "ordinal"
    assert analyze_dataset(reg, task="regression").label_names == []
    many = base.assign(label=np.arange(n) % 12)
    prof = analyze_dataset(many)
    assert (
        prof.task == "multiclass" and prof.label_names[:3] == ["0", "1", "2"] and prof.label_names[-1] == "11"
    )
    with pytest.raises(DataError, match="binary"):
        analyze_dataset(plain, task="binary")
    with pytest.raises(ConfigError):
        analyze_dataset(plain, task="banana")


def test_overrides_and_missing_columns() -> None:
    df = _frame().assign(title=["t"] * 40, grade=np.arange(40) % 3)
    prof = analyze_dataset(df, text_column="title", label_column="grade")
    assert prof.text_columns == ["title"] and prof.label_columns == ["grade"] and prof.task == "ordinal"
    with pytest.raises(DataError, match="'nope'.*available columns: 'review', 'label'"):
        analyze_dataset(df, label_column="nope")
    with pytest.raises(DataError, match="available columns"):
        analyze_dataset(df, text_columns=["review", "missing"])
    pair = analyze_dataset(df, text_columns=["title", "review"])
    assert pair.is_pair and pair.text_columns == ["title", "review"]


def test_group_and_id_detection() -> None:
    df = pd.DataFrame(
        {
            "qid": np.repeat(np.arange(10), 4),
            "query": [f"what is this question {i // 4}" for i in range(40)],
            "passage": [f"a candidate passage sentence number {i}" for i in range(40)],
            "label": np.arange(40) % 4 == 0,
            "doc_id": np.arange(40),
        }
    )
    prof = analyze_dataset(df)
    assert prof.group_column == "qid" and prof.id_column == "doc_id"
    assert prof.is_pair and prof.text_columns == ["query", "passage"]
    assert prof.task == "binary" and prof.label_names == ["False", "True"]


def test_tabular_template_auto_and_user_template() -> None:
    df = pd.DataFrame(
        {
            "color": ["red", "blue", "green", "red"] * 5,
            "size": [1.0, 2.5, np.nan, 4.0] * 5,
            "shape": ["sq", "ci", "tr", "sq"] * 5,
            "target": [0, 1, 2, 0] * 5,
        }
    )
    prof = analyze_dataset(df)
    assert prof.template == "auto" and prof.text_columns == ["color", "size", "shape"]
    assert not prof.is_pair and any("template" in n for n in prof.notes)
    texts = serialize_rows(df.head(3), "auto", prof.text_columns)
    assert texts[0] == "color: red [SEP] size: 1 [SEP] shape: sq"
    assert texts[2] == "color: green [SEP] size:  [SEP] shape: tr"
    assert serialize_rows(df.head(1), "auto", ["color"], sep_token="</s>") == ["color: red"]
    user = serialize_rows(df.head(2), "{color} [SEP] {shape}", None, sep_token="</s>")
    assert user == ["red </s> sq", "blue </s> ci"]
    with pytest.raises(DataError, match="'missing'.*color"):
        serialize_rows(df, "{missing} [SEP] {color}")
    prof2 = analyze_dataset(df, template="{color} is {shape}")
    assert prof2.text_columns == ["color", "shape"]
    data = prepare_frame(df, prof2)
    assert data.texts_a[0] == "red is sq" and data.texts_b is None


def test_label_strings() -> None:
    assert [label_to_str(v) for v in (1, 1.0, "1", " 1 ", np.int64(1), "1.00")] == ["1"] * 6
    assert sort_label_names(["10", "2", 1, "b", "a"]) == ["1", "2", "10", "a", "b"]


def test_prepare_drops_with_warning_and_strict() -> None:
    df = _frame(10).assign(label=["pos", "neg"] * 5)
    prof = analyze_dataset(df)
    df.loc[1, "review"] = "   "
    df.loc[4, "review"] = None
    df.loc[6, "label"] = None
    with pytest.warns(
        UserWarning, match=r"dropped 3 of 10 rows: 2 empty text, 1 missing label; use --strict"
    ):
        data = prepare_frame(df, prof)
    assert data.row_index.tolist() == [0, 2, 3, 5, 7, 8, 9]
    assert data.ids == [f"r{i}" for i in data.row_index]
    assert data.targets is not None and data.targets.tolist() == [1, 1, 0, 0, 0, 1, 0]
    with pytest.raises(DataError, match="3 of 10 rows are unusable: 2 empty text, 1 missing label"):
        prepare_frame(df, prof, strict=True)
    with pytest.warns(UserWarning, match="2 empty text"):
        pred = prepare_frame(df.drop(columns=["label"]), prof, require_labels=False)
    assert pred.targets is None and len(pred) == 8
    with pytest.raises(DataError, match="label column 'label' not found"):
        prepare_frame(df.drop(columns=["label"]), prof)
    with pytest.raises(DataError, match="text column 'review' not found.*available columns"):
        prepare_frame(df.rename(columns={"review": "body"}), prof)


def test_prepare_unseen_labels_pairs_and_regression() -> None:
    df = _frame(10).assign(label=["a", "b"] * 5)
    prof = analyze_dataset(df)
    test = df.assign(label=["a", "foo", "foo", "bar", "b", "a", "a", "a", "a", "a"])
    with pytest.raises(DataError) as info:
        prepare_frame(test, prof)
    assert "3 rows have labels unseen at training time: 'foo' (2), 'bar' (1); known labels: a, b" in str(
        info.value
    )
    ints = _frame(10).assign(label=[1, 2] * 5)
    p_int = analyze_dataset(ints)
    as_text = ints.assign(label=["1", "2"] * 5)  # "1" and 1 match
    assert prepare_frame(as_text, p_int).targets.tolist() == [0, 1] * 5  # type: ignore[union-attr]
    pairs = pd.DataFrame(
        {
            "sentence1": ["a cat sat here today"] * 4,
            "sentence2": ["x", "y", "z", "w"],
            "score": [0.5, 1.5, 2.25, 3.0],
        }
    )
    pp = analyze_dataset(pairs)
    assert pp.task == "regression" and pp.is_pair and pp.recommended_pooling == "mean"
    data = prepare_frame(pairs, pp)
    assert (
        data.texts_b == ["x", "y", "z", "w"] and data.targets is not None and data.targets.dtype == np.float32
    )
    multi = pairs.assign(score2=[1.0, 2.0, 3.0, 4.5])
    pm = analyze_dataset(multi, label_columns=["score", "score2"])
    assert pm.task == "regression" and pm.num_labels == 2
    assert prepare_frame(multi, pm).targets.shape == (4, 2)  # type: ignore[union-attr]
    with pytest.raises(DataError, match="non-numeric"):
        prepare_frame(pairs.assign(score=["1", "x", "2", "3"]), pp)


def test_errors_are_bertkit_errors() -> None:
    with pytest.raises(DataError, match="no label column"):
        analyze_dataset(pd.DataFrame({"text": ["a long enough text for sure"] * 3}))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(BertkitError):
            analyze_dataset(pd.DataFrame({"label": [1, 0]}))
