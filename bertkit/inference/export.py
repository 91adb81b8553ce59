"""Export a trained model to a self-contained ONNX folder (fp32, optionally int8), verified against PyTorch.

``export_model(run_or_model_dir, output_dir, quantize="int8")`` writes::

    output_dir/
      model.onnx            fp32 graph: inputs input_ids, attention_mask (, token_type_ids), dynamic batch/sequence
      model.int8.onnx       with quantize="int8": dynamic int8 MatMuls (recipe in export.json)
      export.json           format, opset, graph kind, inputs, outputs, files, default precision, verification
      model_metadata.json   task, labels, backbone, data profile, max_length (copied from the model folder)
      head/                 the head's config.json and weights: decoding reuses the head's own code
      tokenizer files

The graph's outputs are the head's tensor outputs by name (``logits``, ``probabilities``, ``predictions``...),
post-processing included. Every export is checked with ONNX Runtime on texts of other lengths and batch sizes
than the traced one; an fp32 output further than ``atol`` from PyTorch (or any differing integer output)
fails loudly. When the whole forward cannot be traced faithfully (a head with data-dependent Python loops,
e.g. a CRF's Viterbi decoding), ``graph="auto"`` falls back to exporting the encoder alone and running the
tiny head in PyTorch on ORT's token states.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bertkit._version import __version__
from bertkit.errors import BertkitError, ConfigError
from bertkit.fileio import write_json_atomic
from bertkit.inference.onnx_predictor import (
    ENCODER_OUTPUTS,
    EXPORT_FILE,
    OrtModel,
    load_export_head,
)
from bertkit.inference.quantize import (
    DEFAULT_INT8_RECIPE,
    INT8_RECIPES,
    Int8Recipe,
    optimize_graph,
    quantize_int8,
)
from bertkit.model import BertWithHead
from bertkit.persistence import METADATA_FILE, check_model_folder

logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_INT8_RECIPE",
    "INT8_RECIPES",
    "ExportError",
    "ExportResult",
    "Int8Recipe",
    "export_model",
    "optimize_graph",
    "quantize_int8",
    "trace_onnx",
    "verify_export",
]

FP32_FILE = "model.onnx"
INT8_FILE = "model.int8.onnx"
DEFAULT_OPSET = 17
FORMATS = ("onnx",)
GRAPHS = ("auto", "full", "encoder")

#: texts used to trace (the first two) and to verify (the rest: other lengths and batch sizes)
TRACE_TEXTS = ["a short example text for tracing", "a second one"]
VERIFY_TEXTS = [
    "great",
    "The plot was thin, but the acting kept me watching until the very end of the film.",
    "not bad at all",
    "I would not recommend this to anyone; it broke after two days and support never answered.",
    "ok",
    "Absolutely wonderful service, friendly staff and the food arrived hot and on time.",
    "meh .",
]


class ExportError(BertkitError):
    """An export could not be written or does not reproduce the PyTorch model."""


@dataclass
class ExportResult:
    """What :func:`export_model` wrote and measured."""

    output_dir: Path
    files: dict[str, str]
    graph: str
    outputs: list[str]
    max_abs_diff: dict[str, float]
    int8: dict[str, Any] = field(default_factory=dict)


class _GraphModule(nn.Module):
    """``forward(input_ids, attention_mask[, token_type_ids]) -> tuple`` of the named outputs (traceable)."""

    def __init__(self, model: BertWithHead, graph: str, output_names: list[str], with_types: bool) -> None:
        super().__init__()
        self.model = model
        self.graph = graph
        self.output_names = list(output_names)
        self.with_types = with_types

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        token_type_ids: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, ...]:
        types = token_type_ids if self.with_types else None
        if self.graph == "encoder":
            enc = self.model.bert(input_ids, attention_mask, types)
            found = {"last_hidden_state": enc.last_hidden_state, "pooler_output": enc.pooler_output}
        else:
            found = self.model(input_ids, attention_mask, types)
        return tuple(found[name] for name in self.output_names)


def _batch(model: BertWithHead, texts: list[str]) -> dict[str, torch.Tensor]:
    from bertkit.data import tokenize_texts
    from bertkit.data.tokenize import Collator

    max_length = int(model.metadata.get("max_length", 128))
    features = tokenize_texts(model.tokenizer, texts, max_length=max_length)
    side = "left" if model.bert.decoder_only else "right"
    batch = Collator.from_tokenizer(model.tokenizer, padding_side=side)(
        [{k: v[i] for k, v in features.items()} for i in range(len(texts))]
    )
    if not model.bert.uses_token_type_ids:
        batch.pop("token_type_ids", None)
    return batch


def _output_names(model: BertWithHead, graph: str, batch: dict[str, torch.Tensor]) -> list[str]:
    """Batch-first tensor outputs of the model (or the encoder's states) on ``batch``."""
    n = batch["input_ids"].shape[0]
    with torch.no_grad():
        if graph == "encoder":
            enc = model.bert(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
            found: dict[str, Any] = {
                "last_hidden_state": enc.last_hidden_state,
                "pooler_output": enc.pooler_output,
            }
            return [k for k in ENCODER_OUTPUTS if found.get(k) is not None]
        found = model(**batch)  # type: ignore[operator]  # torch stubs type nn.Module attributes loosely
    return [k for k, v in found.items() if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == n]


@contextmanager
def _eager_attention(model: BertWithHead) -> Iterator[None]:
    """Trace with the eager attention: its ONNX pattern is the one ORT fuses into its Attention kernel."""
    hf: Any = model.bert.model
    before = getattr(hf.config, "_attn_implementation", None)
    switched = False
    if before not in (None, "eager") and hasattr(hf, "set_attn_implementation"):
        try:
            hf.set_attn_implementation("eager")
            switched = True
        except (ValueError, ImportError, AttributeError):
            switched = False
    try:
        yield
    finally:
        if switched:
            hf.set_attn_implementation(before)


def _export_graph(model: BertWithHead, path: Path, graph: str, opset: int) -> list[str]:
    """Trace ``model`` to ``path``; returns the output names."""
    with _eager_attention(model):
        return trace_onnx(model, path, graph, opset)


def trace_onnx(model: BertWithHead, path: Path, graph: str = "full", opset: int = DEFAULT_OPSET) -> list[str]:
    """Trace ``model`` as it is (its own attention implementation) to ``path``; returns the output names."""
    batch = _batch(model, TRACE_TEXTS)
    names = _output_names(model, graph, batch)
    inputs = ["input_ids", "attention_mask"] + (["token_type_ids"] if "token_type_ids" in batch else [])
    wrapper = _GraphModule(model, graph, names, "token_type_ids" in batch).eval()
    dynamic: dict[str, dict[int, str]] = {name: {0: "batch", 1: "sequence"} for name in inputs}
    with torch.no_grad():
        reference = wrapper(*(batch[k] for k in inputs))
    for name, value in zip(names, reference):
        dynamic[name] = {axis: f"{name}_{axis}" for axis in range(value.dim())}
        dynamic[name][0] = "batch"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            tuple(batch[k] for k in inputs),
            str(path),
            input_names=inputs,
            output_names=names,
            dynamic_axes=dynamic,
            opset_version=opset,
            do_constant_folding=True,
            dynamo=False,
        )
    return names


def _compare(
    reference: dict[str, np.ndarray], got: dict[str, np.ndarray], atol: float
) -> tuple[dict[str, float], list[str]]:
    """Max abs difference per float output, and the problems (shape, integer mismatch, too far)."""
    diffs: dict[str, float] = {}
    problems: list[str] = []
    for name, ref in reference.items():
        if name not in got:
            problems.append(f"output '{name}' is missing")
            continue
        out = got[name]
        if out.shape != ref.shape:
            problems.append(f"output '{name}' has shape {out.shape}, PyTorch {ref.shape}")
            continue
        if ref.dtype.kind == "f":
            finite = np.isfinite(ref) & np.isfinite(out)
            diff = float(np.max(np.abs(out[finite] - ref[finite]), initial=0.0))
            diffs[name] = max(diffs.get(name, 0.0), diff)
            if diff > atol or not np.array_equal(np.isfinite(ref), np.isfinite(out)):
                problems.append(f"output '{name}' differs by {diff:.2e} (> {atol:g})")
        elif not np.array_equal(out, ref):
            problems.append(
                f"integer output '{name}' differs in {int(np.sum(out != ref))} of {ref.size} values"
            )
    return diffs, problems


def verify_export(
    model: BertWithHead, runtime: OrtModel, texts: list[str] | None = None, atol: float = 1e-4
) -> tuple[dict[str, float], list[str]]:
    """Compare ORT (``runtime``) with PyTorch on two batches of ``texts`` (other shapes than the traced one)."""
    texts = texts or VERIFY_TEXTS
    half = max(1, len(texts) // 2 - 1)
    diffs: dict[str, float] = {}
    problems: list[str] = []
    for chunk in (texts[:half], texts[half:]):
        batch = _batch(model, chunk)
        with torch.no_grad():
            ref = model(**batch)
        reference = {
            k: _np(v)
            for k, v in ref.items()
            if isinstance(v, torch.Tensor) and v.dim() > 0 and v.shape[0] == len(chunk)
        }
        got = runtime.run({k: v.numpy() for k, v in batch.items()})
        d, p = _compare(reference, got, atol)
        for k, v in d.items():
            diffs[k] = max(diffs.get(k, 0.0), v)
        problems += p
    return diffs, problems


def _np(value: torch.Tensor) -> np.ndarray:
    value = value.detach().cpu()
    return value.float().numpy() if value.is_floating_point() else value.numpy()


def _copy_support_files(model: BertWithHead, source: Path | None, target: Path) -> None:
    """Tokenizer, ``model_metadata.json`` and ``head/`` (config + weights) into the export folder."""
    from safetensors.torch import save_model

    from bertkit.fileio import write_json_atomic as write_json

    if model.tokenizer is None:
        raise ExportError("the model has no tokenizer; an export folder must carry one to serve on its own")
    model.tokenizer.save_pretrained(str(target))
    (target / "head").mkdir(exist_ok=True)
    write_json(target / "head" / "config.json", model.head.config.to_dict())
    save_model(model.head, str(target / "head" / "model.safetensors"), metadata={"format": "pt"})
    if source is not None and (source / "postprocess.json").is_file():
        shutil.copy2(source / "postprocess.json", target / "postprocess.json")
    if source is not None and (source / METADATA_FILE).is_file():
        shutil.copy2(source / METADATA_FILE, target / METADATA_FILE)
        return
    meta = {
        "bertkit_version": __version__,
        "task": model.head.task,
        "head_type": model.head.registry_name,
        "label_names": model.head.label_names(),
        "backbone": model.bert.config.model_name_or_path,
        "model_type": model.bert.model_type,
        **model.metadata,
    }
    write_json(target / METADATA_FILE, meta)


def _export_verified(
    model: BertWithHead,
    head: Any,
    folder: Path,
    graph: str,
    opset: int,
    atol: float,
    verify_texts: list[str] | None,
) -> tuple[str, list[str], OrtModel, dict[str, float]]:
    """Trace the whole forward (else the encoder alone, with ``graph="auto"``) and check it against PyTorch."""
    errors: list[str] = []
    for kind in ["full", "encoder"] if graph == "auto" else [graph]:
        try:
            names = _export_graph(model, folder / FP32_FILE, kind, opset)
            runtime = OrtModel(folder / FP32_FILE, head, kind, names, providers=["CPUExecutionProvider"])
            diffs, problems = verify_export(model, runtime, verify_texts, atol)
        except Exception as exc:  # tracing/ORT failures: report, maybe fall back
            problems = [f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"]
        if not problems:
            return kind, names, runtime, diffs
        errors.append(f"{kind} graph: {'; '.join(problems[:3])}")
        logger.warning("ONNX export with the %s graph failed verification: %s", kind, "; ".join(problems[:3]))
    raise ExportError(f"ONNX export does not reproduce the PyTorch model ({' | '.join(errors)})")


def _optimize_verified(
    model: BertWithHead,
    head: Any,
    folder: Path,
    kind: str,
    names: list[str],
    runtime: OrtModel,
    diffs: dict[str, float],
    atol: float,
    verify_texts: list[str] | None,
) -> tuple[dict[str, int] | None, OrtModel, dict[str, float]]:
    """Fuse the verified graph; keep the fused one only when it verifies as well."""
    fused_path = folder / "model.fused.onnx"
    fused = optimize_graph(folder / FP32_FILE, fused_path, model)
    if fused is None:
        return None, runtime, diffs
    try:
        fused_runtime = OrtModel(fused_path, head, kind, names, providers=["CPUExecutionProvider"])
        fused_diffs, problems = verify_export(model, fused_runtime, verify_texts, atol)
    except Exception as exc:  # an ORT kernel refusing the fused graph: keep the plain one
        problems = [f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0]}"]
    if problems:
        logger.info("ORT fusions dropped (%s); keeping the plain graph", "; ".join(problems[:2]))
        fused_path.unlink(missing_ok=True)
        return None, runtime, diffs
    del runtime
    os.replace(fused_path, folder / FP32_FILE)
    return (
        fused,
        OrtModel(folder / FP32_FILE, head, kind, names, providers=["CPUExecutionProvider"]),
        fused_diffs,
    )


def export_model(
    model: BertWithHead | str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    format: str = "onnx",
    quantize: str | None = None,
    int8_recipe: str = DEFAULT_INT8_RECIPE,
    graph: str = "auto",
    opset: int = DEFAULT_OPSET,
    atol: float = 1e-4,
    verify_texts: list[str] | None = None,
    optimize: bool = True,
) -> ExportResult:
    """Export a model (or a run/model folder) to a self-contained, verified ONNX folder.

    Args:
        model: a :class:`BertWithHead` or a run/model folder.
        output_dir: the export folder (replaced when it exists).
        format: ``"onnx"``.
        quantize: None or ``"int8"`` (adds ``model.int8.onnx`` and makes it the folder's default precision).
        int8_recipe: a name in :data:`INT8_RECIPES`.
        graph: ``"auto"`` (whole forward, else encoder + PyTorch head), ``"full"`` or ``"encoder"``.
        opset: ONNX opset.
        atol: largest allowed fp32 difference to PyTorch on the verification texts.
        verify_texts: texts for the check (default: built-in texts of several lengths).
        optimize: apply ONNX Runtime's transformer fusions (kept only when they verify too); the graph then
            uses ORT's ``com.microsoft`` operators and needs ONNX Runtime to run.

    Raises:
        ExportError: tracing failed, or ORT's outputs differ from PyTorch's.
    """
    if format not in FORMATS:
        raise ConfigError(f"export format '{format}' is not supported; choose one of: {', '.join(FORMATS)}")
    if quantize not in (None, "int8"):
        raise ConfigError(f"quantize='{quantize}' is not supported; use int8 (or leave it out for fp32)")
    if graph not in GRAPHS:
        raise ConfigError(f"graph='{graph}' is not valid; choose one of: {', '.join(GRAPHS)}")
    source: Path | None = None
    if not isinstance(model, BertWithHead):
        from bertkit.training.postprocess import apply_to_model, load_postprocess

        source = check_model_folder(model)
        model = BertWithHead.from_pretrained(source)
        apply_to_model(model, load_postprocess(source))  # fitted thresholds go into the graph too
    model = model.eval().cpu()
    if model.head.level == "bi_encoder":
        raise ExportError(
            f"'{model.head.registry_name}' runs the encoder twice per example; export is not supported"
        )
    target = Path(output_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        _copy_support_files(model, source, tmp)
        head = load_export_head(tmp)
        kind, names, runtime, diffs = _export_verified(model, head, tmp, graph, opset, atol, verify_texts)
        fused: dict[str, int] | None = None
        if optimize:
            fused, runtime, diffs = _optimize_verified(
                model, head, tmp, kind, names, runtime, diffs, atol, verify_texts
            )
        files = {"fp32": FP32_FILE}
        int8_report: dict[str, Any] = {}
        if quantize == "int8":
            int8_report = quantize_int8(tmp / FP32_FILE, tmp / INT8_FILE, int8_recipe)
            q_runtime = OrtModel(tmp / INT8_FILE, head, kind, names, providers=["CPUExecutionProvider"])
            q_diffs, q_problems = verify_export(model, q_runtime, verify_texts, atol=float("inf"))
            int8_report["max_abs_diff"] = q_diffs
            int8_report["verification_problems"] = q_problems
            files["int8"] = INT8_FILE
        info = {
            "format": "onnx",
            "opset": opset,
            "graph": kind,
            "bertkit_version": __version__,
            "torch_version": torch.__version__,
            "inputs": [i.name for i in runtime.session.get_inputs()],
            "outputs": names,
            "files": files,
            "default": "int8" if quantize == "int8" else "fp32",
            "quantization": int8_report or None,
            "decoder_only": bool(model.bert.decoder_only),
            "ort_fusions": fused,
            "verification": {"max_abs_diff": diffs, "atol": atol, "texts": len(verify_texts or VERIFY_TEXTS)},
            "task": model.head.task,
            "head_type": model.head.registry_name,
            "backbone": model.bert.config.model_name_or_path,
            "model_type": model.bert.model_type,
        }
        write_json_atomic(tmp / EXPORT_FILE, info)
        del runtime
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return ExportResult(target, files, kind, names, diffs, int8_report)
