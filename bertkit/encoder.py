"""BertCore: any Hugging Face encoder (or decoder) behind one forward signature, returning BertOutput.

``BertCore.forward(input_ids, attention_mask, token_type_ids=None) -> BertOutput`` is the contract every head
relies on, whatever the architecture (BERT, DistilBERT, RoBERTa, DeBERTa-v2/v3, ELECTRA, ModernBERT, Qwen3...).
"""

from __future__ import annotations

import inspect
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bertkit.config import BertConfig
from bertkit.errors import ConfigError, ModelFolderError
from bertkit.first_token import install_first_token_shortcut, supports_first_token_shortcut
from bertkit.pooling import cls_pool, last_pool, max_pool, mean_pool

logger = logging.getLogger(__name__)

BUNDLED_ALIASES = ("minilm", "all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2")
_EMBEDDING_NAMES = {"embeddings", "embed_tokens", "embeddings_project", "rel_embeddings", "wte", "wpe"}


@dataclass
class BertOutput:
    """The uniform encoder output every head reads.

    Attributes:
        last_hidden_state: ``[B, T, H]`` final token states.
        attention_mask: ``[B, T]`` 1 for real tokens.
        pooler_output: ``[B, H]`` the backbone's pooler, else a learned dense+tanh over CLS, else CLS.
        hidden_states: all layers' states (embeddings first) when requested, else None.
    """

    last_hidden_state: torch.Tensor
    attention_mask: torch.Tensor
    pooler_output: torch.Tensor | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None

    @property
    def cls_output(self) -> torch.Tensor:
        """``[B, H]`` state of the first real token."""
        return cls_pool(self.last_hidden_state, self.attention_mask)

    @property
    def mean_pooled(self) -> torch.Tensor:
        """``[B, H]`` mean over real tokens."""
        return mean_pool(self.last_hidden_state, self.attention_mask)

    @property
    def max_pooled(self) -> torch.Tensor:
        """``[B, H]`` max over real tokens (padding can never win)."""
        return max_pool(self.last_hidden_state, self.attention_mask)

    @property
    def last_token_output(self) -> torch.Tensor:
        """``[B, H]`` state of the last real token (left or right padding)."""
        return last_pool(self.last_hidden_state, self.attention_mask)

    def get_pooled_output(self, kind: str = "cls") -> torch.Tensor:
        """Return one pooled ``[B, H]`` view: ``"cls" | "mean" | "max" | "pooler" | "last"``."""
        kind = str(getattr(kind, "value", kind)).lower()
        if kind == "cls":
            return self.cls_output
        if kind == "mean":
            return self.mean_pooled
        if kind == "max":
            return self.max_pooled
        if kind == "last":
            return self.last_token_output
        if kind == "pooler":
            return self.pooler_output if self.pooler_output is not None else self.cls_output
        raise ConfigError(f"unknown pooled output '{kind}'; choose one of: cls, mean, max, pooler, last")


def resolve_model_path(name: str) -> str:
    """Map the bundled alias ``"minilm"`` to its folder; leave local folders and hub ids as they are."""
    if name.lower() in BUNDLED_ALIASES:
        from bertkit.data.minilm import minilm_path

        return str(minilm_path())
    return name


def is_decoder_only(model_type: str) -> bool:
    """True for causal-LM-only architectures (Qwen, Llama, GPT...), which want left padding + last pooling."""
    from transformers.models.auto.modeling_auto import (
        MODEL_FOR_CAUSAL_LM_MAPPING_NAMES,
        MODEL_FOR_MASKED_LM_MAPPING_NAMES,
    )

    return (
        model_type in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
        and model_type not in MODEL_FOR_MASKED_LM_MAPPING_NAMES
    )


def build_hf_config(cfg: BertConfig) -> Any:
    """A ``transformers`` config for a from-scratch model of ``cfg.model_type`` with ``cfg``'s sizes."""
    from transformers import AutoConfig

    try:
        defaults = AutoConfig.for_model(cfg.model_type)
    except ValueError as exc:
        raise ConfigError(
            f"unknown model_type '{cfg.model_type}' for a from-scratch encoder: {exc}"
        ) from None
    ffn = cfg.intermediate_size or 4 * cfg.hidden_size
    values: dict[str, Any] = {
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads,
        "num_key_value_heads": cfg.num_attention_heads,
        "head_dim": cfg.hidden_size // cfg.num_attention_heads,
        "intermediate_size": ffn,
        "hidden_dim": ffn,  # DistilBERT's name for the FFN width
        "embedding_size": cfg.hidden_size,  # ELECTRA
        "vocab_size": cfg.vocab_size,
        "max_position_embeddings": cfg.max_position_embeddings,
        # the bundled WordPiece tokenizer's special tokens: [PAD]=0, [CLS]=101, [SEP]=102
        "pad_token_id": 0,
        "cls_token_id": 101,
        "sep_token_id": 102,
        "bos_token_id": 101,
        "eos_token_id": 102,
    }
    attribute_map = getattr(defaults, "attribute_map", {})
    kwargs: dict[str, Any] = {}
    for key, value in values.items():
        if key in attribute_map:
            kwargs[attribute_map[key]] = value
        elif hasattr(defaults, key):
            kwargs[key] = value
    kwargs.update(cfg.extra_config)
    try:
        return AutoConfig.for_model(cfg.model_type, **kwargs)
    except (ValueError, TypeError) as exc:
        raise ConfigError(
            f"invalid from-scratch '{cfg.model_type}' config: {str(exc).splitlines()[0]}"
        ) from None


def _apply_dropout(hf_config: Any, cfg: BertConfig) -> None:
    pairs = {
        "hidden_dropout_prob": ("hidden_dropout_prob", "dropout", "hidden_dropout"),
        "attention_probs_dropout_prob": ("attention_probs_dropout_prob", "attention_dropout"),
    }
    for ours, theirs in pairs.items():
        value = getattr(cfg, ours)
        if value is None:
            continue
        for name in theirs:
            if hasattr(hf_config, name):
                setattr(hf_config, name, value)


class CNNHybrid(nn.Module):
    """Masked 1-D convolutions over token states with a residual (the ``cnn_hybrid`` encoder variant)."""

    def __init__(self, hidden_size: int, kernel_sizes: list[int]) -> None:
        super().__init__()
        self.convs = nn.ModuleList(
            nn.Conv1d(hidden_size, hidden_size, k, padding=k // 2) for k in kernel_sizes
        )
        self.norm = nn.LayerNorm(hidden_size)

    def forward(self, hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``[B, T, H]`` → ``[B, T, H]``; padded positions stay out of every receptive field."""
        m = mask.unsqueeze(-1).to(hidden.dtype)  # [B, T, 1]
        x = (hidden * m).transpose(1, 2)  # [B, H, T]
        conv = torch.stack([nn.functional.gelu(c(x))[..., : x.size(-1)] for c in self.convs]).mean(0)
        return self.norm(hidden + conv.transpose(1, 2)) * m


class BertCore(nn.Module):
    """Wraps a ``transformers`` AutoModel and returns :class:`BertOutput`.

    Args:
        config: how to build the encoder (pretrained path/alias or from-scratch sizes).
        hf_config: a ready ``transformers`` config; when given, the model is built from it without
            loading any weights (used when restoring a saved model folder).
    """

    def __init__(self, config: BertConfig, hf_config: Any | None = None) -> None:
        super().__init__()
        from transformers import AutoConfig, AutoModel

        self.config = config
        attn = config.attn_implementation
        if hf_config is None and config.model_name_or_path:
            path = resolve_model_path(config.model_name_or_path)
            try:
                hf_config = AutoConfig.from_pretrained(path)
            except OSError as exc:
                raise ConfigError(
                    f"cannot load encoder '{config.model_name_or_path}': {str(exc).splitlines()[0]} "
                    "(give a local folder with config.json, 'minilm', or a hub id with internet access)"
                ) from None
            _apply_dropout(hf_config, config)
            self.model = self._load(AutoModel.from_pretrained, path, config=hf_config, attn=attn)
        else:
            if hf_config is None:
                hf_config = build_hf_config(config)
            _apply_dropout(hf_config, config)
            self.model = self._load(AutoModel.from_config, hf_config, attn=attn)
        self.hf_config = self.model.config
        self.hidden_size = int(self.hf_config.hidden_size)
        self.num_layers = int(self.hf_config.num_hidden_layers)
        self.model_type = str(self.hf_config.model_type)
        self.decoder_only = is_decoder_only(self.model_type)
        params = inspect.signature(self.model.forward).parameters
        self.uses_token_type_ids = (
            "token_type_ids" in params and int(getattr(self.hf_config, "type_vocab_size", 0) or 0) > 1
        )
        self.has_native_pooler = getattr(self.model, "pooler", None) is not None
        self.extra_pooler: nn.Module | None = None
        if not self.has_native_pooler and config.add_pooler_if_missing:
            self.extra_pooler = nn.Sequential(nn.Linear(self.hidden_size, self.hidden_size), nn.Tanh())
        self.cnn: CNNHybrid | None = None
        if config.bert_variant == "cnn_hybrid":
            self.cnn = CNNHybrid(self.hidden_size, list(config.cnn_kernel_sizes))
        if config.gradient_checkpointing:
            self.model.gradient_checkpointing_enable()
        self._layers = self._find_layers()
        # the last layer can compute the first token alone for heads that read nothing else (first_token.py)
        last = self._layers[-1]
        self.supports_first_token_only = (
            not self.decoder_only
            and self.cnn is None
            and not config.gradient_checkpointing
            and supports_first_token_shortcut(last, self.hf_config)
            and install_first_token_shortcut(last, self.hidden_size)
        )

    @staticmethod
    def _load(fn: Any, *args: Any, attn: str, **kwargs: Any) -> nn.Module:
        try:
            return fn(*args, attn_implementation=attn, **kwargs)
        except (ValueError, ImportError) as exc:
            if attn == "eager":
                raise
            logger.info("attn_implementation=%s unavailable (%s); using eager", attn, exc)
            return fn(*args, attn_implementation="eager", **kwargs)

    # ----------------------------------------------------------------- layers
    def _find_layers(self) -> nn.ModuleList:
        for _, module in self.model.named_modules():
            if isinstance(module, nn.ModuleList) and len(module) == self.num_layers:
                return module
        raise ConfigError(
            f"cannot find the {self.num_layers} transformer layers of a '{self.model_type}' model"
        )

    @property
    def layers(self) -> nn.ModuleList:
        """The transformer blocks, bottom first."""
        return self._layers

    def embedding_modules(self) -> list[nn.Module]:
        """Modules that embed tokens/positions (frozen first by ``freeze(num_layers=k)``)."""
        layer_ids = {id(m) for layer in self._layers for m in layer.modules()}
        return [
            m
            for name, m in self.model.named_modules()
            if name.split(".")[-1] in _EMBEDDING_NAMES and id(m) not in layer_ids
        ]

    def parameter_depth(self) -> dict[str, int]:
        """Map each parameter name to its depth: 0 embeddings, i+1 layer i, L+1 anything above (LLRD)."""
        depth: dict[str, int] = {}
        emb = {id(p) for m in self.embedding_modules() for p in m.parameters()}
        layer_of = {id(p): i + 1 for i, layer in enumerate(self._layers) for p in layer.parameters()}
        for name, p in self.named_parameters():
            depth[name] = 0 if id(p) in emb else layer_of.get(id(p), self.num_layers + 1)
        return depth

    def freeze(self, num_layers: int | None = None) -> None:
        """Freeze everything (``None``) or the embeddings and the first ``num_layers`` layers."""
        if num_layers is None:
            for p in self.parameters():
                p.requires_grad_(False)
            return
        if not 0 <= num_layers <= self.num_layers:
            raise ConfigError(
                f"num_layers={num_layers} is out of range; this encoder has {self.num_layers} layers"
            )
        for m in self.embedding_modules():
            for p in m.parameters():
                p.requires_grad_(False)
        for layer in list(self._layers)[:num_layers]:
            for p in layer.parameters():
                p.requires_grad_(False)

    def unfreeze(self) -> None:
        """Make every encoder parameter trainable."""
        for p in self.parameters():
            p.requires_grad_(True)

    # ---------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool | None = None,
        inputs_embeds: torch.Tensor | None = None,
        first_token_only: bool = False,
    ) -> BertOutput:
        """Encode ``input_ids [B, T]`` into a :class:`BertOutput`.

        With ``first_token_only`` (honoured where ``supports_first_token_only``, without hidden states or
        gradient checkpointing) the last layer runs for the first token alone: ``last_hidden_state`` and
        ``attention_mask`` are then ``[B, 1, H]`` and ``[B, 1]``, and the first token's values are unchanged.
        """
        if attention_mask is None:
            ref = input_ids if input_ids is not None else inputs_embeds[..., 0]
            attention_mask = torch.ones(ref.shape[:2], dtype=torch.long, device=ref.device)
        want_all = self.config.output_hidden_states if output_hidden_states is None else output_hidden_states
        kwargs: dict[str, Any] = {"attention_mask": attention_mask, "output_hidden_states": want_all}
        if inputs_embeds is not None:
            kwargs["inputs_embeds"] = inputs_embeds
        else:
            kwargs["input_ids"] = input_ids
        if self.uses_token_type_ids and token_type_ids is not None:
            kwargs["token_type_ids"] = token_type_ids
        if self.decoder_only:
            kwargs["use_cache"] = False
        shortcut = (
            first_token_only
            and self.supports_first_token_only
            and not want_all
            and not self._checkpointing_active()
        )
        if shortcut:
            last: Any = self._layers[-1]
            last.first_token_only = True
            try:
                out = self.model(**kwargs)
            finally:
                last.first_token_only = False
            attention_mask = attention_mask[:, :1]  # [B, 1]: the only position computed
        else:
            out = self.model(**kwargs)
        hidden = out.last_hidden_state  # [B, T, H]
        if self.cnn is not None:
            hidden = self.cnn(hidden, attention_mask)
        pooler = getattr(out, "pooler_output", None)
        if pooler is None and self.extra_pooler is not None:
            pooler = self.extra_pooler(cls_pool(hidden, attention_mask))
        return BertOutput(
            last_hidden_state=hidden,
            attention_mask=attention_mask,
            pooler_output=pooler,
            hidden_states=tuple(out.hidden_states) if want_all and out.hidden_states is not None else None,
        )

    def _checkpointing_active(self) -> bool:
        """Whether activation checkpointing was switched on after construction (the shortcut cannot recompute)."""
        for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):  # newer name first
            if hasattr(type(self.model), name):
                return bool(getattr(self.model, name))
        return False

    def get_input_embeddings(self) -> nn.Module:
        """The token embedding table (for adversarial training and resizing)."""
        return self.model.get_input_embeddings()

    def resize_token_embeddings(self, n: int) -> None:
        """Resize the vocabulary (e.g. after adding entity marker tokens)."""
        self.model.resize_token_embeddings(n)
        self.hf_config = self.model.config

    # ------------------------------------------------------------ persistence
    def save(self, folder: str | os.PathLike[str]) -> None:
        """Write ``config.json`` (transformers), ``bert_core_config.json`` and ``model.safetensors``."""
        from safetensors.torch import save_model

        from bertkit.fileio import atomic_path, write_json_atomic

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        self.hf_config.save_pretrained(folder)
        write_json_atomic(folder / "bert_core_config.json", self.config.to_dict())
        with atomic_path(folder / "model.safetensors") as tmp:
            save_model(self, str(tmp), metadata={"format": "pt", "bertkit": "bert_core"})

    @classmethod
    def load(cls, folder: str | os.PathLike[str]) -> BertCore:
        """Rebuild a saved BertCore without touching the network."""
        from transformers import AutoConfig

        from bertkit.persistence import load_safetensors_into, read_json

        folder = Path(folder)
        cfg = BertConfig.from_dict(read_json(folder / "bert_core_config.json"))
        if not (folder / "config.json").is_file():
            raise ModelFolderError(f"{folder} has no config.json; it is not a saved bertkit encoder")
        hf_config = AutoConfig.from_pretrained(folder)
        core = cls(cfg, hf_config=hf_config)
        load_safetensors_into(core, folder / "model.safetensors")
        return core
