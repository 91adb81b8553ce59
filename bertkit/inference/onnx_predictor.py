"""ONNX Runtime backend: run an exported folder (``bertkit export``) with the :class:`Predictor` API.

An export folder serves on its own: ``model.onnx`` (and ``model.int8.onnx``), the tokenizer files,
``model_metadata.json`` (task, labels, data profile, max_length), ``head/`` (the head's config and its tiny
weights) and ``export.json``. Graph outputs are decoded by the head's own PyTorch code
(``format_predictions``, ``compute_metrics``, ``compute_loss``), so thresholds, temperatures and label maps
are exactly those of the trained model. Two graph kinds exist (``export.json``'s ``graph``):

* ``full``: encoder and head in the ONNX graph; ORT returns the head's output dict directly.
* ``encoder``: only the encoder is in the graph and the head runs in PyTorch on ORT's token states (used for
  heads whose forward cannot be traced for every shape, e.g. a CRF's Viterbi loop).
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
from torch import nn

from bertkit.config import HeadConfig
from bertkit.data import DatasetProfile
from bertkit.data.tokenize import Collator
from bertkit.errors import ConfigError, ModelFolderError
from bertkit.heads import BaseHead, create_head
from bertkit.inference.predictor import Predictor
from bertkit.persistence import METADATA_FILE, load_safetensors_into, read_json

__all__ = [
    "EXPORT_FILE",
    "ExportedModel",
    "OnnxPredictor",
    "OrtModel",
    "OrtModule",
    "is_export_dir",
    "load_export_head",
    "read_export_info",
]

EXPORT_FILE = "export.json"
ENCODER_OUTPUTS = ("last_hidden_state", "pooler_output")


def is_export_dir(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` is a folder written by ``bertkit export`` (it holds ``export.json``)."""
    return (Path(path) / EXPORT_FILE).is_file()


def read_export_info(path: str | os.PathLike[str]) -> dict[str, Any]:
    """``export.json`` of an export folder (format, files, inputs, outputs, graph, quantization)."""
    info = read_json(Path(path) / EXPORT_FILE)
    if info.get("format") != "onnx":
        raise ModelFolderError(f"{path} holds a '{info.get('format')}' export; only 'onnx' is supported")
    return info


def load_export_head(folder: str | os.PathLike[str]) -> BaseHead:
    """The head module saved in ``folder/head`` (config + weights), in eval mode."""
    folder = Path(folder)
    head = create_head(HeadConfig.from_dict(read_json(folder / "head" / "config.json")))
    load_safetensors_into(head, folder / "head" / "model.safetensors")
    return head.eval()


def default_threads() -> int:
    """CPU cores this process may use (the affinity mask where the OS reports one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS / Windows
        return max(1, os.cpu_count() or 1)


def make_session(
    path: str | os.PathLike[str], num_threads: int | None = None, providers: list[str] | None = None
) -> Any:
    """An ONNX Runtime session with all graph optimisations and ``num_threads`` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = int(num_threads or default_threads())
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.log_severity_level = 3
    if providers is None:
        available = ort.get_available_providers()
        providers = [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]
    return ort.InferenceSession(str(path), sess_options=opts, providers=providers)


class OrtModel:
    """One ONNX graph plus the head that decodes it: ``run(batch) -> outputs`` like ``BertWithHead.forward``.

    Args:
        onnx_path: the ``.onnx`` file.
        head: the head module (decoding; for ``graph="encoder"`` it also computes the outputs).
        graph: ``"full"`` or ``"encoder"``.
        output_names: the graph's output names, in order.
        num_threads: ORT intra-op threads (default: the cores this process may use).
        providers: ORT execution providers (default: CUDA when available, then CPU).
    """

    def __init__(
        self,
        onnx_path: str | os.PathLike[str],
        head: BaseHead,
        graph: str,
        output_names: list[str],
        num_threads: int | None = None,
        providers: list[str] | None = None,
    ) -> None:
        if graph not in ("full", "encoder"):
            raise ModelFolderError(f"unknown export graph kind '{graph}' (expected 'full' or 'encoder')")
        self.session = make_session(onnx_path, num_threads, providers)
        self.head = head
        self.graph = graph
        self.output_names = list(output_names)
        self.input_names = [i.name for i in self.session.get_inputs()]

    def run(self, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        """Outputs (numpy, batch-first) for a padded batch of ``input_ids``/``attention_mask``(/``token_type_ids``)."""
        feed = {name: _as_int64(batch[name]) for name in self.input_names}
        values = self.session.run(self.output_names, feed)
        outputs = dict(zip(self.output_names, values))
        if self.graph == "full":
            return outputs
        from bertkit.encoder import BertOutput

        mask = torch.from_numpy(feed["attention_mask"])
        pooler = outputs.get("pooler_output")
        encoded = BertOutput(
            last_hidden_state=torch.from_numpy(outputs["last_hidden_state"]),  # [B, T, H]
            attention_mask=mask,
            pooler_output=torch.from_numpy(pooler) if pooler is not None else None,
        )
        with torch.no_grad():
            out = self.head(encoded, mask, input_ids=torch.from_numpy(feed["input_ids"]))
        return {k: _to_numpy(v) for k, v in out.items() if isinstance(v, torch.Tensor) and v.dim() > 0}


def _as_int64(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.numpy()
    return np.ascontiguousarray(x, dtype=np.int64)


def _to_numpy(value: torch.Tensor) -> np.ndarray:
    value = value.detach().cpu()
    return value.float().numpy() if value.is_floating_point() else value.numpy()


class ExportedModel:
    """What the :class:`Predictor` methods need from a model, read from an export folder.

    Attributes:
        head: the head module (decoding, metrics, loss).
        tokenizer: the saved tokenizer.
        metadata: ``model_metadata.json`` (data profile, max_length, truncation, task, labels...).
        info: ``export.json``.
        decoder_only: left padding for decoder-only backbones.
    """

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        from bertkit.model import load_tokenizer

        folder = Path(folder)
        self.folder = folder
        self.info = read_export_info(folder)
        self.metadata = read_json(folder / METADATA_FILE)
        self.head = load_export_head(folder)
        if not (folder / "tokenizer_config.json").is_file():
            raise ModelFolderError(f"{folder} has no tokenizer files; re-export the model")
        self.tokenizer = load_tokenizer(str(folder))
        self.decoder_only = bool(self.info.get("decoder_only", False))
        if self.decoder_only:
            self.tokenizer.padding_side = "left"

    @property
    def task(self) -> str:
        return self.head.task

    def variants(self) -> list[str]:
        """Precisions present in the folder (``fp32``, ``int8``)."""
        return list(self.info.get("files", {}))


class OrtModule(nn.Module):
    """An :class:`OrtModel` behind ``BertWithHead``'s call convention (``model(**batch) -> dict of tensors``).

    Lets code written for PyTorch models — :func:`~bertkit.inference.batched.predict_outputs`, sliding-window
    inference — run ONNX Runtime unchanged; with ``labels`` the head's own ``compute_loss`` adds ``"loss"``.
    """

    def __init__(self, runtime: OrtModel, exported: ExportedModel) -> None:
        super().__init__()
        self.runtime = runtime
        self.head = exported.head
        self.tokenizer = exported.tokenizer
        self.metadata = exported.metadata
        self.bert = SimpleNamespace(decoder_only=exported.decoder_only)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: Any = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        batch = {"input_ids": input_ids, "attention_mask": attention_mask, "token_type_ids": token_type_ids}
        out: dict[str, Any] = {k: torch.from_numpy(v) for k, v in self.runtime.run(batch).items()}
        if labels is not None:
            out["loss"] = self.head.compute_loss(out, labels)
        return out


class OnnxPredictor(Predictor):
    """:class:`Predictor` on ONNX Runtime: same ``predict``/``predict_proba``/``predict_frame``/``evaluate``.

    Batches are length-sorted and results come back in input order; sliding-window models (``chunk_stride``)
    and fitted post-processing (``postprocess.json``) behave as with the PyTorch predictor.

    Args:
        folder: an export folder.
        batch_size: texts per ORT call.
        precision: ``"fp32"``, ``"int8"`` or None for the folder's default (``export.json``'s ``default``).
        num_threads: ORT intra-op threads (default: the cores this process may use).
        providers: ORT execution providers.
        device: ``"cpu"`` forces the CPU provider; ``"auto"`` uses CUDA when ORT has it.
        model_file: another ``.onnx`` file of the folder to run (e.g. an int8 variant written by the benchmark).
    """

    def __init__(
        self,
        folder: str | os.PathLike[str],
        batch_size: int = 64,
        precision: str | None = None,
        num_threads: int | None = None,
        providers: list[str] | None = None,
        device: str = "auto",
        model_file: str | None = None,
    ) -> None:
        from bertkit.training.postprocess import apply_to_model, load_postprocess

        exported = ExportedModel(folder)
        info = exported.info
        if providers is None and device == "cpu":
            providers = ["CPUExecutionProvider"]
        precision = precision or str(info.get("default", "fp32"))
        files: dict[str, str] = dict(info.get("files", {}))
        if model_file is not None:
            files[precision] = model_file
        if precision not in files:
            raise ConfigError(
                f"precision '{precision}' is not in {folder}; available: {', '.join(files) or 'none'}"
            )
        self.precision = precision
        self.exported = exported
        self.model: Any = exported  # duck-typed BertWithHead for the inherited Predictor methods
        self.runtime = OrtModel(
            Path(folder) / files[precision],
            exported.head,
            str(info.get("graph", "full")),
            list(info["outputs"]),
            num_threads,
            providers,
        )
        self.module = OrtModule(self.runtime, exported)
        self.device = torch.device("cpu")  # where the outputs' tensors live; ORT picks its own provider
        self.batch_size = int(batch_size)
        data = exported.metadata.get("data")
        self.profile = DatasetProfile.from_dict(data) if data else None
        self.max_length = int(exported.metadata.get("max_length", 128))
        self.truncation = str(exported.metadata.get("truncation", "head"))
        self.chunk_stride = int(exported.metadata.get("chunk_stride", 0) or 0)
        self.chunk_aggregation = str(exported.metadata.get("chunk_aggregation", "mean"))
        side = "left" if exported.decoder_only else "right"
        self.collator = Collator.from_tokenizer(exported.tokenizer, padding_side=side)
        self.postprocess = load_postprocess(folder)
        apply_to_model(exported, self.postprocess)

    @classmethod
    def from_dir(cls, path: str | Path, **kwargs: Any) -> OnnxPredictor:
        """Load an export folder."""
        kwargs.pop("postprocess", None)  # read from the folder itself
        return cls(path, **kwargs)

    @property
    def forward_module(self) -> Any:
        """ONNX Runtime graph + the head's own decoding, behind the PyTorch module interface."""
        return self.module
