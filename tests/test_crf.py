"""CRF: NLL and Viterbi against brute-force enumeration, scheme constraints, padding, head integration."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch
from conftest import tiny_bert_config

from bertkit import BertWithHead, ConfigError, create_bert_with_head
from bertkit.heads.crf import CRF, allowed_transitions, compact
from bertkit.heads.token import TokenClassificationHead

BIO3 = ["O", "B-PER", "I-PER"]


def _brute(
    crf: CRF, emissions: torch.Tensor, constrained: bool
) -> tuple[torch.Tensor, list[tuple[int, ...]]]:
    """Scores of every tag path of one sequence ``[L, C]`` and the paths (invalid ones dropped)."""
    length, c = emissions.shape
    trans, start, end = crf.transitions, crf.start_transitions, crf.end_transitions
    scores, paths = [], []
    for path in itertools.product(range(c), repeat=length):
        if constrained and not (
            crf.allowed_start[path[0]]
            and crf.allowed_end[path[-1]]
            and all(crf.allowed[a, b] for a, b in zip(path, path[1:]))
        ):
            continue
        s = start[path[0]] + end[path[-1]] + sum(emissions[t, k] for t, k in enumerate(path))
        s = s + sum(trans[a, b] for a, b in zip(path, path[1:]))
        scores.append(s)
        paths.append(path)
    return torch.stack(scores), paths


@pytest.mark.parametrize("tags", [None, BIO3])
def test_nll_matches_brute_force(tags: list[str] | None) -> None:
    torch.manual_seed(0)
    crf = CRF(3, tags, "BIO")
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    emissions = torch.randn(1, 3, 3)
    mask = torch.ones(1, 3, dtype=torch.bool)
    scores, paths = _brute(crf, emissions[0], constrained=tags is not None)
    log_z = torch.logsumexp(scores, 0)
    for gold in paths[:5]:
        nll = crf(emissions, torch.tensor([gold]), mask)
        expected = log_z - scores[paths.index(gold)]
        assert torch.allclose(nll, expected, atol=1e-5)


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("tags", [None, BIO3, ["O", "B-PER", "I-PER", "E-PER", "S-PER"]])
def test_viterbi_equals_brute_force_argmax(seed: int, tags: list[str] | None) -> None:
    torch.manual_seed(seed)
    c = 3 if tags is None else len(tags)
    crf = CRF(c, tags, "BIOES" if tags and len(tags) == 5 else "BIO")
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    emissions = torch.randn(1, 4, c)
    scores, paths = _brute(crf, emissions[0], constrained=tags is not None)
    best = paths[int(scores.argmax())]
    decoded = crf.decode(emissions, torch.ones(1, 4, dtype=torch.bool))
    assert tuple(decoded[0].tolist()) == best


def test_constraints_block_o_to_i_even_with_strong_logits() -> None:
    crf = CRF(3, BIO3, "BIO")
    emissions = torch.tensor([[[10.0, 0.0, 0.0], [0.0, 0.0, 50.0], [0.0, 0.0, 50.0]]])  # O I-PER I-PER wanted
    path = crf.decode(emissions, torch.ones(1, 3, dtype=torch.bool))[0].tolist()
    assert path[0] != 2
    assert all(not (a == 0 and b == 2) for a, b in zip(path, path[1:])), path
    start_i = crf.decode(torch.tensor([[[0.0, 0.0, 99.0]]]), torch.ones(1, 1, dtype=torch.bool))
    assert start_i.item() != 2  # a sequence cannot start with I-PER
    # the training score of an invalid path is effectively impossible but finite (no NaN gradients)
    nll = crf(emissions.requires_grad_(), torch.tensor([[0, 2, 2]]), torch.ones(1, 3, dtype=torch.bool))
    assert torch.isfinite(nll) and nll > 1000
    nll.backward()
    assert torch.isfinite(emissions.grad).all()


def test_allowed_transitions_schemes() -> None:
    trans, start, end = allowed_transitions(["O", "B-PER", "I-PER", "B-LOC", "I-LOC"], "BIO")
    assert not trans[0, 2] and trans[1, 2] and trans[2, 2] and not trans[1, 4] and trans[0, 3]
    assert start.tolist() == [True, True, False, True, False] and end.all()
    tags = ["O", "B-X", "I-X", "E-X", "S-X"]
    trans, start, end = allowed_transitions(tags, "BIOES")
    assert trans[1, 2] and trans[1, 3] and not trans[1, 0] and not trans[3, 2] and trans[3, 0] and trans[4, 1]
    assert start.tolist() == [True, True, False, False, True]
    assert end.tolist() == [True, False, False, True, True]
    with pytest.raises(ConfigError, match="not part of the BIO scheme"):
        allowed_transitions(tags, "BIO")


def test_padding_is_ignored() -> None:
    torch.manual_seed(1)
    crf = CRF(3, BIO3)
    em = torch.randn(2, 5, 3)
    tags = torch.tensor([[1, 2, 0, 1, 2], [1, 2, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], dtype=torch.bool)
    per_row = crf(em, tags, mask, reduction="none")
    alone = crf(em[1:, :3], tags[1:, :3], mask[1:, :3], reduction="none")
    assert torch.allclose(per_row[1], alone[0], atol=1e-5)
    em_noise = em.clone()
    em_noise[1, 3:] = 1000.0  # garbage in the padding changes nothing
    assert torch.allclose(crf(em_noise, tags, mask, reduction="none"), per_row, atol=1e-5)
    dec = crf.decode(em, mask, pad_value=-1)
    assert dec[1, 3:].tolist() == [-1, -1]
    assert dec[1, :3].tolist() == crf.decode(em[1:, :3], mask[1:, :3])[0].tolist()
    # an empty row gives zero loss
    empty = crf(em, tags, torch.zeros(2, 5, dtype=torch.bool), reduction="none")
    assert torch.equal(empty, torch.zeros(2))


def test_compact_left_aligns() -> None:
    mask = torch.tensor([[0, 1, 0, 1], [1, 1, 1, 0]], dtype=torch.bool)
    index, keep = compact(mask)
    assert keep.tolist() == [[True, True, False], [True, True, True]]
    assert index[0, :2].tolist() == [1, 3] and index[1].tolist() == [0, 1, 2]


def _head(use_crf: bool = True) -> TokenClassificationHead:
    torch.manual_seed(0)
    cfg = TokenClassificationHead.example_config()
    cfg.update({"head_type": "token_classification", "input_size": 8, "dropout_prob": 0.0})
    cfg["extra"] = {"use_crf": use_crf, "scheme": "BIO"}
    from bertkit import HeadConfig

    return TokenClassificationHead(HeadConfig.from_dict(cfg))


def test_head_crf_uses_first_subtoken_positions() -> None:
    head = _head().eval()
    states = torch.randn(2, 6, 8)
    targets = torch.tensor([[-100, 1, -100, 2, 0, -100], [-100, 3, 4, -100, -100, -100]])
    out = head(states, torch.ones(2, 6, dtype=torch.long), word_mask=targets != -100)
    loss = head.compute_loss(out, targets)
    index, keep = compact(targets != -100)
    em = out["logits"].gather(1, index.unsqueeze(-1).expand(-1, -1, 5))
    assert torch.allclose(loss, head.crf(em, targets.gather(1, index).clamp(min=0), keep))
    # decoded positions form valid BIO sequences on their own
    names = head.label_names()
    for row, m in zip(out["predictions"], targets != -100):
        seq = [names[i] for i in row[m].tolist()]
        for a, b in zip(["O"] + seq, seq):
            assert not (b.startswith("I-") and a[2:] != b[2:]), seq
    metrics = head.compute_metrics({k: v.detach().numpy() for k, v in out.items()}, targets.numpy())
    assert {"f1", "precision", "recall", "token_accuracy"} <= set(metrics)


def test_head_without_crf_and_class_weights() -> None:
    head = _head(use_crf=False)
    states = torch.randn(2, 4, 8)
    out = head(states)
    targets = torch.tensor([[-100, 1, 2, 0], [-100, -100, -100, -100]])
    assert torch.isfinite(head.compute_loss(out, targets))
    assert head.compute_loss(out, torch.full((2, 4), -100)).item() == 0.0


def test_crf_save_load_keeps_transitions_and_scheme(tokenizer, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_bert_with_head(
        head_type="token_classification",
        bert_config=tiny_bert_config("bert"),
        head_config={
            "num_labels": 5,
            "label_names": ["O", "B-X", "I-X", "E-X", "S-X"],
            "extra": {"use_crf": True, "scheme": "BIOES"},
        },
        tokenizer=tokenizer,
    )
    with torch.no_grad():
        model.head.crf.transitions.normal_()
    model.save_pretrained(tmp_path / "m")
    loaded = BertWithHead.from_pretrained(tmp_path / "m")
    assert loaded.head.scheme == "BIOES" and loaded.head.use_crf
    assert torch.equal(loaded.head.crf.transitions, model.head.crf.transitions)
    assert torch.equal(loaded.head.crf.allowed, model.head.crf.allowed)
