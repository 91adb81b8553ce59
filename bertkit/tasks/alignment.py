"""Word → sub-token label alignment, sliding windows over long documents, and merging back to words.

Each document (a list of words) is tokenized once as the words joined by single spaces, with the offset
mapping giving each sub-token's word, so any fast tokenizer works (WordPiece, BPE, SentencePiece). The
sub-token sequence is cut into windows of at most ``max_length`` tokens (special tokens included) that
overlap by about ``stride`` tokens and start and end on word boundaries where possible. Within a window the
labels are ``-100`` on special tokens, padding and non-first sub-tokens (unless ``label_all_subtokens``),
and the window's tag sequence is re-encoded so it is valid on its own (an entity cut by the window start
begins with ``B-``), which keeps CRF training well defined.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from bertkit.errors import ConfigError, DataError
from bertkit.tasks.tags import check_scheme, normalize_tags, subtoken_tags, word_tag

IGNORE_INDEX = -100


def special_tokens_around(tokenizer: Any) -> tuple[list[int], list[int]]:
    """``(prefix, suffix)`` special token ids the tokenizer adds around one sequence (e.g. [CLS] / [SEP])."""
    with_sp = list(tokenizer("a", add_special_tokens=True)["input_ids"])
    without = list(tokenizer("a", add_special_tokens=False)["input_ids"])
    for i in range(len(with_sp) - len(without) + 1):
        if with_sp[i : i + len(without)] == without:
            return with_sp[:i], with_sp[i + len(without) :]
    return [], []


def _word_ids_for(tokenizer: Any, words: Sequence[str]) -> tuple[list[int], list[int]]:
    """Sub-token ids of the space-joined words and each sub-token's word index (-1 for none)."""
    text = " ".join(words)
    owner = np.full(len(text) + 1, -1, dtype=np.int64)
    pos = 0
    for w, word in enumerate(words):
        owner[pos : pos + len(word)] = w
        pos += len(word) + 1
    enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
    ids = list(enc["input_ids"])
    wids = []
    for start, end in enc["offset_mapping"]:
        chars = owner[start:end]
        chars = chars[chars >= 0]
        wids.append(int(chars[0]) if len(chars) else -1)
    return ids, wids


def _windows(word_ids: list[int], capacity: int, stride: int) -> list[tuple[int, int]]:
    """``[start, end)`` sub-token ranges covering the sequence, cut on word starts when possible."""
    n = len(word_ids)
    if n <= capacity:
        return [(0, n)]
    starts = [i for i in range(n) if word_ids[i] >= 0 and (i == 0 or word_ids[i - 1] != word_ids[i])]
    out: list[tuple[int, int]] = []
    begin = 0
    while True:
        end = min(begin + capacity, n)
        if end < n:
            cut = [s for s in starts if begin < s <= end]
            end = cut[-1] if cut else end
        out.append((begin, end))
        if end >= n:
            return out
        want = max(end - stride, begin + 1)
        back = [s for s in starts if begin < s <= want]
        ahead = [s for s in starts if want < s <= end]
        begin = back[-1] if back else (ahead[0] if ahead else want)


def align_labels(
    tokenizer: Any,
    words_batch: Sequence[Sequence[str]],
    tags_batch: Sequence[Sequence[str]] | None = None,
    label2id: dict[str, int] | None = None,
    max_length: int = 512,
    stride: int = 128,
    label_all_subtokens: bool = False,
    scheme: str = "BIO",
    padding: bool = False,
) -> list[dict[str, Any]]:
    """Tokenize word-level documents into model windows with aligned labels.

    Args:
        tokenizer: A fast tokenizer (offset mappings are required).
        words_batch: Words of each document.
        tags_batch: Tags of each document (None at inference: labels are all -100).
        label2id: Tag -> class id (required with ``tags_batch``); see :func:`~bertkit.tasks.tags.label_list`.
        max_length: Window length in tokens, special tokens included.
        stride: Approximate overlap of consecutive windows, in sub-tokens.
        label_all_subtokens: Label every sub-token (``B-X`` word -> ``B-X I-X ...``) instead of the first.
        scheme: ``"BIO"`` or ``"BIOES"``.
        padding: Pad every window to ``max_length`` (on the tokenizer's ``padding_side``).

    Returns:
        One dict per window: ``input_ids``, ``attention_mask`` (and ``token_type_ids`` when the tokenizer
        uses them), ``labels`` (ids, -100 where ignored), ``word_ids`` (document word index or None per
        position), ``word_mask`` (1 where a word label sits: pass it to the head so its CRF decodes exactly
        those positions), ``doc_index``, ``window_index`` and ``token_start`` (first sub-token of the window
        in the document).
    """
    scheme = check_scheme(scheme)
    if tags_batch is not None and label2id is None:
        raise ConfigError("align_labels needs label2id with tags_batch (e.g. from label_list(tags_batch))")
    prefix, suffix = special_tokens_around(tokenizer)
    capacity = max_length - len(prefix) - len(suffix)
    if capacity < 1:
        raise ConfigError(f"max_length={max_length} leaves no room for tokens after the special tokens")
    if not 0 <= stride < capacity:
        raise ConfigError(
            f"stride={stride} must be >= 0 and smaller than the window content ({capacity} tokens)"
        )
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with_types = "token_type_ids" in getattr(tokenizer, "model_input_names", [])
    out: list[dict[str, Any]] = []
    for d, words in enumerate(words_batch):
        ids, wids = _word_ids_for(tokenizer, words)
        counts = np.bincount([w for w in wids if w >= 0], minlength=len(words))
        sub_tags: list[str | None] = [None] * len(ids)
        seen: dict[int, int] = {}
        for i, w in enumerate(wids):
            if w < 0:
                continue
            k = seen.get(w, 0)
            seen[w] = k + 1
            if tags_batch is None:
                sub_tags[i] = "O" if (k == 0 or label_all_subtokens) else None
            elif k == 0 or label_all_subtokens:
                sub_tags[i] = subtoken_tags(str(tags_batch[d][w]), int(counts[w]), scheme)[k]
        for win, (a, b) in enumerate(_windows(wids, capacity, stride)):
            pos = [i for i in range(a, b) if sub_tags[i] is not None]
            labels_core = [IGNORE_INDEX] * (b - a)
            if tags_batch is not None and pos:
                fixed = normalize_tags([sub_tags[i] for i in pos], scheme)  # type: ignore[misc]
                for i, tag in zip(pos, fixed):
                    if tag not in label2id:  # type: ignore[operator]
                        raise DataError(
                            f"document {d}: tag '{tag}' is not in the label list {sorted(label2id)[:12]}"  # type: ignore[arg-type]
                        )
                    labels_core[i - a] = label2id[tag]  # type: ignore[index]
            marks = [1 if sub_tags[i] is not None else 0 for i in range(a, b)]
            row: dict[str, Any] = {
                "input_ids": prefix + ids[a:b] + suffix,
                "labels": [IGNORE_INDEX] * len(prefix) + labels_core + [IGNORE_INDEX] * len(suffix),
                "word_ids": [None] * len(prefix)
                + [w if w >= 0 else None for w in wids[a:b]]
                + [None] * len(suffix),
                "word_mask": [0] * len(prefix) + marks + [0] * len(suffix),
            }
            row["attention_mask"] = [1] * len(row["input_ids"])
            if with_types:
                row["token_type_ids"] = [0] * len(row["input_ids"])
            if padding:
                _pad(row, max_length, pad_id, tokenizer.padding_side)
            row.update({"doc_index": d, "window_index": win, "token_start": a})
            out.append(row)
    return out


_PAD_VALUES = {
    "input_ids": None,
    "attention_mask": 0,
    "token_type_ids": 0,
    "labels": IGNORE_INDEX,
    "word_ids": None,
    "word_mask": 0,
}


def _pad(row: dict[str, Any], length: int, pad_id: int, side: str) -> None:
    extra = length - len(row["input_ids"])
    for key, value in _PAD_VALUES.items():
        if key in row:
            fill = [pad_id if key == "input_ids" else value] * extra
            row[key] = fill + row[key] if side == "left" else row[key] + fill


def merge_window_predictions(
    windows: Sequence[dict[str, Any]],
    predictions: Sequence[Sequence[int]] | np.ndarray,
    num_words: Sequence[int],
    id2label: Sequence[str],
    label_all_subtokens: bool = False,
    scheme: str = "BIO",
    padding_side: str = "right",
    repair: bool = True,
) -> list[list[str]]:
    """Word-level tags per document from per-window predictions.

    Each word takes the prediction of the window where it has the most context on both sides (ties: the
    earlier window); words that got no sub-token (e.g. control characters) are ``"O"``.

    Args:
        windows: Output of :func:`align_labels` (for all documents).
        predictions: Per window, predicted class ids per position (rows may be padded longer than the
            window; ``padding_side`` tells where the padding is).
        num_words: Number of words of each document.
        id2label: Class id -> tag.
        label_all_subtokens: Windows were built with every sub-token labelled (the word's tag is rebuilt
            from all its sub-tokens).
        scheme: ``"BIO"`` or ``"BIOES"``.
        padding_side: ``"right"`` or ``"left"`` padding of ``predictions`` rows.
        repair: Re-encode each document's tags as a valid sequence of ``scheme``.

    Returns:
        One tag list per document (length ``num_words[d]``).
    """
    scheme = check_scheme(scheme)
    best: list[list[tuple[int, list[str]] | None]] = [[None] * n for n in num_words]
    for win, pred in zip(windows, predictions):
        n = len(win["input_ids"])
        pred = list(pred)
        pred = pred[len(pred) - n :] if padding_side == "left" else pred[:n]
        real = [i for i, w in enumerate(win["word_ids"]) if w is not None]
        if not real:
            continue
        lo, hi = real[0], real[-1]
        groups: dict[int, list[int]] = {}
        last: dict[int, int] = {}
        for i, (w, m) in enumerate(zip(win["word_ids"], win["word_mask"])):
            if w is not None:
                last[int(w)] = i
                if m:
                    groups.setdefault(int(w), []).append(i)
        for w, positions in groups.items():
            context = min(positions[0] - lo, hi - last[w])  # whole-word distance to the window edges
            cur = best[win["doc_index"]][w]
            if cur is None or context > cur[0]:
                tags = [id2label[int(pred[i])] for i in positions]
                best[win["doc_index"]][w] = (context, tags if label_all_subtokens else tags[:1])
    out = []
    for doc in best:
        tags = [word_tag(b[1], scheme) if b is not None else "O" for b in doc]
        out.append(normalize_tags(tags, scheme) if repair else tags)
    return out
