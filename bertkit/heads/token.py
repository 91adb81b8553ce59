"""Token classification (NER) head: per-token tags, optionally decoded by a constrained CRF."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from bertkit import losses, metrics
from bertkit.config import HeadConfig, PoolingType, check_choice
from bertkit.errors import ConfigError
from bertkit.heads.base import BaseHead, register_head
from bertkit.heads.crf import CRF, _split_tag, compact

IGNORE_INDEX = -100


def _random_bio(length: int, types: list[str], generator: torch.Generator) -> list[str]:
    """A random valid BIO tag sequence over ``types``."""
    out: list[str] = []
    for _ in range(length):
        r = float(torch.rand((), generator=generator))
        prev_type = out[-1][2:] if out and out[-1] != "O" else None
        if prev_type and r < 0.3:
            out.append(f"I-{prev_type}")
        elif r < 0.6:
            out.append(f"B-{types[int(torch.randint(len(types), (), generator=generator))]}")
        else:
            out.append("O")
    return out


@register_head(
    "token_classification",
    competition_types=["token_classification", "ner"],
    priority=10,
    description="Per-token tags (NER, BIO/BIOES) with cross-entropy or a constrained CRF; seqeval metrics.",
)
class TokenClassificationHead(BaseHead):
    """Token classifier for NER and other tagging tasks.

    ``label_names`` are the tags (``["O", "B-PER", "I-PER", ...]``). ``extra``: ``use_crf`` (bool, default
    False) adds a :class:`~bertkit.heads.crf.CRF` whose scheme constraints (``scheme``: ``"BIO"`` or
    ``"BIOES"``) make invalid sequences such as ``O -> I-PER`` impossible to predict.

    Inputs: the encoder states and, optionally, ``word_mask [B, T]`` (1 on the positions that carry a word
    label: first sub-tokens, or every sub-token with ``label_all_subtokens``); the CRF decodes the sequence of
    those positions only. Without ``word_mask`` every real token is decoded. Targets: ``[B, T]`` tag ids
    with ``-100`` on ignored positions (the CRF trains on the non-ignored positions as one sequence).

    Outputs: ``logits [B, T, C]``, ``predictions [B, T]`` (CRF path on the decoded positions, arg-max
    elsewhere).
    """

    task = "token"
    level = "token"
    default_pooling = PoolingType.NONE.value
    crf: CRF | None
    class_weight: torch.Tensor

    def __init__(self, config: HeadConfig) -> None:
        config.pooling_type = PoolingType.NONE.value  # token heads never pool
        super().__init__(config)

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
        return {"num_labels": len(tags), "label_names": tags, "extra": {"use_crf": True, "scheme": "BIO"}}

    def example_targets(self, batch_size: int, seq_len: int, generator: torch.Generator) -> Any:
        names = self.label_names()
        types = sorted({n[2:] for n in names if n != "O" and n[:2] == "B-"}) or ["X"]
        index = {n: i for i, n in enumerate(names)}
        rows = []
        for _ in range(batch_size):
            tags = _random_bio(seq_len - 1, types, generator) if "O" in index else []
            ids = [IGNORE_INDEX] + [index.get(t, 0) for t in tags]  # position 0 plays [CLS]
            rows.append(ids[:seq_len] + [IGNORE_INDEX] * (seq_len - len(ids)))
        return torch.tensor(rows, dtype=torch.long)

    def _build_output_layer(self) -> None:
        super()._build_output_layer()
        extra = self.config.extra
        self.scheme = check_choice("scheme", extra.get("scheme", "BIO"), ("bio", "bioes")).upper()
        self.use_crf = bool(extra.get("use_crf", False))
        self.crf: CRF | None = None
        if self.use_crf:
            names = self.label_names()
            if not self.config.label_names:
                raise ConfigError("use_crf=True needs label_names (the tags, e.g. ['O', 'B-PER', 'I-PER'])")
            for n in names:
                _split_tag(n)
            self.crf = CRF(int(self.config.output_size or self.config.num_labels), names, self.scheme)

    def _build_loss_function(self) -> None:
        self.loss_type = check_choice("loss_type", self.config.loss_type or "ce", ("ce", "focal"))
        n = int(self.config.output_size or self.config.num_labels)
        w = self.config.class_weights
        if w is not None and len(w) != n:
            raise ConfigError(f"class_weights has {len(w)} values but there are {n} tags")
        self.register_buffer("class_weight", torch.tensor(w, dtype=torch.float32) if w else torch.ones(0))

    def forward(
        self,
        hidden_states: Any,
        attention_mask: torch.Tensor | None = None,
        word_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> dict[str, torch.Tensor]:
        states, mask, _ = self._unpack(hidden_states, attention_mask)  # [B, T, H]
        logits = self._features_to_logits(self.projection(states))  # [B, T, C]
        predictions = logits.argmax(-1)  # [B, T]
        if self.crf is not None:
            decode_mask = word_mask if word_mask is not None else mask
            if decode_mask is None:
                decode_mask = torch.ones(predictions.shape, dtype=torch.bool, device=logits.device)
            predictions = self.decode(logits, decode_mask.bool())
        return {"logits": logits, "predictions": predictions}

    def decode(self, logits: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """CRF-decode the ``positions [B, T]`` of ``logits [B, T, C]`` as one sequence per row.

        Returns:
            ``[B, T]`` tag ids: the Viterbi path on ``positions``, arg-max elsewhere.
        """
        assert self.crf is not None
        index, keep = compact(positions)  # [B, L]
        emissions = logits.gather(1, index.unsqueeze(-1).expand(-1, -1, logits.size(-1)))  # [B, L, C]
        path = self.crf.decode(emissions, keep)  # [B, L]
        out = logits.argmax(-1)  # [B, T]
        rows = torch.arange(out.size(0), device=out.device).unsqueeze(1).expand_as(index)  # [B, L]
        out[rows[keep], index[keep]] = path[keep]
        return out

    def compute_loss(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        logits = outputs["logits"].float()  # [B, T, C]
        targets = targets.long().to(logits.device)  # [B, T]
        if self.crf is not None:
            index, keep = compact(targets != IGNORE_INDEX)  # [B, L]
            emissions = logits.gather(1, index.unsqueeze(-1).expand(-1, -1, logits.size(-1)))
            tags = targets.gather(1, index).clamp(min=0)
            return self.crf(emissions, tags, keep)
        w = self.class_weight if self.class_weight.numel() else None
        if self.loss_type == "focal":
            return losses.focal_loss_multiclass(
                logits,
                targets,
                gamma=self.config.focal_gamma,
                class_weights=w,
                label_smoothing=self.config.label_smoothing,
            )
        if not (targets != IGNORE_INDEX).any():
            return logits.sum() * 0.0
        return F.cross_entropy(
            logits.transpose(1, 2),
            targets,
            weight=w,
            ignore_index=IGNORE_INDEX,
            label_smoothing=self.config.label_smoothing,
        )

    def aligned_tags(
        self, predictions: np.ndarray, targets: np.ndarray
    ) -> tuple[list[list[str]], list[list[str]]]:
        """Gold and predicted tag sequences over the labelled (``targets != -100``) positions of each row."""
        names = self.label_names()
        gold: list[list[str]] = []
        pred: list[list[str]] = []
        for p_row, t_row in zip(predictions, targets):
            t_row = np.asarray(t_row)
            keep = t_row != IGNORE_INDEX
            gold.append([names[int(i)] for i in t_row[keep]])
            pred.append([names[int(i)] if 0 <= int(i) < len(names) else "O" for i in np.asarray(p_row)[keep]])
        return gold, pred

    def compute_metrics(self, outputs: dict[str, np.ndarray], targets: np.ndarray) -> dict[str, float]:
        """Entity-level micro F1 / precision / recall (seqeval, conlleval-style) and per-type F1."""
        gold, pred = self.aligned_tags(outputs["predictions"], targets)
        res = metrics.entity_metrics(gold, pred)
        out = {k: float(res[k]) for k in ("f1", "precision", "recall")}  # type: ignore[arg-type]
        total = sum(len(g) for g in gold)
        out["token_accuracy"] = (
            float(sum(a == b for g, p in zip(gold, pred) for a, b in zip(g, p)) / total)
            if total
            else float("nan")
        )
        report: dict[str, dict[str, float]] = res["report"]  # type: ignore[assignment]
        for name, row in report.items():
            out[f"{name}_f1"] = row["f1"]
            out[f"{name}_support"] = float(row["support"])
        return out

    def primary_metric(self) -> tuple[str, str]:
        return "f1", "max"

    def format_predictions(self, outputs: dict[str, np.ndarray], proba: bool = False) -> dict[str, Any]:
        """One list of tag names per row (every position; map to words with ``merge_window_predictions``)."""
        names = self.label_names()
        return {"prediction": [[names[int(i)] for i in row] for row in outputs["predictions"]]}
