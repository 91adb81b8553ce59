"""Relation extraction head: classify the relation between two marked entities from their marker tokens."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from bertkit import metrics
from bertkit.config import HeadConfig
from bertkit.errors import ConfigError
from bertkit.heads.base import _ACTIVATIONS, register_head
from bertkit.heads.classification import MulticlassClassificationHead

ENTITY_MARKERS = ("<e1>", "</e1>", "<e2>", "</e2>")


def add_entity_markers(tokenizer: Any, bert: Any, markers: tuple[str, ...] = ENTITY_MARKERS) -> list[int]:
    """Add the entity marker tokens to ``tokenizer`` (as special tokens) and resize ``bert``'s embeddings.

    Idempotent: markers already in the vocabulary are not added twice. The resized encoder (its
    ``config.json`` vocab size included) and the tokenizer are saved by ``BertWithHead.save_pretrained``.

    Args:
        tokenizer: A Hugging Face tokenizer (modified in place).
        bert: The :class:`~bertkit.encoder.BertCore` (or ``BertWithHead``: its ``bert`` is used).
        markers: The marker strings; the defaults are ``<e1>``, ``</e1>``, ``<e2>``, ``</e2>``.

    Returns:
        ``[e1_start_id, e2_start_id]``, for ``extra["marker_token_ids"]`` of the head.
    """
    core = getattr(bert, "bert", bert)
    vocab = tokenizer.get_vocab()
    missing = [m for m in markers if m not in vocab]
    if missing:
        tokenizer.add_tokens(missing, special_tokens=True)
    size = len(tokenizer)
    if core.get_input_embeddings().num_embeddings < size:
        core.resize_token_embeddings(size)
    ids = tokenizer.convert_tokens_to_ids(list(markers))
    return [int(ids[0]), int(ids[2])]


@register_head(
    "relation_extraction",
    competition_types=["relation_extraction", "relation_classification"],
    priority=10,
    description="Relation between two marked entities from [e1-start; e2-start(; CLS)] states; macro-F1 w/o Other.",
)
class RelationExtractionHead(MulticlassClassificationHead):
    """Relation classifier over entity-marker representations (Baldini Soares et al., 2019, "entity start").

    ``extra``: ``marker_token_ids`` = ``[e1_start_id, e2_start_id]`` (from :func:`add_entity_markers`),
    ``use_cls`` (also concatenate the pooled sentence vector), ``no_relation_label`` (default ``"Other"``,
    left out of the macro-F1). Labels are direction-aware strings such as ``"Cause-Effect(e1,e2)"``.
    ``forward`` needs ``input_ids`` (``BertWithHead`` passes them); a row without a marker falls back to its
    first real token for that entity. Outputs as the multiclass head plus ``marker_positions [B, 2]``.
    """

    task = "multiclass"
    level = "sequence"
    marker_ids: torch.Tensor

    def __init__(self, config: HeadConfig) -> None:
        ids = config.extra.get("marker_token_ids")
        if not isinstance(ids, list | tuple) or len(ids) != 2:
            raise ConfigError(
                "relation_extraction needs extra.marker_token_ids = [e1_start_id, e2_start_id]; get them from "
                "bertkit.heads.relation.add_entity_markers(tokenizer, bert)"
            )
        self.use_cls = bool(config.extra.get("use_cls", False))
        super().__init__(config)
        self.register_buffer(
            "marker_ids", torch.tensor([int(i) for i in ids], dtype=torch.long), persistent=False
        )

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        # [CLS]=101 and [SEP]=102 stand in for the markers so the sweep runs without resizing embeddings
        return {
            "num_labels": 3,
            "label_names": ["Other", "Cause-Effect(e1,e2)", "Cause-Effect(e2,e1)"],
            "extra": {"marker_token_ids": [101, 102], "use_cls": True, "no_relation_label": "Other"},
        }

    def _build_projection(self) -> tuple[nn.Module, int]:
        width = self.config.input_size * (3 if self.use_cls else 2)
        layers: list[nn.Module] = []
        for size in self.config.hidden_sizes:
            layers += [
                nn.Linear(width, size),
                _ACTIVATIONS[self.config.activation](),
                nn.Dropout(self.config.dropout_prob),
            ]
            width = size
        return (nn.Sequential(*layers) if layers else nn.Identity()), width

    def marker_positions(self, input_ids: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        """``[B, 2]`` index of the first ``e1``/``e2`` start marker per row (first real token if absent)."""
        t = input_ids.size(1)
        pos = torch.arange(t, device=input_ids.device).expand_as(input_ids)  # [B, T]
        first_real = mask.long().argmax(1) if mask is not None else torch.zeros_like(input_ids[:, 0])
        cols = []
        for k in range(2):
            hit = input_ids == self.marker_ids[k]
            idx = torch.where(hit, pos, torch.full_like(pos, t)).min(1).values  # [B]
            cols.append(torch.where(idx < t, idx, first_real))
        return torch.stack(cols, 1)

    def forward(
        self,
        hidden_states: Any,
        attention_mask: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> dict:
        states, mask, pooler_output = self._unpack(hidden_states, attention_mask)  # [B, T, H]
        if input_ids is None:
            raise ConfigError("RelationExtractionHead.forward needs input_ids to find the entity markers")
        where = self.marker_positions(input_ids, mask)  # [B, 2]
        rows = torch.arange(states.size(0), device=states.device)
        parts = [states[rows, where[:, 0]], states[rows, where[:, 1]]]  # 2 x [B, H]
        if self.use_cls:
            parts.append(
                self.pooler(states, mask, pooler_output) if self.pooler is not None else states[:, 0]
            )
        logits = self._features_to_logits(self.projection(torch.cat(parts, -1)))  # [B, C]
        out = self._make_outputs(logits)
        out["marker_positions"] = where
        return out

    def no_relation_index(self) -> int | None:
        """Index of the "no relation" class (None when the label names lack it)."""
        name = str(self.config.extra.get("no_relation_label", "Other"))
        names = self.label_names()
        return names.index(name) if name in names else None

    def compute_metrics(self, outputs: dict[str, np.ndarray], targets: np.ndarray) -> dict[str, float]:
        """Multiclass metrics plus ``macro_f1_excluding_other`` (the SemEval-2010 Task 8 style score)."""
        out = super().compute_metrics(outputs, targets)
        skip = self.no_relation_index()
        out["macro_f1_excluding_other"] = metrics.macro_f1_excluding(
            targets.astype(int),
            np.asarray(outputs["predictions"]).astype(int),
            [] if skip is None else [skip],
        )
        return out

    def primary_metric(self) -> tuple[str, str]:
        return "macro_f1_excluding_other", "max"
