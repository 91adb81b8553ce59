"""Speed passes on an exported ONNX graph: ONNX Runtime's transformer fusions and dynamic int8 quantization.

``INT8_RECIPES`` names the ``quantize_dynamic`` settings that were measured (docs/export-and-serve.md);
``DEFAULT_INT8_RECIPE`` is the one ``bertkit export --quantize int8`` uses.
"""

from __future__ import annotations

import logging
import os
import re
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from bertkit.errors import ConfigError

logger = logging.getLogger(__name__)

__all__ = ["DEFAULT_INT8_RECIPE", "INT8_RECIPES", "Int8Recipe", "optimize_graph", "quantize_int8"]


@dataclass(frozen=True)
class Int8Recipe:
    """How ``quantize_dynamic`` is called (see docs/export-and-serve.md for the measurements).

    Attributes:
        per_channel: one weight scale per output channel instead of one per tensor.
        reduce_range: 7-bit weights (avoids u8×s8 saturation on CPUs without VNNI; costs precision).
        op_types: operator types to quantize (None: every type ORT supports, embeddings' Gather included).
        keep_fp32: regular expressions on node names kept in fp32 (e.g. the head and the pooler).
        description: one line for docs and ``export.json``.
    """

    per_channel: bool = True
    reduce_range: bool = False
    op_types: tuple[str, ...] | None = ("MatMul",)
    keep_fp32: tuple[str, ...] = ()
    description: str = ""


_HEAD_NODES = (r"/head/", r"pooler")
_FFN_OUT_NODES = (r"layer\.\d+/output/dense", r"ffn/lin2", r"/mlp/down_proj")
_MM_ATT = ("MatMul", "Attention")

#: named int8 recipes; "plain" is ONNX Runtime's default dynamic quantization (the baseline to beat)
INT8_RECIPES: dict[str, Int8Recipe] = {
    "plain": Int8Recipe(
        per_channel=False, op_types=None, description="ORT defaults: per-tensor, every op type"
    ),
    "per_tensor": Int8Recipe(per_channel=False, op_types=_MM_ATT, description="per-tensor, MatMul+Attention"),
    "per_channel": Int8Recipe(op_types=_MM_ATT, description="per-channel, MatMul+Attention"),
    "per_channel_reduce_range": Int8Recipe(
        op_types=_MM_ATT, reduce_range=True, description="per-channel, 7-bit weights, MatMul+Attention"
    ),
    "per_channel_keep_ffn_out": Int8Recipe(
        op_types=_MM_ATT,
        keep_fp32=_HEAD_NODES + _FFN_OUT_NODES,
        description="per-channel; head, pooler and FFN down-projection in fp32",
    ),
    "per_tensor_keep_ffn_out": Int8Recipe(
        per_channel=False,
        op_types=_MM_ATT,
        keep_fp32=_HEAD_NODES + _FFN_OUT_NODES,
        description="per-tensor; head, pooler and FFN down-projection in fp32",
    ),
    "per_channel_reduce_range_keep_ffn_out": Int8Recipe(
        op_types=_MM_ATT,
        reduce_range=True,
        keep_fp32=_HEAD_NODES + _FFN_OUT_NODES,
        description="per-channel 7-bit weights; head, pooler and FFN down-projection in fp32",
    ),
    "all_ops_per_channel": Int8Recipe(
        op_types=None, description="per-channel, every op type ORT supports (embeddings' Gather included)"
    ),
    "all_ops_per_channel_reduce_range": Int8Recipe(
        op_types=None, reduce_range=True, description="per-channel 7-bit weights, every op type"
    ),
    "all_ops_per_channel_keep_head": Int8Recipe(
        op_types=None,
        keep_fp32=_HEAD_NODES,
        description="per-channel, every op type; head and pooler in fp32",
    ),
    "ffn_only": Int8Recipe(
        op_types=("MatMul",),
        keep_fp32=_HEAD_NODES,
        description="per-channel MatMuls (FFN, projections); attention and head in fp32",
    ),
}
DEFAULT_INT8_RECIPE = "all_ops_per_channel_reduce_range"


def optimize_graph(src: Path, dst: Path, model: Any) -> dict[str, int] | None:
    """ORT's transformer fusions (Attention, SkipLayerNorm, BiasGelu, EmbedLayerNorm) written to ``dst``.

    Returns the fused-operator counts, or None when the optimizer is unavailable or fails.
    """
    try:
        from onnxruntime.transformers.optimizer import optimize_model
    except ImportError:
        return None
    cfg = model.bert.hf_config
    logging.disable(logging.WARNING)  # the fusion modules log every pattern they try
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            opt = optimize_model(
                str(src),
                model_type="bert",
                num_heads=int(getattr(cfg, "num_attention_heads", 0) or 0),
                hidden_size=int(getattr(cfg, "hidden_size", 0) or 0),
                opt_level=0,
                use_gpu=False,
            )
            opt.save_model_to_file(str(dst))
            stats = opt.get_fused_operator_statistics()
    except Exception as exc:  # an unsupported pattern must not break the export: keep the plain graph
        logger.info("ORT transformer optimizer skipped: %s", exc)
        return None
    finally:
        logging.disable(logging.NOTSET)
    return {k: int(v) for k, v in stats.items() if v}


def quantize_int8(
    src: str | os.PathLike[str], dst: str | os.PathLike[str], recipe: str | Int8Recipe
) -> dict[str, Any]:
    """Dynamic int8 quantization of an fp32 graph with a named :data:`INT8_RECIPES` recipe."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if isinstance(recipe, str):
        if recipe not in INT8_RECIPES:
            raise ConfigError(f"int8 recipe '{recipe}' is unknown; choose one of: {', '.join(INT8_RECIPES)}")
        name, spec = recipe, INT8_RECIPES[recipe]
    else:
        name, spec = "custom", recipe
    import onnx

    keep = _matching_nodes(src, spec.keep_fp32)
    logging.disable(logging.WARNING)  # "consider pre-processing" advice on every call
    try:
        quantize_dynamic(
            str(src),
            str(dst),
            weight_type=QuantType.QInt8,
            per_channel=spec.per_channel,
            reduce_range=spec.reduce_range,
            op_types_to_quantize=list(spec.op_types) if spec.op_types else None,
            nodes_to_exclude=keep,
            # fused com.microsoft operators defeat ONNX shape inference; their outputs are float tensors
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        logging.disable(logging.NOTSET)
    return {"recipe": name, **asdict(spec), "nodes_kept_fp32": len(keep)}


def _matching_nodes(path: str | os.PathLike[str], patterns: tuple[str, ...]) -> list[str]:
    if not patterns:
        return []
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    regex = re.compile("|".join(f"(?:{p})" for p in patterns))
    return [node.name for node in graph.node if node.name and regex.search(node.name)]
