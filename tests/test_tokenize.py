"""Tests for bertkit.data.tokenize (truncation, dataset, collator) and bertkit.data.samplers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bertkit.data.samplers import LengthBucketBatchSampler, restore_order, sorted_inference_batches
from bertkit.data.tokenize import Collator, TokenizedDataset, tokenize_texts
from bertkit.errors import ConfigError


@pytest.fixture(scope="module")
def tok():  # noqa: ANN201
    from bertkit.data.minilm import minilm_tokenizer

    return minilm_tokenizer()


LONG = " ".join(f"w{i}" for i in range(200))  # many word pieces


def _plain(tok, text: str) -> list[int]:  # noqa: ANN001
    return tok(text, add_special_tokens=False)["input_ids"]


def test_minilm_path() -> None:
    from bertkit.data.minilm import minilm_path

    assert (minilm_path() / "config.json").is_file()


def test_head_tail_and_head_tail_keep_the_right_tokens(tok) -> None:  # noqa: ANN001
    full = _plain(tok, LONG)
    cls, sep = tok.cls_token_id, tok.sep_token_id
    max_len = 34
    budget = max_len - 2
    head = tokenize_texts(tok, [LONG], max_length=max_len, truncation="head")
    assert head["input_ids"][0] == [cls] + full[:budget] + [sep]
    assert head["token_type_ids"][0] == [0] * max_len
    tail = tokenize_texts(tok, [LONG], max_length=max_len, truncation="tail")
    assert tail["input_ids"][0] == [cls] + full[-budget:] + [sep]
    assert tail["token_type_ids"][0] == [0] * max_len
    ht = tokenize_texts(tok, [LONG], max_length=max_len, truncation="head_tail")
    h = budget // 4
    assert ht["input_ids"][0] == [cls] + full[:h] + full[-(budget - h) :] + [sep]
    short = ["a short text", ""]
    expected = tok(short)["input_ids"]
    for strategy in ("head", "tail", "head_tail"):
        assert tokenize_texts(tok, short, max_length=max_len, truncation=strategy)["input_ids"] == expected


def test_pairs_and_errors(tok) -> None:  # noqa: ANN001
    out = tokenize_texts(tok, ["first text here", LONG], ["second", "other " * 100], max_length=24)
    assert all(len(x) <= 24 for x in out["input_ids"])
    assert 1 in out["token_type_ids"][0] and out["token_type_ids"][0][0] == 0
    assert out["input_ids"][0].count(tok.sep_token_id) == 2
    with pytest.raises(ConfigError, match="pairs"):
        tokenize_texts(tok, ["a"], ["b"], truncation="tail")
    with pytest.raises(ConfigError, match="unknown truncation"):
        tokenize_texts(tok, ["a"], truncation="middle")
    with pytest.raises(ConfigError):
        tokenize_texts(tok, ["a"], max_length=2)
    with pytest.raises(ConfigError):
        tokenize_texts(tok, ["a", "b"], ["c"])
    assert tokenize_texts(tok, [], max_length=16)["input_ids"] == []


def test_dataset_and_collator(tok) -> None:  # noqa: ANN001
    feats = tokenize_texts(tok, ["one", "two three four five", "six seven"], max_length=16)
    ds = TokenizedDataset(feats, np.array([0, 1, 2], dtype=np.int64))
    assert len(ds) == 3 and ds.lengths == [3, 6, 4]
    item = ds[1]
    assert set(item) == {"input_ids", "token_type_ids", "labels"}
    batch = Collator(pad_token_id=tok.pad_token_id)([ds[0], ds[1]])
    assert batch["input_ids"].shape == (2, 6) and batch["input_ids"].dtype == torch.long
    assert batch["attention_mask"].tolist() == [[1, 1, 1, 0, 0, 0], [1] * 6]
    assert batch["input_ids"][0, 3:].tolist() == [tok.pad_token_id] * 3
    assert batch["labels"].dtype == torch.long and batch["labels"].tolist() == [0, 1]
    left = Collator(pad_token_id=7, padding_side="left", pad_to_multiple_of=8)([ds[0], ds[1]])
    assert left["input_ids"].shape == (2, 8)
    assert left["input_ids"][0].tolist() == [7] * 5 + feats["input_ids"][0]
    assert left["attention_mask"][0].tolist() == [0] * 5 + [1] * 3
    assert left["token_type_ids"].shape == (2, 8)
    multi = TokenizedDataset({"input_ids": [[1, 2], [3]]}, np.array([[0, 1], [1, 1]], dtype=np.float32))
    mb = Collator.from_tokenizer(tok)([multi[0], multi[1]])
    assert mb["labels"].dtype == torch.float32 and mb["labels"].shape == (2, 2) and "token_type_ids" not in mb
    reg = TokenizedDataset({"input_ids": [[1], [2]]}, np.array([0.5, 1.5]))  # float64 → float32
    assert Collator()([reg[0], reg[1]])["labels"].dtype == torch.float32
    with pytest.raises(ConfigError):
        TokenizedDataset({"input_ids": [[1]]}, np.zeros(2))


def _mean_padding(batches: list[list[int]], lengths: np.ndarray) -> float:
    return float(np.mean([lengths[b].max() - lengths[b].mean() for b in batches]))


def test_length_bucket_sampler() -> None:
    rng = np.random.default_rng(1)
    lengths = rng.integers(5, 300, size=1003)
    sampler = LengthBucketBatchSampler(lengths, batch_size=16, seed=3, bucket_multiplier=10)
    epoch0 = list(sampler)
    assert len(epoch0) == len(sampler) == 63
    assert sorted(i for b in epoch0 for i in b) == list(range(1003))
    assert list(sampler) == epoch0  # deterministic for (seed, epoch)
    sampler.set_epoch(1)
    epoch1 = list(sampler)
    assert epoch1 != epoch0 and sorted(i for b in epoch1 for i in b) == list(range(1003))
    random_batches = [p.tolist() for p in np.array_split(rng.permutation(1003), 63)]
    assert _mean_padding(epoch0, lengths) < 0.2 * _mean_padding(random_batches, lengths)
    dropped = LengthBucketBatchSampler(lengths, batch_size=16, drop_last=True)
    assert len(list(dropped)) == len(dropped) == 62 and all(len(b) == 16 for b in dropped)
    fixed = LengthBucketBatchSampler(lengths, batch_size=16, shuffle=False)
    assert sorted(i for b in fixed for i in b) == list(range(1003))


def test_sampler_ddp_shards() -> None:
    lengths = np.arange(100) % 37
    shards = [list(LengthBucketBatchSampler(lengths, 8, num_processes=3, process_index=r)) for r in range(3)]
    assert len({len(s) for s in shards}) == 1 and len(shards[0]) == 5  # 13 batches padded to 15
    seen = {i for s in shards for b in s for i in b}
    assert seen == set(range(100))
    with pytest.raises(ConfigError):
        LengthBucketBatchSampler(lengths, 8, num_processes=2, process_index=2)


def test_sorted_inference_and_restore_order() -> None:
    lengths = np.array([3, 9, 1, 7, 5])
    batches = sorted_inference_batches(lengths, 2)
    assert batches == [[1, 3], [4, 0], [2]]
    outputs = [np.stack([lengths[b] * 10, lengths[b]], axis=1) for b in batches]  # [B, 2]
    restored = restore_order(batches, outputs)
    assert restored[:, 1].tolist() == lengths.tolist() and restored.shape == (5, 2)
    with pytest.raises(ConfigError):
        restore_order(batches, outputs[:2])


def test_bucket_sampler_keeps_an_epoch_as_arrays() -> None:
    """A million-row epoch is planned in index arrays; batches become lists one at a time (bounded memory)."""
    import tracemalloc

    lengths = np.random.default_rng(0).integers(5, 60, 500_000).astype(np.int32)
    sampler = LengthBucketBatchSampler(lengths, batch_size=32, seed=0)
    tracemalloc.start()
    it = iter(sampler)
    first = next(it)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(first) == 32
    # the int64 order and the batch plan take ≈ 4 MB; lists of Python ints for every row took ≈ 24 MB
    assert peak < 12 * 2**20, f"planning one epoch of 500k rows took {peak / 2**20:.1f} MB"
