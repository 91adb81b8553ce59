"""Sequence (time-series) heads: a (bi)LSTM/GRU over token states or over time-ordered document embeddings.

Two input modes, same computation (an RNN over positions ``[B, L, H]`` with a mask ``[B, L]``):

* token mode: the encoder's token states ``[B, T, H]`` with the attention mask (what ``BertWithHead`` passes);
* document mode: a time-ordered sequence of per-document embeddings ``[B, S, H]`` with the keyword
  ``sequence_mask [B, S]`` (1 = real document). :func:`group_sequences` builds these from per-document pooled
  embeddings, an id column and a time column.

Left and right padding are both handled: real positions are moved to the front (order kept) before packing.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence

from bertkit import metrics
from bertkit.config import HeadConfig, check_choice
from bertkit.errors import ConfigError, DataError
from bertkit.heads.base import BaseHead, register_head
from bertkit.heads.classification import MulticlassClassificationHead

RNN_TYPES = ("lstm", "gru")


def decompose_series(series: torch.Tensor, window: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Split ``series [B, L]`` into a moving-average trend and the remainder (``trend + remainder == series``).

    The centred moving average over ``min(window, L)`` points replicates the edge values, so the trend has the
    series' length and follows it at both ends.

    Returns:
        ``(trend [B, L], remainder [B, L])``.
    """
    x = series.float()
    k = max(1, min(int(window), x.size(1)))
    front, back = (k - 1) // 2, k - 1 - (k - 1) // 2
    padded = torch.cat([x[:, :1].expand(-1, front), x, x[:, -1:].expand(-1, back)], dim=1)  # [B, L + k - 1]
    trend = F.avg_pool1d(padded.unsqueeze(1), kernel_size=k, stride=1).squeeze(1)  # [B, L]
    return trend, x - trend


def group_sequences(
    embeddings: torch.Tensor,
    group_ids: Sequence[Any],
    times: Sequence[Any],
    max_length: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor, list[Any]]:
    """Group per-document embeddings into time-ordered, right-padded sequences (document mode input).

    Args:
        embeddings: ``[N, H]`` one pooled embedding per document.
        group_ids: N ids (e.g. a user or entity column); one output sequence per distinct id, in order of
            first appearance.
        times: N sortable time keys (numbers, ISO strings, timestamps); ties keep the input order.
        max_length: keep only the most recent ``max_length`` documents of each group.

    Returns:
        ``(sequences [G, S, H], sequence_mask [G, S], ids)`` with S the longest kept group.
    """
    n = embeddings.size(0)
    if len(group_ids) != n or len(times) != n:
        raise DataError(
            f"group_ids ({len(group_ids)}) and times ({len(times)}) need one value per embedding ({n})"
        )
    groups: dict[Any, list[int]] = {}
    for i, g in enumerate(group_ids):
        groups.setdefault(g, []).append(i)
    ordered = []
    for idx in groups.values():
        idx = sorted(idx, key=lambda i: times[i])
        ordered.append(idx[-max_length:] if max_length else idx)
    S = max((len(o) for o in ordered), default=0)
    out = embeddings.new_zeros(len(ordered), S, embeddings.size(1))  # [G, S, H]
    mask = torch.zeros(len(ordered), S, dtype=torch.long, device=embeddings.device)  # [G, S]
    for row, idx in enumerate(ordered):
        out[row, : len(idx)] = embeddings[torch.as_tensor(idx, device=embeddings.device)]
        mask[row, : len(idx)] = 1
    return out, mask, list(groups)


class _RecurrentHead(BaseHead):
    """Shared RNN encoder of the sequence heads (not registered).

    ``extra``: ``rnn`` ("lstm" default | "gru"), ``bidirectional`` (default True), ``rnn_hidden`` (default
    128), ``rnn_layers`` (default 1). ``pooling_type`` is not used: the RNN's final states summarise the
    sequence. The block options (task attention, FFN, intermediate projection) apply as in every head.
    """

    default_pooling = "none"

    def __init__(self, config: HeadConfig) -> None:
        super().__init__(config)
        self.pooler = None  # the RNN summarises the sequence

    def _build_rnn(self) -> None:
        extra = self.config.extra
        self.rnn_type = check_choice("rnn", extra.get("rnn", "lstm"), RNN_TYPES)
        self.num_directions = 2 if extra.get("bidirectional", True) else 1
        self.rnn_hidden = int(extra.get("rnn_hidden", 128))
        self.rnn_layers = int(extra.get("rnn_layers", 1))
        if self.rnn_hidden < 1 or self.rnn_layers < 1:
            raise ConfigError(
                f"rnn_hidden and rnn_layers must be >= 1, got {self.rnn_hidden}, {self.rnn_layers}"
            )
        rnn_cls = nn.LSTM if self.rnn_type == "lstm" else nn.GRU
        self.rnn = rnn_cls(
            self.config.input_size,
            self.rnn_hidden,
            num_layers=self.rnn_layers,
            batch_first=True,
            bidirectional=self.num_directions == 2,
            dropout=self.config.dropout_prob if self.rnn_layers > 1 else 0.0,
        )

    def _build_sequence_modules(self) -> None:
        """Create the recurrent modules (called before the projection is built)."""
        self._build_rnn()

    def _build_projection(self) -> tuple[nn.Module, int]:
        self._build_sequence_modules()
        return super()._build_projection()

    def _projection_input_size(self) -> int:
        return self.rnn_hidden * self.num_directions

    def _encode_sequence(
        self, hidden_states: Any, attention_mask: torch.Tensor | None, sequence_mask: torch.Tensor | None
    ) -> torch.Tensor:
        """RNN summary ``[B, dirs * rnn_hidden]`` of token states or of a document sequence."""
        if sequence_mask is not None:
            attention_mask = sequence_mask
            if isinstance(hidden_states, dict):
                hidden_states = {**hidden_states, "attention_mask": sequence_mask}
        states, mask, _ = self._unpack(hidden_states, attention_mask)
        if states.dim() == 2:  # already pooled: a sequence of length one
            states, mask = states.unsqueeze(1), None
        B, T, _ = states.shape
        m = torch.ones(B, T, dtype=torch.bool, device=states.device) if mask is None else mask.bool()
        lengths = m.sum(1)  # [B]
        # move the real positions to the front, keeping their order (left padding -> right padding)
        order = torch.argsort((~m).to(torch.int8), dim=1, stable=True)  # [B, T]
        states = states.gather(1, order.unsqueeze(-1).expand_as(states))  # [B, T, H]
        packed = pack_padded_sequence(
            states, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False
        )
        _, h_n = self.rnn(packed)
        if isinstance(h_n, tuple):  # LSTM: (h_n, c_n)
            h_n = h_n[0]
        last = h_n.view(self.rnn_layers, self.num_directions, B, self.rnn_hidden)[-1]  # [dirs, B, R]
        feats = last.transpose(0, 1).reshape(B, self.num_directions * self.rnn_hidden)  # [B, dirs * R]
        return feats * (lengths > 0).unsqueeze(-1).to(feats.dtype)


@register_head(
    "timeseries_classification",
    competition_types=["timeseries_classification", "sequence_classification"],
    priority=10,
    description="A (bi)LSTM/GRU over token states or time-ordered document embeddings, then softmax classes.",
)
class TimeSeriesClassificationHead(_RecurrentHead, MulticlassClassificationHead):
    """Order-aware classifier: an RNN over the token states (or document sequence), then a softmax layer.

    ``extra``: ``rnn``, ``bidirectional``, ``rnn_hidden``, ``rnn_layers`` (see :class:`_RecurrentHead`).
    Forward: ``head(states [B, T, H], attention_mask)`` or ``head(docs [B, S, H], sequence_mask=[B, S])``.
    Outputs, losses and metrics as :class:`MulticlassClassificationHead`: ``logits [B, C]``,
    ``probabilities [B, C]``, ``predictions [B]``.
    """

    task = "multiclass"
    default_pooling = "none"

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        return {"num_labels": 3, "extra": {"rnn": "lstm", "bidirectional": True, "rnn_hidden": 16}}

    def forward(
        self,
        hidden_states: Any,
        attention_mask: torch.Tensor | None = None,
        sequence_mask: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> dict:
        """RNN summary -> projection -> logits; see the class docstring for the two input modes."""
        feats = self._encode_sequence(hidden_states, attention_mask, sequence_mask)  # [B, dirs * R]
        return self._make_outputs(self._features_to_logits(self.projection(feats)))  # [B, C]


@register_head(
    "timeseries_regression",
    competition_types=["timeseries_regression", "forecasting", "timeseries"],
    priority=10,
    description="Multi-step-ahead forecasting: an RNN over texts (+ optional target history and decomposition).",
)
class TimeSeriesRegressionHead(_RecurrentHead):
    """Multi-step-ahead regression: ``horizon`` future values per sequence.

    ``extra``: the RNN options, ``horizon`` (default 1), ``history`` (default False: also encode the past
    values of the target, passed to forward as ``target_history [B, L]``), ``decomposition`` (implies
    ``history``: encode the moving-average trend and the remainder of the history instead of the raw values),
    ``decomposition_window`` (default 5). With a history, forecasts are residual to the last observed value.
    Targets (and the history) are standardised with the training targets' mean/std (buffers saved with the
    model). Outputs: ``logits [B, horizon]`` (standardised), ``predictions [B, horizon]`` and, with a history,
    ``last_value [B]`` (the forecast origin, used for directional accuracy). Losses: ``mse`` (default),
    ``mae``, ``huber``. Metrics: MAPE, sMAPE, RMSE, MAE, directional accuracy.
    """

    task = "timeseries"
    default_pooling = "none"
    target_mean: torch.Tensor  # buffers, scalar
    target_std: torch.Tensor

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        return {
            "num_labels": 1,
            "extra": {"rnn": "gru", "bidirectional": False, "rnn_hidden": 16, "horizon": 3},
        }

    def example_targets(self, batch_size: int, seq_len: int, generator: torch.Generator) -> Any:
        return torch.randn(batch_size, self.horizon, generator=generator)

    @staticmethod
    def default_output_size(config: HeadConfig) -> int:
        horizon = int(config.extra.get("horizon", 1))
        if horizon < 1:
            raise ConfigError(f"horizon must be >= 1, got {horizon}")
        return horizon

    def _build_sequence_modules(self) -> None:
        extra = self.config.extra
        self.horizon = int(extra.get("horizon", 1))
        self.decomposition = bool(extra.get("decomposition", False))
        self.use_history = self.decomposition or bool(extra.get("history", False))
        self.decomposition_window = int(extra.get("decomposition_window", 5))
        super()._build_sequence_modules()
        self.history_rnn: nn.GRU | None = None
        if self.use_history:  # past target values: 1 channel, or trend + remainder
            channels = 2 if self.decomposition else 1
            self.history_rnn = nn.GRU(channels, self.rnn_hidden, batch_first=True)

    def _projection_input_size(self) -> int:
        return self.rnn_hidden * (self.num_directions + (1 if self.use_history else 0))

    def _build_output_layer(self) -> None:
        super()._build_output_layer()
        self.register_buffer("target_mean", torch.zeros(()))
        self.register_buffer("target_std", torch.ones(()))

    def _build_loss_function(self) -> None:
        self.loss_type = check_choice("loss_type", self.config.loss_type or "mse", ("mse", "mae", "huber"))

    def _encode_history(self, target_history: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """History features ``[B, R]`` and the standardised last value ``[B, 1]``."""
        z = (target_history.float() - self.target_mean) / self.target_std  # [B, L]
        if self.decomposition:
            trend, remainder = decompose_series(z, self.decomposition_window)
            channels = torch.stack([trend, remainder], dim=-1)  # [B, L, 2]
        else:
            channels = z.unsqueeze(-1)  # [B, L, 1]
        assert self.history_rnn is not None
        _, h_n = self.history_rnn(channels)  # [1, B, R]
        return h_n[-1], z[:, -1:]

    def forward(
        self,
        hidden_states: Any,
        attention_mask: torch.Tensor | None = None,
        sequence_mask: torch.Tensor | None = None,
        target_history: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> dict:
        """Forecast ``horizon`` values; ``target_history [B, L]`` (past target values, oldest first) is
        required when the head was built with ``history``/``decomposition`` and ignored otherwise."""
        feats = self._encode_sequence(hidden_states, attention_mask, sequence_mask)  # [B, dirs * R]
        base = None
        if self.use_history:
            if target_history is None:
                raise ConfigError(
                    "this timeseries_regression head was built with history/decomposition: pass the past target "
                    "values as target_history=[B, L] to forward"
                )
            target_history = torch.as_tensor(target_history, device=feats.device)
            hist, base = self._encode_history(target_history)
            feats = torch.cat([feats, hist.to(feats.dtype)], dim=-1)  # [B, (dirs + 1) * R]
        z = self._features_to_logits(self.projection(feats)).float()  # [B, horizon]
        if base is not None:
            z = z + base  # forecast the change from the last observed value
        out = {"logits": z, "predictions": z * self.target_std + self.target_mean}
        if target_history is not None and self.use_history:
            out["last_value"] = target_history[:, -1].float()  # [B]
        return out

    def prepare_targets(self, targets: np.ndarray) -> None:
        """Store the mean and std (floor 1e-6) over all training target values."""
        t = np.asarray(targets, dtype=np.float64)
        self.target_mean.fill_(float(t.mean()))
        self.target_std.fill_(float(max(t.std(), 1e-6)))

    def compute_loss(self, outputs: dict[str, torch.Tensor], targets: torch.Tensor) -> torch.Tensor:
        z = outputs["logits"]  # [B, horizon]
        y = (targets.float().view(z.shape) - self.target_mean) / self.target_std
        if self.loss_type == "mae":
            return F.l1_loss(z, y)
        if self.loss_type == "huber":
            return F.huber_loss(z, y, delta=float(self.config.extra.get("huber_delta", 1.0)))
        return F.mse_loss(z, y)

    def compute_metrics(self, outputs: dict[str, np.ndarray], targets: np.ndarray) -> dict[str, float]:
        pred = np.asarray(outputs["predictions"]).reshape(len(targets), -1)
        true = np.asarray(targets).reshape(len(targets), -1)
        return metrics.timeseries_metrics(true, pred, last_value=outputs.get("last_value"))

    def primary_metric(self) -> tuple[str, str]:
        return "rmse", "min"

    def format_predictions(self, outputs: dict[str, np.ndarray], proba: bool = False) -> dict[str, Any]:
        pred = np.asarray(outputs["predictions"]).reshape(len(outputs["predictions"]), -1)
        if pred.shape[1] == 1:
            return {"prediction": pred[:, 0].tolist()}
        return {f"prediction_{h + 1}": pred[:, h].tolist() for h in range(pred.shape[1])}
