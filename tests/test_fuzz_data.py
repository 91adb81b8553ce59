"""Fuzz tests: whatever the input, read_table/analyze_dataset/prepare_frame return or raise BertkitError."""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bertkit.data.analyze import DatasetProfile, analyze_dataset
from bertkit.data.prepare import prepare_frame
from bertkit.data.readers import read_table
from bertkit.errors import BertkitError

FUZZ = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SUFFIXES = [".csv", ".tsv", ".txt", ".jsonl", ".ndjson", ".json", ".parquet", ".dat", ".csv.gz"]


def _pipeline(source: Any) -> None:
    """Run read → analyze → prepare; only BertkitError may escape (caught here), anything else fails."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            df = read_table(source)
            prof = analyze_dataset(df)
            prof.summary()
            assert DatasetProfile.from_dict(json.loads(json.dumps(prof.to_dict(), allow_nan=False))) == prof
            prepare_frame(df, prof)
            prepare_frame(df, prof, require_labels=False)
        except BertkitError as exc:
            assert "\n" not in str(exc), "BertkitError messages must be one line"


@contextmanager
def _written(data: bytes, suffix: str) -> Iterator[Path]:
    with tempfile.TemporaryDirectory(prefix="bertkit-fuzz-") as folder:
        path = Path(folder) / f"data{suffix}"
        path.write_bytes(data)
        yield path


@FUZZ
@given(data=st.binary(max_size=3000), suffix=st.sampled_from(SUFFIXES))
def test_random_bytes(data: bytes, suffix: str) -> None:
    with _written(data, suffix) as path:
        _pipeline(path)
        _pipeline(str(path))


CSV_ALPHABET = list("ab1 0.,;\t|\"'\n\r\\{}[]:") + ["é", "\ufeff", "\x00"]


@FUZZ
@given(
    text=st.text(alphabet=st.sampled_from(CSV_ALPHABET), max_size=400),
    header=st.sampled_from(["text,label\n", "text;label;extra\n", "a\tb\n", "", "label,text,text\n"]),
    suffix=st.sampled_from([".csv", ".tsv", ".txt", ".jsonl", ".json"]),
)
def test_malformed_text_files(text: str, header: str, suffix: str) -> None:
    with _written((header + text).encode("utf-8"), suffix) as path:
        _pipeline(path)


VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["", " ", "a;b", "x|y", "0", "1", "1.0", "nan", "label"]),
    st.lists(st.integers(), max_size=2),
)
NAMES = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["text", "label", "labels", "id", "qid", "text_a", "text_b", "stars", "y", " text "]),
    st.integers(-2, 2),
)


@st.composite
def odd_frames(draw: st.DrawFn) -> pd.DataFrame:
    ncols = draw(st.integers(0, 5))
    nrows = draw(st.integers(0, 8))
    kind = draw(st.sampled_from(["mixed", "numeric", "nan", "text"]))
    columns = []
    for _ in range(ncols):
        if kind == "numeric":
            col = draw(st.lists(st.integers(0, 3) | st.floats(-1e6, 1e6), min_size=nrows, max_size=nrows))
        elif kind == "nan":
            col = [np.nan] * nrows
        elif kind == "text":
            col = draw(st.lists(st.text(min_size=0, max_size=60), min_size=nrows, max_size=nrows))
        else:
            col = draw(st.lists(VALUES, min_size=nrows, max_size=nrows))
        columns.append(col)
    unique = draw(st.booleans())  # duplicate names are a case too, but should not hide the later stages
    names = draw(
        st.lists(
            NAMES, min_size=ncols, max_size=ncols, unique_by=(lambda n: str(n).strip()) if unique else None
        )
    )
    if ncols and draw(st.booleans()):  # usually give it a label-like column so analyze/prepare get exercised
        names[-1] = draw(st.sampled_from(["label", "labels", "stars", "target"]))
        if unique:
            names = [
                n if i == ncols - 1 or str(n).strip() != names[-1] else f"x{i}" for i, n in enumerate(names)
            ]
    df = pd.DataFrame(
        {i: pd.Series(c, dtype=object if kind == "mixed" else None) for i, c in enumerate(columns)}
    )
    if ncols:
        df.columns = names
    return df


@FUZZ
@given(df=odd_frames())
def test_odd_dataframes(df: pd.DataFrame) -> None:
    _pipeline(df)


@FUZZ
@given(df=odd_frames(), suffix=st.sampled_from([".csv", ".jsonl", ".parquet"]))
def test_odd_dataframes_through_files(df: pd.DataFrame, suffix: str) -> None:
    with tempfile.TemporaryDirectory(prefix="bertkit-fuzz-") as folder:
        path = Path(folder) / f"frame{suffix}"
        try:
            frame = df.copy()
            names = [str(c) for c in frame.columns]
            frame.columns = [
                n if names.index(n) == i else f"{n}_{i}" for i, n in enumerate(names)
            ]  # unique names
            if suffix == ".csv":
                frame.to_csv(path, index=False)
            elif suffix == ".jsonl":
                frame.to_json(path, orient="records", lines=True)
            else:
                frame.astype(str).to_parquet(path)
        except Exception:  # the writer itself cannot store this frame: nothing to read back
            return
        _pipeline(path)
