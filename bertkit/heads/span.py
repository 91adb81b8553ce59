"""Span classification head: every candidate span is an entity type or null (nested and discontiguous NER)."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from bertkit import metrics
from bertkit.config import HeadConfig, PoolingType
from bertkit.errors import ConfigError
from bertkit.heads.base import _ACTIVATIONS, BaseHead, register_head

IGNORE_INDEX = -100


class TargetDict(dict):
    """A dict of target tensors with ``numpy()``/``to()`` like a tensor (so trainers treat both alike)."""

    def numpy(self) -> dict[str, np.ndarray]:
        return {
            k: v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else np.asarray(v)
            for k, v in self.items()
        }

    def to(self, *args: Any, **kwargs: Any) -> TargetDict:
        return TargetDict(
            {k: v.to(*args, **kwargs) if isinstance(v, torch.Tensor) else v for k, v in self.items()}
        )


def enumerate_spans(seq_len: int, max_span_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """All token spans of width ``1..max_span_len`` in a row of ``seq_len`` tokens, ordered by (width, start).

    Returns:
        ``(starts [S], ends [S])`` inclusive token indices.
    """
    starts, ends = [], []
    for w in range(max_span_len):
        s = torch.arange(max(seq_len - w, 0))
        starts.append(s)
        ends.append(s + w)
    return torch.cat(starts), torch.cat(ends)


def _find(parent: list[int], i: int) -> int:
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@register_head(
    "span_classification",
    competition_types=["span_ner", "nested_ner", "span_classification"],
    priority=5,
    description="Classify candidate spans [start; end; width] as an entity type or null; nested + linked fragments.",
)
class SpanClassificationHead(BaseHead):
    """Span-based NER: classifies every candidate span up to ``max_span_len`` tokens.

    ``label_names`` include the null class (``extra["null_label"]``, default ``"O"``). Span representation:
    ``[h_start; h_end; width_embedding]`` (plus the mean of the span's states with ``pool_interior``), then
    an MLP. Spans are classified independently, so nested entities are predicted naturally. With
    ``use_linking`` a bilinear scorer gives ``link_logits [B, S, S]``: fragments of one discontiguous entity
    are joined when ``sigmoid(link) > link_threshold`` (and they share a label).

    Inputs: ``span_starts``, ``span_ends`` (inclusive token indices) and ``span_mask`` ``[B, S]`` from
    :func:`bertkit.tasks.spans.prepare_span_features`; without them every token span of each row is a
    candidate (:func:`enumerate_spans`). Targets: ``span_labels [B, S]`` (a tensor, or a dict with
    ``span_labels`` and ``span_groups [B, S]``: entity index of each gold fragment, -1 for none).
    Outputs: ``logits [B, S, C]``, ``predictions [B, S]``, ``span_starts``, ``span_ends``, ``span_mask``
    and, with linking, ``link_logits``.
    """

    task = "span"
    level = "token"
    default_pooling = PoolingType.NONE.value

    def __init__(self, config: HeadConfig) -> None:
        config.pooling_type = PoolingType.NONE.value
        extra = config.extra
        self.max_span_len = int(extra.get("max_span_len", 8))
        self.width_dim = int(extra.get("width_dim", 32))
        self.pool_interior = bool(extra.get("pool_interior", False))
        self.use_linking = bool(extra.get("use_linking", False))
        if self.max_span_len < 1:
            raise ConfigError(f"max_span_len must be >= 1, got {self.max_span_len}")
        super().__init__(config)
        names = self.label_names()
        null = str(extra.get("null_label", "O"))
        if config.label_names and null not in names:
            raise ConfigError(f"span head label_names {names} must include the null label '{null}'")
        self.null_index = names.index(null) if null in names else 0

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        return {
            "num_labels": 3,
            "label_names": ["O", "PER", "LOC"],
            "extra": {"max_span_len": 3, "use_linking": True, "pool_interior": True},
        }

    def example_targets(self, batch_size: int, seq_len: int, generator: torch.Generator) -> Any:
        starts, _ = enumerate_spans(seq_len, self.max_span_len)
        s = len(starts)
        labels = torch.randint(0, self.config.num_labels, (batch_size, s), generator=generator)
        labels = torch.where(torch.rand(batch_size, s, generator=generator) < 0.7, self.null_index, labels)
        groups = torch.randint(0, 3, (batch_size, s), generator=generator)
        groups = torch.where(labels == self.null_index, -1, groups)
        return TargetDict(span_labels=labels, span_groups=groups)

    def _build_projection(self) -> tuple[nn.Module, int]:
        h = self.config.input_size
        width = 2 * h + self.width_dim + (h if self.pool_interior else 0)
        layers: list[nn.Module] = []
        for size in self.config.hidden_sizes or [h]:
            layers += [
                nn.Linear(width, size),
                _ACTIVATIONS[self.config.activation](),
                nn.Dropout(self.config.dropout_prob),
            ]
            width = size
        return nn.Sequential(*layers), width

    def _build_output_layer(self) -> None:
        super()._build_output_layer()
        self.width_embedding = nn.Embedding(self.max_span_len, self.width_dim)
        if self.use_linking:
            dim = int(self.config.extra.get("link_dim", 64))
            self.link_left = nn.Linear(self.projection_output_size, dim)
            self.link_right = nn.Linear(self.projection_output_size, dim)

    def _build_loss_function(self) -> None:
        self.link_loss_weight = float(self.config.extra.get("link_loss_weight", 1.0))
        self.link_threshold = float(self.config.extra.get("link_threshold", 0.5))

    def forward(
        self,
        hidden_states: Any,
        attention_mask: torch.Tensor | None = None,
        span_starts: torch.Tensor | None = None,
        span_ends: torch.Tensor | None = None,
        span_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> dict[str, torch.Tensor]:
        states, mask, _ = self._unpack(hidden_states, attention_mask)  # [B, T, H]
        b, t, h = states.shape
        if mask is None:
            mask = torch.ones(b, t, dtype=torch.long, device=states.device)
        if span_starts is None or span_ends is None:
            s0, e0 = enumerate_spans(t, self.max_span_len)
            span_starts = s0.to(states.device).expand(b, -1)
            span_ends = e0.to(states.device).expand(b, -1)
            span_mask = mask.bool().gather(1, span_starts) & mask.bool().gather(1, span_ends)
        starts = span_starts.long().clamp(0, t - 1)  # [B, S]
        ends = span_ends.long().clamp(0, t - 1)
        if span_mask is None:
            span_mask = torch.ones_like(starts, dtype=torch.bool)
        span_mask = span_mask.bool() & (ends >= starts)
        idx = lambda x: x.unsqueeze(-1).expand(-1, -1, h)  # noqa: E731  [B, S] -> [B, S, H]
        parts = [states.gather(1, idx(starts)), states.gather(1, idx(ends))]
        width = (ends - starts).clamp(0, self.max_span_len - 1)
        parts.append(self.width_embedding(width).to(states.dtype))  # [B, S, W]
        if self.pool_interior:
            m = mask.unsqueeze(-1).to(states.dtype)
            csum = torch.cat([torch.zeros_like(states[:, :1]), (states * m).cumsum(1)], 1)  # [B, T+1, H]
            ccount = torch.cat([torch.zeros_like(m[:, :1]), m.cumsum(1)], 1)  # [B, T+1, 1]
            total = csum.gather(1, idx(ends + 1)) - csum.gather(1, idx(starts))
            count = ccount.gather(1, (ends + 1).unsqueeze(-1)) - ccount.gather(1, starts.unsqueeze(-1))
            parts.append(total / count.clamp(min=1))
        feats = self.projection(torch.cat(parts, -1))  # [B, S, P]
        logits = self._features_to_logits(feats)  # [B, S, C]
        pred = logits.argmax(-1).masked_fill(~span_mask, self.null_index)
        out = {
            "logits": logits,
            "predictions": pred,
            "span_starts": starts,
            "span_ends": ends,
            "span_mask": span_mask.long(),
        }
        if self.use_linking:
            left, right = self.link_left(self.dropout(feats)), self.link_right(self.dropout(feats))
            link = torch.einsum("bid,bjd->bij", left, right) / left.size(-1) ** 0.5  # [B, S, S]
            out["link_logits"] = 0.5 * (link + link.transpose(1, 2))  # "same entity" is symmetric
        return out

    @staticmethod
    def _split_targets(targets: Any) -> tuple[Any, Any]:
        if isinstance(targets, dict):
            return targets["span_labels"], targets.get("span_groups")
        return targets, None

    def compute_loss(self, outputs: dict[str, torch.Tensor], targets: Any) -> torch.Tensor:
        labels, groups = self._split_targets(targets)
        logits = outputs["logits"].float()
        labels = labels.long().to(logits.device).masked_fill(outputs["span_mask"] == 0, IGNORE_INDEX)
        valid = labels != IGNORE_INDEX
        loss = F.cross_entropy(logits[valid], labels[valid]) if valid.any() else logits.sum() * 0.0
        if self.use_linking and groups is not None:
            groups = groups.long().to(logits.device)
            gold = valid & (labels != self.null_index) & (groups >= 0)  # [B, S] gold fragments
            pair = gold.unsqueeze(2) & gold.unsqueeze(1)  # [B, S, S]
            pair &= ~torch.eye(pair.size(1), dtype=torch.bool, device=pair.device)
            link = outputs["link_logits"].float()
            if pair.any():
                same = (groups.unsqueeze(2) == groups.unsqueeze(1)).float()[pair]
                # few fragment pairs belong together: weight the positives up to balance the classes
                n_pos = same.sum()
                pos_weight = ((same.numel() - n_pos) / n_pos.clamp(min=1.0)).clamp(min=1.0)
                loss = loss + self.link_loss_weight * F.binary_cross_entropy_with_logits(
                    link[pair], same, pos_weight=pos_weight
                )
            else:
                loss = loss + link.sum() * 0.0
        return loss

    def decode_entities(self, outputs: dict[str, np.ndarray]) -> list[list[dict[str, Any]]]:
        """Per row, the predicted entities ``{"label", "fragments": [(start, end), ...], "score"}``.

        Token indices are inclusive. Without linking every non-null span is one entity; with linking,
        non-null spans of the same label whose pairwise link probability exceeds ``link_threshold`` are joined.
        """
        names = self.label_names()
        pred, logits = outputs["predictions"], outputs["logits"]
        link = outputs.get("link_logits")
        rows = []
        for b in range(len(pred)):
            keep = np.flatnonzero((pred[b] != self.null_index) & (outputs["span_mask"][b] > 0))
            parent = list(range(len(keep)))
            if link is not None and self.use_linking:
                prob = 1.0 / (1.0 + np.exp(-np.clip(link[b][np.ix_(keep, keep)], -60.0, 60.0)))
                for i in range(len(keep)):
                    for j in range(i + 1, len(keep)):
                        if (
                            pred[b][keep[i]] == pred[b][keep[j]]
                            and min(prob[i, j], prob[j, i]) > self.link_threshold
                        ):
                            parent[_find(parent, i)] = _find(parent, j)
            comps: dict[int, list[int]] = {}
            for i in range(len(keep)):
                comps.setdefault(_find(parent, i), []).append(int(keep[i]))
            ents: list[dict[str, Any]] = []
            for members in comps.values():
                z = logits[b][members]
                z = np.exp(z - z.max(-1, keepdims=True))
                score = float((z[:, int(pred[b][members[0]])] / z.sum(-1)).min())
                frags = sorted(
                    (int(outputs["span_starts"][b][k]), int(outputs["span_ends"][b][k])) for k in members
                )
                ents.append({"label": names[int(pred[b][members[0]])], "fragments": frags, "score": score})
            rows.append(sorted(ents, key=lambda e: e["fragments"]))
        return rows

    def _gold_entities(
        self, outputs: dict[str, np.ndarray], labels: np.ndarray, groups: np.ndarray | None
    ) -> list[set[tuple[Any, ...]]]:
        names = self.label_names()
        rows = []
        for b in range(len(labels)):
            ok = np.flatnonzero(
                (labels[b] != IGNORE_INDEX) & (labels[b] != self.null_index) & (outputs["span_mask"][b] > 0)
            )
            by: dict[Any, list[int]] = {}
            for k in ok:
                key = ("g", int(groups[b][k])) if groups is not None and groups[b][k] >= 0 else ("s", int(k))
                by.setdefault(key, []).append(int(k))
            ents: set[tuple[Any, ...]] = set()
            for members in by.values():
                frags = tuple(
                    sorted(
                        (int(outputs["span_starts"][b][k]), int(outputs["span_ends"][b][k])) for k in members
                    )
                )
                ents.add((frags, names[int(labels[b][members[0]])]))
            rows.append(ents)
        return rows

    def compute_metrics(self, outputs: dict[str, np.ndarray], targets: Any) -> dict[str, float]:
        """Exact span match precision / recall / F1 (and, with linking, exact entity match ``entity_f1``)."""
        labels, groups = self._split_targets(targets)
        labels = np.asarray(labels)
        names = self.label_names()

        def spans(values: np.ndarray, b: int) -> set[tuple[Any, ...]]:
            ok = np.flatnonzero(
                (values[b] != IGNORE_INDEX) & (values[b] != self.null_index) & (outputs["span_mask"][b] > 0)
            )
            return {
                (int(outputs["span_starts"][b][k]), int(outputs["span_ends"][b][k]), names[int(values[b][k])])
                for k in ok
            }

        gold = [spans(labels, b) for b in range(len(labels))]
        pred = [spans(np.asarray(outputs["predictions"]), b) for b in range(len(labels))]
        out = metrics.span_metrics(gold, pred)
        if self.use_linking and "link_logits" in outputs:
            gold_e = self._gold_entities(outputs, labels, None if groups is None else np.asarray(groups))
            pred_e: list[set[tuple[Any, ...]]] = [
                {(tuple(e["fragments"]), e["label"]) for e in row} for row in self.decode_entities(outputs)
            ]
            ent = metrics.span_metrics(gold_e, pred_e)
            out.update({f"entity_{k}": v for k, v in ent.items()})
        return out

    def primary_metric(self) -> tuple[str, str]:
        return "f1", "max"

    def format_predictions(self, outputs: dict[str, np.ndarray], proba: bool = False) -> dict[str, Any]:
        """One list of entities per row (token indices; map to words/characters with the span task helpers)."""
        return {"prediction": self.decode_entities(outputs)}
