"""Loading the shared encoder: 4-bit quantization, gradient checkpointing and attention kernel, decided from
the parameter count and the free accelerator memory (every decision can be overridden), and an automatic
batch-size finder.

Decision rules of :func:`plan_loading` (``"auto"`` values):

* **4-bit (QLoRA, S5)** when CUDA and bitsandbytes are available and the model has more than 4B parameters
  or its fp16 weights would take more than half of the free GPU memory. ``quantization="4bit"`` without
  CUDA raises a :class:`~bertkit.errors.ConfigError` naming the requirement.
* **gradient checkpointing** when the model is quantized, has more than 1B parameters, or its fp16 weights
  take more than a quarter of the free GPU memory.
* **attention**: FlashAttention 2 when CUDA, the ``flash_attn`` package and the backbone support it and the
  weights are half precision (the 4-bit path); else SDPA when the backbone supports it; else eager.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from bertkit.config import BertConfig
from bertkit.encoder import BertCore, resolve_model_path
from bertkit.errors import ConfigError

logger = logging.getLogger(__name__)

QUANTIZE_ABOVE_PARAMS = 4_000_000_000
CHECKPOINT_ABOVE_PARAMS = 1_000_000_000
QLORA_REQUIREMENT = (
    "4-bit quantization (QLoRA, strategy S5) needs a CUDA GPU and the bitsandbytes package "
    "(pip install bitsandbytes)"
)


@dataclass
class LoadPlan:
    """What :func:`plan_loading` decided, and why."""

    parameters: int
    device: str
    free_memory_bytes: int | None
    quantize_4bit: bool
    gradient_checkpointing: bool
    attn_implementation: str
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def cuda_available() -> bool:
    """True when a CUDA device can be used."""
    return bool(torch.cuda.is_available())


def bitsandbytes_available() -> bool:
    """True when the bitsandbytes package imports."""
    try:
        import bitsandbytes  # noqa: F401
    except ImportError:
        return False
    return True


def free_accelerator_memory() -> int | None:
    """Free bytes on the current CUDA device (None without CUDA)."""
    if not cuda_available():
        return None
    free, _total = torch.cuda.mem_get_info()
    return int(free)


def count_backbone_parameters(config: BertConfig) -> int:
    """Parameter count of an encoder without allocating its weights (meta device)."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModel

    from bertkit.encoder import build_hf_config

    if config.model_name_or_path:
        hf_config = AutoConfig.from_pretrained(resolve_model_path(config.model_name_or_path))
    else:
        hf_config = build_hf_config(config)
    with init_empty_weights():
        model = AutoModel.from_config(hf_config)
    return int(sum(p.numel() for p in model.parameters()))


def _model_class(config: BertConfig) -> Any:
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_MAPPING

    from bertkit.encoder import build_hf_config

    hf = (
        AutoConfig.from_pretrained(resolve_model_path(config.model_name_or_path))
        if config.model_name_or_path
        else build_hf_config(config)
    )
    try:
        return MODEL_MAPPING[type(hf)]
    except KeyError:
        return None


def best_attn_implementation(config: BertConfig, half_precision: bool) -> str:
    """``flash_attention_2`` where usable, else ``sdpa`` where supported, else ``eager``."""
    cls = _model_class(config)
    if (
        cuda_available()
        and half_precision
        and cls is not None
        and getattr(cls, "_supports_flash_attn", False)
    ):
        from transformers.utils import is_flash_attn_2_available

        if is_flash_attn_2_available():
            return "flash_attention_2"
    if cls is None or getattr(cls, "_supports_sdpa", False):
        return "sdpa"
    return "eager"


def plan_loading(
    config: BertConfig,
    quantization: str = "auto",
    gradient_checkpointing: Any = "auto",
    attn_implementation: str = "auto",
    parameters: int | None = None,
    free_memory: int | None = -1,
) -> LoadPlan:
    """Decide quantization, gradient checkpointing and attention kernel for an encoder.

    Args:
        config: the encoder config (pretrained reference or from-scratch sizes).
        quantization: ``auto``, ``4bit`` or ``none``.
        gradient_checkpointing: ``auto``, True or False.
        attn_implementation: ``auto`` or ``sdpa`` / ``eager`` / ``flash_attention_2``.
        parameters: parameter count (default: counted on the meta device).
        free_memory: free accelerator bytes (default -1: measured; None: no accelerator).
    """
    n = int(parameters if parameters is not None else count_backbone_parameters(config))
    free = free_accelerator_memory() if free_memory == -1 else free_memory
    device = "cuda" if cuda_available() else "cpu"
    reasons: list[str] = []
    weights_fp16 = 2 * n
    if quantization == "4bit":
        if not (cuda_available() and bitsandbytes_available()):
            missing = "no CUDA device" if not cuda_available() else "bitsandbytes is not installed"
            raise ConfigError(
                f"{QLORA_REQUIREMENT}; here: {missing}. Use model.quantization: none on this machine"
            )
        quantize = True
        reasons.append("4-bit asked for")
    elif quantization == "auto":
        big = n > QUANTIZE_ABOVE_PARAMS or (free is not None and weights_fp16 > 0.5 * free)
        quantize = big and cuda_available() and bitsandbytes_available()
        if big and not quantize:
            reasons.append("large model but no CUDA + bitsandbytes: not quantized")
        elif quantize:
            reasons.append(f"{n / 1e9:.1f}B parameters / {free} free bytes: 4-bit")
    else:
        quantize = False
    if gradient_checkpointing == "auto":
        ckpt = quantize or n > CHECKPOINT_ABOVE_PARAMS or (free is not None and weights_fp16 > 0.25 * free)
        reasons.append(f"gradient checkpointing {'on' if ckpt else 'off'} ({n / 1e6:.0f}M parameters)")
    else:
        ckpt = bool(gradient_checkpointing)
    attn = attn_implementation
    if attn == "auto":
        attn = best_attn_implementation(config, half_precision=quantize)
        reasons.append(f"attention: {attn}")
    return LoadPlan(n, device, free, quantize, ckpt, attn, reasons)


def _quantized_core_class() -> type[BertCore]:
    """A BertCore whose pretrained weights are loaded in 4-bit NF4 (bitsandbytes), compute in bf16."""
    from transformers import BitsAndBytesConfig

    qconfig = BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=True,
        bnb_4bit_compute_dtype=torch.bfloat16,
    )

    class QuantizedBertCore(BertCore):
        @staticmethod
        def _load(fn: Any, *args: Any, attn: str, **kwargs: Any) -> torch.nn.Module:
            if getattr(fn, "__name__", "") != "from_pretrained":
                raise ConfigError(
                    "4-bit quantization needs a pretrained backbone (not a from-scratch encoder)"
                )
            return BertCore._load(
                fn,
                *args,
                attn=attn,
                quantization_config=qconfig,
                dtype=torch.bfloat16,
                device_map={"": 0},
                **kwargs,
            )

    return QuantizedBertCore


def load_encoder(config: BertConfig, plan: LoadPlan) -> BertCore:
    """Build the encoder following a :class:`LoadPlan` (QLoRA prep included when quantized)."""
    cfg = BertConfig.from_dict(
        {**config.to_dict(), "attn_implementation": plan.attn_implementation, "gradient_checkpointing": False}
    )
    if plan.quantize_4bit:
        from peft import prepare_model_for_kbit_training

        core = _quantized_core_class()(cfg)
        core.model = prepare_model_for_kbit_training(
            core.model,
            use_gradient_checkpointing=plan.gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
        return core
    core = BertCore(cfg)
    if plan.gradient_checkpointing:
        enable_gradient_checkpointing(core)
    return core


def enable_gradient_checkpointing(core: BertCore) -> None:
    """Non-reentrant gradient checkpointing (works with frozen bases and LoRA)."""
    model = core.model
    if not getattr(model, "supports_gradient_checkpointing", False):
        logger.warning("%s does not support gradient checkpointing; left off", type(model).__name__)
        return
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})


def is_oom(exc: BaseException) -> bool:
    """True for CUDA/MPS/CPU out-of-memory errors."""
    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(exc, RuntimeError | MemoryError) and "out of memory" in str(exc).lower()


def find_batch_size(trial: Callable[[int], Any], start: int = 256, minimum: int = 1) -> int:
    """The largest batch size (``start``, ``start/2``, ...) for which ``trial(batch_size)`` runs.

    ``trial`` should run one forward + backward (+ optimiser step) at that batch size; out-of-memory
    errors halve the size, any other error is raised.

    Raises:
        ConfigError: even ``minimum`` does not fit.
    """
    size = int(start)
    while size >= minimum:
        try:
            trial(size)
            return size
        except (RuntimeError, MemoryError) as exc:
            if not is_oom(exc):
                raise
            logger.info("batch size %d does not fit (out of memory); trying %d", size, size // 2)
            if cuda_available():
                torch.cuda.empty_cache()
            size //= 2
    raise ConfigError(
        f"even batch size {minimum} runs out of memory; shorten max_length or use a smaller model"
    )
