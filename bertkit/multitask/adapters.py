"""Adapter strategies on one shared encoder: LoRA through PEFT, plus the fusion modules PEFT lacks.

=========  =====================================================================================
strategy   features of task ``t`` (``E(x; A)``: the encoder with the LoRA adapters ``A`` active)
=========  =====================================================================================
none       ``E(x)`` with every encoder weight trained (full fine-tuning, no adapters)
s1         ``E(x; task_t)``: one private LoRA per task
s2         ``E(x; shared)``: one LoRA shared by every task
s3a        ``fusion(E(x; shared), E(x; task_t))``: shared LoRA (r=16) ‖ private LoRA (r=8) + fusion
s3b        hierarchical (see :mod:`bertkit.multitask.hierarchical`)
s4         stage 1: ``E(x; shared)`` for every task; stage 2: ``E(x; shared + task_t)``, shared frozen
=========  =====================================================================================

Fusions (S3a; each acts per token on ``[..., H]`` states): :class:`AttentionFusion` (learned attention of
the shared state over {shared, private}), :class:`GatedResidual` (``g = σ(W[h_s; h_p])``,
``g·h_s + (1-g)·h_p``) and :class:`ConcatFusion` (``[h_s; h_p]``, no parameters: the head reads ``2H``).

The LoRA adapters themselves are PEFT's (``get_peft_model`` / ``add_adapter``, saved with PEFT's
``save_pretrained`` as safetensors). Routing activates several adapters at once on every LoRA layer (their
updates add up) while keeping bertkit in charge of which adapters are trainable.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bertkit.encoder import BertCore, BertOutput
from bertkit.errors import ConfigError, ModelFolderError
from bertkit.multitask.config import AdapterConfig

SHARED = "shared"
LEVEL1 = "level1"

#: module-name suffixes of the attention projections (q, k, v, o) of the supported backbones
ATTENTION_SUFFIXES = (
    "query", "key", "value", "attention.output.dense",  # BERT, RoBERTa, ELECTRA, DeBERTa (+ *_proj)
    "query_proj", "key_proj", "value_proj",  # DeBERTa-v2/v3
    "q_lin", "k_lin", "v_lin", "out_lin",  # DistilBERT
    "q_proj", "k_proj", "v_proj", "o_proj",  # Qwen, Llama
    "Wqkv", "Wo",  # ModernBERT
)  # fmt: skip

Encode = Callable[[tuple[str, ...], bool], BertOutput]


def private_name(task: str) -> str:
    """PEFT adapter name of a task's private adapter."""
    return f"task_{task}"


# ------------------------------------------------------------------------------------------------- fusion
class AttentionFusion(nn.Module):
    """Learned attention of the shared state over the candidates {shared, private}, per token.

    ``α = softmax_c((W_q h_s) · (W_k h_c) / √d)``, ``h = α_s h_s + α_p h_p`` (values are the states).

    Args:
        hidden: state width H.
        dim: query/key width d.
    """

    output_multiplier = 1

    def __init__(self, hidden: int, dim: int = 64) -> None:
        super().__init__()
        self.query = nn.Linear(hidden, dim, bias=False)
        self.key = nn.Linear(hidden, dim, bias=False)
        self.scale = 1.0 / math.sqrt(dim)

    def forward(self, shared: torch.Tensor, private: torch.Tensor) -> torch.Tensor:
        """``[..., H]`` × 2 → ``[..., H]``."""
        cands = torch.stack([shared, private], dim=-2)  # [..., 2, H]
        q = self.query(shared).unsqueeze(-1)  # [..., d, 1]
        scores = (self.key(cands) @ q).squeeze(-1) * self.scale  # [..., 2]
        weights = torch.softmax(scores.float(), dim=-1).to(shared.dtype)  # [..., 2]
        return (weights.unsqueeze(-1) * cands).sum(-2)  # [..., H]


class GatedResidual(nn.Module):
    """``g = sigmoid(W [h_s; h_p] + b)`` per dimension; output ``g · h_s + (1 - g) · h_p``.

    Args:
        hidden: state width H (W is ``2H → H``; b starts at 0, so g starts near 0.5).
    """

    output_multiplier = 1

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.gate = nn.Linear(2 * hidden, hidden)
        nn.init.zeros_(self.gate.bias)

    def forward(self, shared: torch.Tensor, private: torch.Tensor) -> torch.Tensor:
        """``[..., H]`` × 2 → ``[..., H]``."""
        g = torch.sigmoid(self.gate(torch.cat([shared, private], dim=-1)))  # [..., H]
        return g * shared + (1.0 - g) * private


class ConcatFusion(nn.Module):
    """``[h_s; h_p]`` without parameters (ablation A3): the task head reads ``2H`` features."""

    output_multiplier = 2

    def forward(self, shared: torch.Tensor, private: torch.Tensor) -> torch.Tensor:
        """``[..., H]`` × 2 → ``[..., 2H]``."""
        return torch.cat([shared, private], dim=-1)


def make_fusion(kind: str, hidden: int, dim: int = 64) -> nn.Module:
    """``attention`` → :class:`AttentionFusion`, ``gated`` → :class:`GatedResidual`, ``concat`` → :class:`ConcatFusion`."""
    if kind == "attention":
        return AttentionFusion(hidden, dim)
    if kind == "gated":
        return GatedResidual(hidden)
    if kind == "concat":
        return ConcatFusion()
    raise ConfigError(f"fusion='{kind}' is not valid; choose one of: attention, gated, concat")


def fuse_outputs(fusion: nn.Module, shared: BertOutput, private: BertOutput) -> BertOutput:
    """Apply a fusion to the token states (and to the pooler outputs when both have one)."""
    pooler = None
    if shared.pooler_output is not None and private.pooler_output is not None:
        pooler = fusion(shared.pooler_output, private.pooler_output)  # [B, H'] (H' = H or 2H)
    return BertOutput(
        last_hidden_state=fusion(shared.last_hidden_state, private.last_hidden_state),  # [B, T, H']
        attention_mask=shared.attention_mask,
        pooler_output=pooler,
    )


# ---------------------------------------------------------------------------------------------- PEFT glue
def resolve_target_modules(model: nn.Module, spec: Any) -> list[str] | str:
    """LoRA target modules: ``attention`` (q/k/v/o of any supported backbone), ``all-linear`` or a list."""
    if isinstance(spec, list | tuple):
        return [str(s) for s in spec]
    if spec == "all-linear":
        return "all-linear"
    if spec != "attention":
        raise ConfigError(
            f"adapters.target_modules='{spec}' is not valid; use attention, all-linear or a list"
        )
    found = sorted(
        {
            suffix
            for name, module in model.named_modules()
            if isinstance(module, nn.Linear)
            for suffix in ATTENTION_SUFFIXES
            if name == suffix or name.endswith("." + suffix)
        }
    )
    if not found:
        raise ConfigError(
            f"cannot find attention projections in a '{type(model).__name__}'; set adapters.target_modules "
            "to a list of module-name suffixes (or 'all-linear')"
        )
    return found


def lora_config(rank: int, cfg: AdapterConfig, targets: list[str] | str) -> Any:
    """A PEFT ``LoraConfig`` of ``rank`` (``lora_alpha = alpha_ratio * rank``)."""
    from peft import LoraConfig

    return LoraConfig(
        r=int(rank),
        lora_alpha=float(cfg.alpha_ratio) * int(rank),
        lora_dropout=float(cfg.lora_dropout),
        target_modules=targets,
        bias="none",
    )


def _adapter_of(param_name: str) -> str | None:
    """``...lora_A.<adapter>.weight`` → ``<adapter>`` (None for non-LoRA parameters)."""
    parts = param_name.split(".")
    for i, part in enumerate(parts[:-1]):
        if part.startswith("lora_"):
            return parts[i + 1]
    return None


class AdapterStrategy(nn.Module):
    """Creates the PEFT adapters on a :class:`BertCore`, routes each task through them, and fuses.

    Args:
        config: the adapter configuration (strategy, ranks, fusion...).
        task_levels: task name → level (1 or 2; only S3b uses it).
        hidden_size: the encoder's hidden size H.
    """

    def __init__(self, config: AdapterConfig, task_levels: dict[str, int], hidden_size: int) -> None:
        super().__init__()
        if not config.uses_lora:
            raise ConfigError(
                "AdapterStrategy needs an adapter strategy (s1, s2, s3a, s3b or s4), not 'none'"
            )
        self.config = config
        self.tasks = list(task_levels)
        self.hidden_size = int(hidden_size)
        self.stage = 1
        self.frozen_adapters: set[str] = set()
        self._tuner_layers: list[Any] = []
        self._lora_params: list[tuple[nn.Parameter, str]] = []
        self._active: tuple[str, ...] | None = None
        self.fusions = nn.ModuleDict()
        self.hierarchy: nn.Module | None = None
        if config.strategy == "s3a":
            for t in self.tasks:
                self.fusions[t] = make_fusion(config.fusion, hidden_size, config.fusion_dim)
        elif config.strategy == "s3b":
            from bertkit.multitask.hierarchical import HierarchicalFeatures

            self.hierarchy = HierarchicalFeatures(config, task_levels, hidden_size)

    # ---------------------------------------------------------------- structure
    def adapter_ranks(self) -> dict[str, int]:
        """PEFT adapters to create: name → rank."""
        cfg, s = self.config, self.config.strategy
        if s == "s1":
            return {private_name(t): cfg.private_rank for t in self.tasks}
        if s == "s2":
            return {SHARED: cfg.shared_rank}
        if s in ("s3a", "s4"):
            return {SHARED: cfg.shared_rank, **{private_name(t): cfg.private_rank for t in self.tasks}}
        return {SHARED: cfg.shared_rank, LEVEL1: cfg.level1_rank}  # s3b

    def feature_dim(self, task: str) -> int:
        """Width of the features the task's head reads (2H for concat fusion)."""
        if self.config.strategy == "s3a":
            return self.hidden_size * int(getattr(self.fusions[task], "output_multiplier", 1))
        return self.hidden_size

    def task_of_adapter(self, name: str) -> str | None:
        """The task owning a PEFT adapter (None for shared and level-1 adapters)."""
        return next((t for t in self.tasks if private_name(t) == name), None)

    def task_modules(self, task: str) -> list[nn.Module]:
        """Modules of this strategy owned by one task (its fusion, its level-2 adapter)."""
        out: list[nn.Module] = []
        if task in self.fusions:
            out.append(self.fusions[task])
        if self.hierarchy is not None:
            out += self.hierarchy.task_modules(task)
        return out

    # --------------------------------------------------------------------- PEFT
    def attach(self, bert: BertCore) -> None:
        """Wrap ``bert.model`` with fresh PEFT LoRA adapters (the base weights are frozen)."""
        from peft import get_peft_model

        targets = resolve_target_modules(bert.model, self.config.target_modules)
        ranks = self.adapter_ranks()
        names = list(ranks)
        peft_model = get_peft_model(
            bert.model, lora_config(ranks[names[0]], self.config, targets), adapter_name=names[0]
        )
        for name in names[1:]:
            peft_model.add_adapter(name, lora_config(ranks[name], self.config, targets))
        bert.model = peft_model
        self.bind(bert)

    def attach_saved(self, bert: BertCore, folder: str | Path) -> None:
        """Wrap ``bert.model`` with the adapters saved under ``folder`` (one PEFT folder per adapter)."""
        from peft import PeftModel

        folder = Path(folder)
        names = list(self.adapter_ranks())
        missing = [n for n in names if not (folder / n / "adapter_config.json").is_file()]
        if missing:
            raise ModelFolderError(
                f"{folder} lacks the adapter folder(s) {missing}; the model folder is incomplete"
            )
        peft_model = PeftModel.from_pretrained(
            bert.model, str(folder / names[0]), adapter_name=names[0], is_trainable=True
        )
        for name in names[1:]:
            peft_model.load_adapter(str(folder / name), adapter_name=name, is_trainable=True)
        bert.model = peft_model
        self.bind(bert)

    def bind(self, bert: BertCore) -> None:
        """Remember the LoRA layers and parameters of a PEFT-wrapped encoder."""
        from peft.tuners.tuners_utils import BaseTunerLayer

        self._tuner_layers = [m for m in bert.model.modules() if isinstance(m, BaseTunerLayer)]
        self._lora_params = [
            (p, adapter) for n, p in bert.model.named_parameters() if (adapter := _adapter_of(n)) is not None
        ]
        self._active = None
        self.apply_trainable()
        base = bert.model.get_base_model()
        if getattr(base, "is_gradient_checkpointing", False):
            # One forward runs the encoder under several adapter combinations; backward recomputes each
            # checkpointed layer later, so it must re-activate the combination that layer first ran with.
            base.gradient_checkpointing_enable(
                gradient_checkpointing_kwargs={"use_reentrant": False, "context_fn": self.recompute_context}
            )

    def recompute_context(
        self,
    ) -> tuple[contextlib.AbstractContextManager, contextlib.AbstractContextManager]:
        """``torch.utils.checkpoint`` context_fn: recompute with the adapters active in the forward pass."""
        return contextlib.nullcontext(), self._activated(self._active)

    @contextlib.contextmanager
    def _activated(self, adapters: tuple[str, ...] | None) -> Iterator[None]:
        previous = self._active
        if adapters is not None:
            self.activate(adapters)
        try:
            yield
        finally:
            if previous is not None:
                self.activate(previous)

    def save_adapters(self, bert: BertCore, folder: str | Path) -> None:
        """PEFT's ``save_pretrained``: ``folder/<adapter>/adapter_config.json + adapter_model.safetensors``."""
        bert.model.save_pretrained(str(folder), safe_serialization=True)

    def apply_trainable(self) -> None:
        """Every adapter trains except the frozen ones (PEFT's ``set_adapter`` would freeze inactive ones)."""
        for p, adapter in self._lora_params:
            p.requires_grad_(adapter not in self.frozen_adapters)

    def activate(self, adapters: tuple[str, ...]) -> None:
        """Make exactly ``adapters`` active on every LoRA layer (their updates add up)."""
        if adapters == self._active:
            return
        for layer in self._tuner_layers:
            layer.set_adapter(list(adapters))
        self._active = adapters
        self.apply_trainable()

    def set_stage(self, stage: int) -> None:
        """S4: stage 1 trains the shared adapter on every task; stage 2 freezes it and trains the private ones."""
        if self.config.strategy != "s4":
            return
        self.stage = int(stage)
        self.frozen_adapters = {SHARED} if self.stage == 2 else set()
        self.apply_trainable()

    # ------------------------------------------------------------------ routing
    def passes(self, task: str) -> list[tuple[str, ...]]:
        """The adapter combinations whose encoder passes the task's features need."""
        s = self.config.strategy
        if s == "s1":
            return [(private_name(task),)]
        if s == "s2" or (s == "s4" and self.stage == 1):
            return [(SHARED,)]
        if s == "s4":
            return [(SHARED, private_name(task))]
        if s == "s3a":
            return [(SHARED,), (private_name(task),)]
        assert self.hierarchy is not None
        return self.hierarchy.passes(task)

    def features(self, task: str, encode: Encode) -> BertOutput:
        """The features of ``task`` given ``encode(adapters, need_grad) -> BertOutput``."""
        s = self.config.strategy
        if s == "s3a":
            return fuse_outputs(
                self.fusions[task], encode((SHARED,), True), encode((private_name(task),), True)
            )
        if s == "s3b":
            assert self.hierarchy is not None
            return self.hierarchy.features(task, encode)
        return encode(self.passes(task)[0], True)

    def extra_state_dict(self) -> dict[str, Any]:
        """JSON facts needed to rebuild the routing (the S4 stage)."""
        return {"stage": self.stage}
