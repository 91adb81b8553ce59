"""On-disk token cache: equals in-memory tokenization, hits on rerun, lazy reads, flat memory, train switch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from conftest import REPO_ROOT

from bertkit.data import TokenizedDataset, analyze_dataset, prepare_frame, read_table, tokenize_texts
from bertkit.data.cache import CachedTokenDataset, cached_dataset_from_file, cached_dataset_from_texts
from bertkit.data.tokenize import Collator

DEMO = REPO_ROOT / "bertkit" / "data" / "examples" / "demo_reviews.csv"


def _generated_csv(path: Path, rows: int) -> Path:
    """``rows`` rows cycling through the demo reviews (real sentences) with a running id."""
    src = read_table(DEMO)
    reps = -(-rows // len(src))
    df = pd.concat([src] * reps, ignore_index=True).iloc[:rows]
    df = df.assign(id=[f"r{i}" for i in range(rows)])
    df.loc[7, "text"] = ""  # one unusable row: dropped and skipped in row_index
    df.to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def big_csv(tmp_path_factory: Any) -> Path:
    return _generated_csv(tmp_path_factory.mktemp("data") / "big.csv", 20_000)


def test_cached_file_equals_in_memory_tokenization_and_hits(
    big_csv: Path, tokenizer: Any, tmp_path: Path
) -> None:
    df = read_table(big_csv)
    profile = analyze_dataset(df.iloc[:2000])
    with pytest.warns(UserWarning, match="1 rows"):
        ds = cached_dataset_from_file(
            big_csv, profile, tokenizer, tmp_path, max_length=24, chunksize=3000, num_workers=2
        )
    prep = prepare_frame(df, profile)
    ref = TokenizedDataset(tokenize_texts(tokenizer, prep.texts_a, max_length=24), prep.targets)
    assert len(ds) == len(ref) == 19_999
    assert np.array_equal(ds.row_index, prep.row_index)
    assert np.array_equal(ds.lengths, np.asarray(ref.lengths)) and np.array_equal(ds.targets, prep.targets)
    for i in [0, 1, 6, 7, 2999, 3000, 12_345, len(ds) - 1]:
        assert ds[i]["input_ids"].tolist() == ref[i]["input_ids"]
        assert ds[i]["token_type_ids"].tolist() == ref[i]["token_type_ids"]
        assert int(ds[i]["labels"]) == int(ref[i]["labels"])
    collate = Collator.from_tokenizer(tokenizer)
    a, b = collate([ds[i] for i in range(5)]), collate([ref[i] for i in range(5)])
    assert all(np.array_equal(a[k].numpy(), b[k].numpy()) for k in b)
    # the second load is a cache hit (same folder, nothing rebuilt)
    stamp = (ds.folder / "meta.json").stat().st_mtime_ns
    again = cached_dataset_from_file(big_csv, profile, tokenizer, tmp_path, max_length=24, chunksize=3000)
    assert again.folder == ds.folder and (again.folder / "meta.json").stat().st_mtime_ns == stamp
    # another max_length (or file content) is another entry
    with pytest.warns(UserWarning, match="1 rows"):
        other = cached_dataset_from_file(
            big_csv, profile, tokenizer, tmp_path, max_length=16, chunksize=5000, num_workers=1
        )
    assert other.folder != ds.folder and int(other.lengths.max()) <= 16
    assert isinstance(ds.lengths, np.memmap) and isinstance(ds.input_ids, np.memmap)


def test_cached_texts_and_subset(tokenizer: Any, tmp_path: Path) -> None:
    texts = ["one text", "two texts here", "three", ""]
    targets = np.array([[0.5, 1.0], [1.5, 2.0], [2.5, 3.0], [3.5, 4.0]], dtype=np.float64)
    ds = cached_dataset_from_texts(
        texts, None, targets, tokenizer, tmp_path, max_length=8, truncation="head_tail"
    )
    ref = TokenizedDataset(tokenize_texts(tokenizer, texts, max_length=8, truncation="head_tail"), targets)
    assert [ds[i]["input_ids"].tolist() for i in range(4)] == [ref[i]["input_ids"] for i in range(4)]
    assert ds.targets is not None and ds.targets.dtype == np.float32 and ds.targets.shape == (4, 2)
    sub = ds.subset([3, 1])
    assert len(sub) == 2 and sub.lengths.tolist() == [ds.lengths[3], ds.lengths[1]]
    assert sub[0]["input_ids"].tolist() == ref[3]["input_ids"]
    assert (
        cached_dataset_from_texts(texts, None, targets, tokenizer, tmp_path, 8, "head_tail").folder
        == ds.folder
    )
    changed = cached_dataset_from_texts(texts, None, targets + 1, tokenizer, tmp_path, 8, "head_tail")
    assert changed.folder != ds.folder
    pairs = cached_dataset_from_texts(["q1", "q2"], ["a1", "a2 longer"], None, tokenizer, tmp_path, 16)
    assert pairs.targets is None and "labels" not in pairs[0]
    assert (
        pairs[1]["token_type_ids"].tolist()
        == tokenize_texts(tokenizer, ["q2"], ["a2 longer"], 16)["token_type_ids"][0]
    )


def test_incomplete_entry_is_rejected(tmp_path: Path) -> None:
    (tmp_path / "half").mkdir()
    with pytest.raises(ValueError, match="not a complete token cache"):
        CachedTokenDataset(tmp_path / "half")


_RSS_CHILD = textwrap.dedent(
    """
    import json, resource, sys
    import numpy as np
    from bertkit.data import analyze_dataset, read_table
    from bertkit.data.cache import cached_dataset_from_file
    from bertkit.data.tokenize import Collator
    from bertkit.model import load_tokenizer
    path, cache = sys.argv[1], sys.argv[2]
    tok = load_tokenizer("minilm")
    profile = analyze_dataset(read_table(path).iloc[:1000])
    ds = cached_dataset_from_file(path, profile, tok, cache, max_length=24, chunksize=2000, num_workers=1)
    collate = Collator.from_tokenizer(tok)
    for start in range(0, len(ds), 64):  # read every row, as an epoch does
        collate([ds[i] for i in range(start, min(len(ds), start + 64))])
    print(json.dumps({"rows": len(ds), "max_rss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss}))
    """
)


def _peak_rss(csv: Path, cache: Path) -> dict[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", _RSS_CHILD, str(csv), str(cache)],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO_ROOT,
        env={
            "TOKENIZERS_PARALLELISM": "false",
            "HF_HUB_OFFLINE": "1",
            "PATH": "/usr/bin:/bin",
            **({"PYTHONPATH": os.environ["PYTHONPATH"]} if "PYTHONPATH" in os.environ else {}),
        },
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_memory_stays_flat_when_rows_grow(big_csv: Path, tmp_path: Path) -> None:
    small = _generated_csv(tmp_path / "small.csv", 5_000)
    a = _peak_rss(small, tmp_path / "cache")
    b = _peak_rss(big_csv, tmp_path / "cache")
    assert (a["rows"], b["rows"]) == (4_999, 19_999)
    # 4x the rows; in-memory token lists would add ~25 MB here. Allow 15 MB of allocator noise.
    assert b["max_rss_kb"] - a["max_rss_kb"] < 15_000, (a, b)


def test_train_run_uses_the_cache(tmp_path: Path, tokenizer: Any) -> None:
    from conftest import tiny_bert_config

    from bertkit.runconfig import build_run_config
    from bertkit.training.run import train_run

    cfg = build_run_config(
        "quick",
        overrides={
            "data": {"cache_dir": str(tmp_path / "cache"), "max_train_samples": 64},
            "model": {"bert_options": tiny_bert_config("bert"), "backbone": None},
            "training": {"epochs": 1, "batch_size": 16, "max_length": 24, "progress": False},
        },
    )
    result = train_run(DEMO, tmp_path / "run", cfg, write_report=False)
    entries = [p for p in (tmp_path / "cache").iterdir() if (p / "meta.json").is_file()]
    assert len(entries) >= 2  # train and validation rows
    assert result.metrics["train_rows"] == 64 and "accuracy" in result.metrics["valid"]
