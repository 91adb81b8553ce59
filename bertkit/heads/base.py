"""The head contract, the extension points for custom heads, and the head registry.

A head reads encoder states and returns a dict of tensors; ``compute_loss(outputs, targets)`` is separate
from ``forward`` so inference never needs labels. A custom head needs ~20 lines (see README):
override ``_build_output_layer``, ``_build_loss_function`` and, if needed, ``forward``/``compute_loss``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
from torch import nn

from bertkit.config import HeadConfig, PoolingType
from bertkit.errors import ConfigError
from bertkit.heads.blocks import blocks_from_extra, intermediate_from_extra
from bertkit.pooling import Pooler
from bertkit.registry import Registry

HEADS: Registry[type[BaseHead]] = Registry("head")

_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "gelu": nn.GELU,
    "relu": nn.ReLU,
    "tanh": nn.Tanh,
    "silu": nn.SiLU,
}


def register_head(
    name: str, competition_types: list[str] | None = None, priority: int = 0, description: str = ""
) -> Callable[[type[BaseHead]], type[BaseHead]]:
    """Class decorator adding a head to the registry under ``name`` (duplicates raise).

    Args:
        name: registry name saved in model folders (``head/config.json``'s ``head_type``).
        competition_types: competition types this head serves (``create_bert_for_competition``).
        priority: higher wins when several heads serve the same competition type.
        description: one line shown by ``bertkit heads`` (defaults to the docstring's first line).
    """

    def decorator(cls: type[BaseHead]) -> type[BaseHead]:
        doc = description or ((cls.__doc__ or "").strip().splitlines() or [""])[0]
        HEADS.add(
            name, cls, competition_types=list(competition_types or []), priority=priority, description=doc
        )
        cls.registry_name = name
        return cls

    return decorator


def get_head_class(name: str) -> type[BaseHead]:
    """The head class registered as ``name`` (unknown names raise listing the valid ones)."""
    return HEADS.get(name)


def list_heads() -> list[str]:
    """Names of all registered heads."""
    return HEADS.names()


def head_description(name: str) -> str:
    """One-line description of a registered head."""
    return str(HEADS.meta(name).get("description", ""))


def heads_for_competition(competition_type: str) -> list[str]:
    """Registered heads serving ``competition_type``, best (highest priority) first."""
    key = str(getattr(competition_type, "value", competition_type)).lower()
    found = [
        (HEADS.meta(n)["priority"], n) for n in HEADS.names() if key in HEADS.meta(n)["competition_types"]
    ]
    return [n for _, n in sorted(found, key=lambda t: (-t[0], t[1]))]


def create_head(config: HeadConfig | dict[str, Any]) -> BaseHead:
    """Instantiate the registered head named by ``config.head_type``."""
    if isinstance(config, dict):
        config = HeadConfig.from_dict(config)
    return get_head_class(config.head_type)(config)


def to_numpy(x: Any) -> np.ndarray:
    """Detach a tensor (or pass an array) to numpy float32/int64."""
    if isinstance(x, torch.Tensor):
        x = x.detach().float().cpu().numpy() if x.is_floating_point() else x.detach().cpu().numpy()
    return np.asarray(x)


class BaseHead(nn.Module):
    """Base class of every head.

    Class attributes:
        task: task family used for metrics, reports and data preparation ("binary", "multiclass",
            "multilabel", "regression", "ordinal", "token", "qa", "pair", ...).
        level: "sequence" (one vector per text), "token" (``[B, T, C]`` outputs) or "bi_encoder" (two passes).
        default_pooling: pooling the factories choose when the user names none.

    Extension points: ``_build_output_layer``, ``_build_loss_function``, ``forward``, ``compute_loss``,
    ``compute_metrics``, ``fit_postprocessing`` (calibration on validation outputs), ``prepare_targets``
    (e.g. target standardisation from the training targets), ``format_predictions`` (submission columns).
    """

    registry_name: ClassVar[str] = ""
    task: ClassVar[str] = "generic"
    level: ClassVar[str] = "sequence"
    default_pooling: ClassVar[str] = "cls"

    def __init__(self, config: HeadConfig) -> None:
        super().__init__()
        self.config = config
        if config.output_size is None:
            config.output_size = self.default_output_size(config)
        self.pooler: Pooler | None = None
        if config.pooling_type != PoolingType.NONE.value:
            self.pooler = Pooler(
                config.pooling_type,
                config.input_size,
                config.max_position_embeddings,
                num_layers=int(config.extra.get("pooling_layers", 4)),
            )
        # optional task attention / FFN over the token states (extra keys, see blocks.py); None by default
        self.token_blocks = blocks_from_extra(config.extra, config.input_size, config.dropout_prob)
        self.projection, self.projection_output_size = self._build_projection()
        self.dropout = nn.Dropout(config.dropout_prob)
        self._build_output_layer()
        self._build_loss_function()

    @property
    def reads_first_token_only(self) -> bool:
        """True when the outputs depend on the encoder's first-token state alone (``cls``/``pooler`` pooling,
        no token blocks, the base ``forward``): the encoder may then skip the rest of its last layer."""
        cls = type(self)
        return (
            self.level == "sequence"
            and cls.forward is BaseHead.forward
            and cls._apply_pooling is BaseHead._apply_pooling
            and cls._unpack is BaseHead._unpack
            and self.token_blocks is None
            and self.pooler is not None
            and self.pooler.pooling_type in (PoolingType.CLS.value, PoolingType.POOLER.value)
        )

    # ------------------------------------------------------------ build hooks
    @staticmethod
    def default_output_size(config: HeadConfig) -> int:
        """Number of logits for this head given its config (default: one per label)."""
        return config.num_labels

    def _projection_input_size(self) -> int:
        """Width of the pooled features entering the projection (default: ``input_size``)."""
        return self.config.input_size

    def _build_projection(self) -> tuple[nn.Module, int]:
        """Optional intermediate projection (``extra["intermediate_size"]``) then MLP, before the output layer."""
        sizes = list(self.config.hidden_sizes)
        width = self._projection_input_size()
        layers: list[nn.Module] = []
        act = _ACTIVATIONS[self.config.activation]
        intermediate = intermediate_from_extra(self.config.extra, width, act, self.config.dropout_prob)
        if intermediate is not None:  # [B, H] -> [B, I]
            layers.append(intermediate)
            width = intermediate.linear.out_features
        if not layers and not sizes:
            return nn.Identity(), width
        for size in sizes:
            layers += [
                nn.Linear(width, size),
                _ACTIVATIONS[self.config.activation](),
                nn.Dropout(self.config.dropout_prob),
            ]
            width = size
        return nn.Sequential(*layers), width

    def _build_output_layer(self) -> None:
        """Create ``self.output`` (default: a linear layer to ``output_size`` logits)."""
        self.output = nn.Linear(self.projection_output_size, int(self.config.output_size or 1))

    def _build_loss_function(self) -> None:
        """Create ``self.loss_fn`` (default: none; heads override)."""
        self.loss_fn: Callable[..., torch.Tensor] | None = None

    # --------------------------------------------------------------- forward
    def _unpack(
        self, hidden_states: Any, attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Accept BertOutput, a dict, ``[B, T, H]`` or pooled ``[B, H]``; return (states, mask, pooler_output).

        Token states ``[B, T, H]`` go through the optional token block stack (``self.token_blocks``).
        """
        pooler_output = None
        if hasattr(hidden_states, "last_hidden_state"):
            attention_mask = hidden_states.attention_mask if attention_mask is None else attention_mask
            pooler_output = hidden_states.pooler_output
            hidden_states = hidden_states.last_hidden_state
        elif isinstance(hidden_states, dict):
            attention_mask = hidden_states.get("attention_mask", attention_mask)
            pooler_output = hidden_states.get("pooler_output")
            hidden_states = hidden_states.get("hidden_states", hidden_states.get("last_hidden_state"))
        if not isinstance(hidden_states, torch.Tensor):
            raise ConfigError(
                f"{type(self).__name__} expects a [B, T, H] tensor, a BertOutput or a dict with 'hidden_states'"
            )
        if hidden_states.size(-1) != self.config.input_size:
            raise ConfigError(
                f"{type(self).__name__} was built for input_size={self.config.input_size} but got states of "
                f"width {hidden_states.size(-1)}; set head input_size to the encoder's hidden_size"
            )
        if self.token_blocks is not None and hidden_states.dim() == 3:
            hidden_states = self.token_blocks(hidden_states, attention_mask)  # [B, T, H]
        return hidden_states, attention_mask, pooler_output

    def _apply_pooling(self, hidden_states: Any, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Pool any accepted input into ``[B, H]`` (a ``[B, H]`` input is already pooled)."""
        layers = getattr(hidden_states, "hidden_states", None)  # BertOutput: every layer, when requested
        states, mask, pooler_output = self._unpack(hidden_states, attention_mask)
        if states.dim() == 2 or self.pooler is None:
            return states
        if self.pooler.needs_hidden_states and layers is None and hasattr(hidden_states, "last_hidden_state"):
            raise ConfigError(
                f"pooling_type='{self.pooler.pooling_type}' reads every layer's states; build the encoder with "
                "output_hidden_states=True (model.bert_options.output_hidden_states: true)"
            )
        return self.pooler(states, mask, pooler_output, all_hidden_states=layers)

    def _features_to_logits(self, features: torch.Tensor) -> torch.Tensor:
        """Dropout + output layer; with multi-sample dropout, the mean over K masks while training."""
        k = self.config.multi_sample_dropout
        if self.training and k > 1:
            return torch.stack([self.output(self.dropout(features)) for _ in range(k)]).mean(0)
        return self.output(self.dropout(features))

    def forward(self, hidden_states: Any, attention_mask: torch.Tensor | None = None, **kwargs: Any) -> dict:
        """Pool → project → logits → task outputs (``_make_outputs``)."""
        pooled = self._apply_pooling(hidden_states, attention_mask)  # [B, H]
        logits = self._features_to_logits(self.projection(pooled))  # [B, output_size]
        return self._make_outputs(logits)

    def _make_outputs(self, logits: torch.Tensor) -> dict[str, torch.Tensor]:
        return {"logits": logits}

    # ------------------------------------------------------- loss and metrics
    def compute_loss(self, outputs: dict[str, torch.Tensor], targets: Any) -> torch.Tensor:
        """Scalar training loss from ``forward``'s outputs and the targets."""
        if self.loss_fn is None:
            raise ConfigError(f"{type(self).__name__} defines no loss; override _build_loss_function")
        return self.loss_fn(outputs["logits"], targets)

    def compute_metrics(self, outputs: dict[str, np.ndarray], targets: np.ndarray) -> dict[str, float]:
        """Metrics over a whole dataset (numpy outputs concatenated over batches)."""
        return {}

    def primary_metric(self) -> tuple[str, str]:
        """(metric name, "max" | "min") used for early stopping by default."""
        return "loss", "min"

    def prepare_targets(self, targets: np.ndarray) -> None:
        """Called once with the training targets before training (e.g. to standardise regression targets)."""

    def fit_postprocessing(self, outputs: dict[str, np.ndarray], targets: np.ndarray) -> dict[str, float]:
        """Fit post-hoc settings on validation outputs (temperature, thresholds); returns a report."""
        return {}

    def format_predictions(self, outputs: dict[str, np.ndarray], proba: bool = False) -> dict[str, Any]:
        """Columns of a prediction file: ``{"prediction": ...}`` plus probabilities when ``proba``."""
        return {"prediction": outputs.get("predictions", outputs["logits"]).tolist()}

    def label_names(self) -> list[str]:
        """Class names (``label_0``... when none were given)."""
        names = list(self.config.label_names)
        return names or [f"label_{i}" for i in range(self.config.num_labels)]

    @classmethod
    def example_config(cls) -> dict[str, Any]:
        """Small HeadConfig values for this head (the registry sweep tests and docs build heads from it)."""
        return {"num_labels": 3}

    def example_targets(self, batch_size: int, seq_len: int, generator: torch.Generator) -> Any:
        """Random valid targets for a batch of ``batch_size`` texts of ``seq_len`` tokens (sweep tests)."""
        return torch.randint(0, self.config.num_labels, (batch_size,), generator=generator)

    def extra_repr(self) -> str:
        return f"registry_name={self.registry_name!r}, task={self.task!r}"
