"""BIO / BIOES tag schemes: validation, conversion and spans.

Tags are ``"O"`` or a prefix and a type: ``B-`` begins an entity, ``I-`` continues it, and in BIOES ``E-``
ends it and ``S-`` is a one-word entity. Span helpers are lenient like conlleval: an ``I-X`` that follows
``O`` or another type starts a new entity, so IOB1-style files still give the intended entities.
"""

from __future__ import annotations

from collections.abc import Sequence

from bertkit.errors import DataError

SCHEMES = ("BIO", "BIOES")

Span = tuple[int, int, str]  # (first word, last word + 1, type)


def check_scheme(scheme: str) -> str:
    """Upper-case ``scheme`` and check that it is BIO or BIOES."""
    s = str(scheme).upper()
    if s == "IOB2":
        s = "BIO"
    if s in ("IOBES", "BILOU"):
        s = "BIOES"
    if s not in SCHEMES:
        raise DataError(f"tag scheme '{scheme}' is not supported; use BIO or BIOES")
    return s


def split_tag(tag: str) -> tuple[str, str]:
    """``"B-PER" -> ("B", "PER")``; ``"O" -> ("O", "")``; anything else -> ``("", "")``."""
    if tag == "O":
        return "O", ""
    if len(tag) > 2 and tag[1] == "-" and tag[0] in "BIES":
        return tag[0], tag[2:]
    return "", ""


def validate_tags(
    tags: Sequence[str], scheme: str = "BIO", where: str | Sequence[str] = "", check_transitions: bool = False
) -> None:
    """Raise a one-line :class:`DataError` for the first tag that is not valid in ``scheme``.

    Args:
        tags: The tags of one sentence.
        scheme: ``"BIO"`` or ``"BIOES"``.
        where: Location used in the message: one string (``"train.conll:12"``) or one per tag.
        check_transitions: Also reject invalid sequences (``O -> I-PER``, ``B-PER -> I-LOC``, and in BIOES an
            entity not closed by ``E-``/``S-``). Off by default: readers accept IOB1-style files, and
            :func:`normalize_tags` repairs them before training.
    """
    scheme = check_scheme(scheme)
    allowed = "BI" if scheme == "BIO" else "BIES"

    def loc(i: int) -> str:
        if isinstance(where, str):
            return f"{where}: " if where else f"tag {i + 1}: "
        return f"{where[i]}: "

    prev_p, prev_t = "O", ""
    for i, tag in enumerate(tags):
        p, t = split_tag(str(tag))
        if p == "" or (p != "O" and p not in allowed):
            raise DataError(
                f"{loc(i)}tag '{tag}' is not a valid {scheme} tag; use 'O' or {'/'.join(allowed)}- plus a type "
                f"(e.g. B-PER)"
            )
        if check_transitions:
            opens = prev_p in ("B", "I")
            continues = p in ("I", "E")
            if continues and not (opens and prev_t == t):
                raise DataError(
                    f"{loc(i)}tag '{tag}' cannot follow '{prev_p}{'-' + prev_t if prev_t else ''}'"
                    f" in {scheme}; an entity must start with B-"
                )
            if scheme == "BIOES" and opens and not continues:
                raise DataError(
                    f"{loc(i)}tag '{tag}' follows an unfinished entity; BIOES entities end with E-"
                )
        prev_p, prev_t = p, t
    if check_transitions and scheme == "BIOES" and prev_p in ("B", "I"):
        raise DataError(f"{loc(len(tags) - 1)}the sentence ends inside an entity; BIOES entities end with E-")


def tags_to_spans(tags: Sequence[str]) -> list[Span]:
    """Entities of a BIO or BIOES sequence as ``(start, end, type)`` word spans (end exclusive).

    Lenient: ``I-``/``E-`` after ``O`` or a different type start a new entity; ``S-`` and ``E-`` close one.
    """
    spans: list[Span] = []
    start, etype = -1, ""
    for i, tag in enumerate(tags):
        p, t = split_tag(str(tag))
        if p in ("O", "") or p in ("B", "S") or t != etype:
            if start >= 0:
                spans.append((start, i, etype))
            start, etype = (i, t) if p not in ("O", "") else (-1, "")
        if p in ("E", "S") and start >= 0:
            spans.append((start, i + 1, etype))
            start, etype = -1, ""
    if start >= 0:
        spans.append((start, len(tags), etype))
    return spans


def spans_to_tags(length: int, spans: Sequence[Span], scheme: str = "BIO") -> list[str]:
    """Tag sequence of ``length`` words for non-overlapping ``(start, end, type)`` spans."""
    scheme = check_scheme(scheme)
    tags = ["O"] * length
    for start, end, etype in spans:
        if scheme == "BIOES" and end - start == 1:
            tags[start] = f"S-{etype}"
            continue
        tags[start] = f"B-{etype}"
        for k in range(start + 1, end):
            tags[k] = f"I-{etype}"
        if scheme == "BIOES":
            tags[end - 1] = f"E-{etype}"
    return tags


def normalize_tags(tags: Sequence[str], scheme: str = "BIO") -> list[str]:
    """Re-encode ``tags`` (any BIO/BIOES/IOB1 mix) as a valid sequence of ``scheme`` with the same entities."""
    return spans_to_tags(len(tags), tags_to_spans(tags), scheme)


def bio_to_bioes(tags: Sequence[str]) -> list[str]:
    """Convert BIO tags to BIOES (``B-X I-X`` -> ``B-X E-X``, a lone ``B-X`` -> ``S-X``)."""
    return normalize_tags(tags, "BIOES")


def bioes_to_bio(tags: Sequence[str]) -> list[str]:
    """Convert BIOES tags to BIO (``E-`` -> ``I-``, ``S-`` -> ``B-``)."""
    return normalize_tags(tags, "BIO")


def convert_tags(tags: Sequence[str], target: str) -> list[str]:
    """Convert a tag sequence to the ``target`` scheme (``"BIO"`` or ``"BIOES"``)."""
    return normalize_tags(tags, check_scheme(target))


def label_list(tag_sequences: Sequence[Sequence[str]], scheme: str = "BIO") -> list[str]:
    """Every tag of ``scheme`` for the entity types seen: ``["O", "B-LOC", "I-LOC", "B-PER", ...]``.

    All prefixes of a seen type are included, so a CRF can reach every valid sequence.
    """
    scheme = check_scheme(scheme)
    types = sorted({split_tag(str(t))[1] for seq in tag_sequences for t in seq} - {""})
    prefixes = "BI" if scheme == "BIO" else "BIES"
    return ["O"] + [f"{p}-{t}" for t in types for p in prefixes]


def subtoken_tags(tag: str, n: int, scheme: str = "BIO") -> list[str]:
    """Tags of the ``n`` sub-tokens of a word tagged ``tag`` (used with ``label_all_subtokens``).

    ``B-X`` -> ``B-X I-X ...``; in BIOES ``S-X`` -> ``B-X I-X ... E-X`` and ``E-X`` -> ``I-X ... E-X``.
    """
    p, t = split_tag(tag)
    if n <= 1 or p in ("O", ""):
        return [tag] * max(n, 0)
    first = {"B": "B", "I": "I", "E": "I", "S": "B"}[p]
    last = {"B": "I", "I": "I", "E": "E", "S": "E"}[p] if scheme == "BIOES" else "I"
    return [f"{first}-{t}"] + [f"I-{t}"] * (n - 2) + [f"{last}-{t}"]


def word_tag(sub_tags: Sequence[str], scheme: str = "BIO") -> str:
    """Inverse of :func:`subtoken_tags`: the word's tag from its sub-tokens' predicted tags."""
    if not sub_tags:
        return "O"
    p, t = split_tag(sub_tags[0])
    if scheme != "BIOES" or len(sub_tags) == 1 or p in ("O", ""):
        return sub_tags[0]
    lp, lt = split_tag(sub_tags[-1])
    closed = lp in ("E", "S") and lt == t
    if p in ("B", "S"):
        return f"S-{t}" if closed else f"B-{t}"
    return f"E-{t}" if closed else f"I-{t}"
