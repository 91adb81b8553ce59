"""Tests for bertkit.data.readers.read_table on small files written to tmp_path."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pandas as pd
import pytest

from bertkit.data.readers import read_table
from bertkit.errors import DataError


def _raises(path: Path, *needles: str) -> str:
    with pytest.raises(DataError) as info:
        read_table(path)
    msg = str(info.value)
    assert "\n" not in msg, "error messages must be one line"
    assert "Traceback" not in msg
    for needle in needles:
        assert needle.lower() in msg.lower(), f"{needle!r} not in {msg!r}"
    return msg


def test_csv_with_bom_and_padded_header(tmp_path: Path) -> None:
    path = tmp_path / "bom.csv"
    path.write_bytes(b'\xef\xbb\xbf text , label \nhello world,1\n"a, quoted",0\n')
    df = read_table(path)
    assert list(df.columns) == ["text", "label"]
    assert df["text"].tolist() == ["hello world", "a, quoted"]
    assert df["label"].tolist() == [1, 0]


@pytest.mark.parametrize(
    ("name", "sep"),
    [("data.tsv", "\t"), ("semi.csv", ";"), ("pipe.txt", "|"), ("tab_as.csv", "\t"), ("plain.csv", ",")],
)
def test_separator_is_sniffed(tmp_path: Path, name: str, sep: str) -> None:
    rows = [["text", "label", "extra"], ["one, two; three", "a", "x"], ["four", "b", "y"], ["five", "c", "z"]]
    if sep != ",":
        body = "\n".join(sep.join(r) for r in rows) + "\n"
    else:
        body = 'text,label,extra\n"one, two; three",a,x\nfour,b,y\nfive,c,z\n'
    if sep == ";":
        body = body.replace("one, two; three", "one, two | three")
    if sep == "|":
        body = body.replace("one, two; three", "one, two; three\t")
    path = tmp_path / name
    path.write_text(body, encoding="utf-8")
    df = read_table(path)
    assert list(df.columns) == ["text", "label", "extra"]
    assert len(df) == 3
    assert df["label"].tolist() == ["a", "b", "c"]


def test_parquet_jsonl_json_and_gzip(tmp_path: Path) -> None:
    frame = pd.DataFrame({"text": ["a", "b"], "label": [0, 1]})
    frame.to_parquet(tmp_path / "d.parquet")
    pd.testing.assert_frame_equal(read_table(tmp_path / "d.parquet"), frame, check_dtype=False)
    (tmp_path / "d.jsonl").write_text('{"text": "a", "label": 0}\n\n{"text": "b", "label": 1}\n')
    assert read_table(tmp_path / "d.jsonl")["label"].tolist() == [0, 1]
    (tmp_path / "d.ndjson").write_text('{"text": "a", "label": 0}\n')
    assert len(read_table(tmp_path / "d.ndjson")) == 1
    (tmp_path / "d.json").write_text(json.dumps([{"text": "a", "label": 0}, {"text": "b", "label": 1}]))
    assert read_table(tmp_path / "d.json")["text"].tolist() == ["a", "b"]
    (tmp_path / "cols.json").write_text(json.dumps({"text": ["a", "b"], "label": [0, 1]}))
    assert read_table(tmp_path / "cols.json").shape == (2, 2)
    with gzip.open(tmp_path / "z.csv.gz", "wt") as fh:
        fh.write("text;label\nx;1\ny;0\n")
    assert list(read_table(tmp_path / "z.csv.gz").columns) == ["text", "label"]


def test_dataframe_passthrough_is_a_copy(tmp_path: Path) -> None:
    frame = pd.DataFrame({" text ": ["a"], "label": [1]})
    out = read_table(frame)
    assert list(out.columns) == ["text", "label"]
    out.loc[0, "label"] = 5
    assert frame["label"].tolist() == [1]
    assert list(frame.columns) == [" text ", "label"]


def test_missing_empty_and_folder(tmp_path: Path) -> None:
    _raises(tmp_path / "nope.csv", "nope.csv", "does not exist")
    (tmp_path / "empty.csv").write_bytes(b"")
    _raises(tmp_path / "empty.csv", "empty.csv", "empty")
    (tmp_path / "blank.csv").write_text("\n\n  \n")
    _raises(tmp_path / "blank.csv", "blank.csv")
    _raises(tmp_path, "folder")


def test_header_only_and_zero_rows(tmp_path: Path) -> None:
    (tmp_path / "h.csv").write_text("text,label\n")
    _raises(tmp_path / "h.csv", "h.csv", "zero data rows")
    with pytest.raises(DataError, match="zero data rows"):
        read_table(pd.DataFrame({"text": []}))


def test_binary_garbage(tmp_path: Path) -> None:
    (tmp_path / "g.csv").write_bytes(bytes(range(256)) * 20)
    _raises(tmp_path / "g.csv", "g.csv", "binary")


def test_malformed_csv_names_line(tmp_path: Path) -> None:
    (tmp_path / "bad.csv").write_text("text,label\na,1\nb,2\nc,3,oops,more\nd,4\n")
    msg = _raises(tmp_path / "bad.csv", "bad.csv", "line 4")
    assert "quote" in msg


def test_malformed_jsonl_and_json(tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n{"text": "b"}\n{"text": \n')
    _raises(tmp_path / "bad.jsonl", "bad.jsonl", "line 3")
    (tmp_path / "list.jsonl").write_text('{"text": "a"}\n[1, 2]\n')
    _raises(tmp_path / "list.jsonl", "line 2", "not an object")
    (tmp_path / "bad.json").write_text('[{"text": "a"},')
    _raises(tmp_path / "bad.json", "bad.json", "invalid json")
    (tmp_path / "scalar.json").write_text("42")
    _raises(tmp_path / "scalar.json", "list of records")


def test_fake_parquet(tmp_path: Path) -> None:
    (tmp_path / "fake.parquet").write_text("text,label\na,1\n")
    _raises(tmp_path / "fake.parquet", "fake.parquet", "not a valid parquet")
    (tmp_path / "trunc.parquet").write_bytes(b"PAR1" + b"\x00" * 30 + b"PAR1")
    _raises(tmp_path / "trunc.parquet", "trunc.parquet", "parquet")


def test_duplicate_columns(tmp_path: Path) -> None:
    (tmp_path / "dup.csv").write_text("text,label,text\na,1,b\n")
    _raises(tmp_path / "dup.csv", "dup.csv", "duplicate", "text")
    (tmp_path / "dup2.csv").write_text("text,label, text\na,1,b\n")
    _raises(tmp_path / "dup2.csv", "duplicate")
    with pytest.raises(DataError, match="duplicate"):
        read_table(pd.DataFrame([[1, 2]], columns=["a", "a "]))


def test_latin1_fallback_warns(tmp_path: Path) -> None:
    (tmp_path / "l1.csv").write_bytes("text,label\ncaf\u00e9,1\n".encode("latin-1"))
    with pytest.warns(UserWarning, match="Latin-1"):
        df = read_table(tmp_path / "l1.csv")
    assert df["text"].tolist() == ["caf\u00e9"]


def test_unknown_suffix_is_sniffed(tmp_path: Path) -> None:
    (tmp_path / "data.dat").write_text('{"text": "a", "label": 1}\n')
    assert read_table(tmp_path / "data.dat")["label"].tolist() == [1]
    (tmp_path / "data2").write_text("text\tlabel\na\t1\n")
    assert list(read_table(tmp_path / "data2").columns) == ["text", "label"]
