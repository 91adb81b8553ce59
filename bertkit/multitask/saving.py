"""The multi-task model folder: JSON configs with registry names + safetensors, never pickles.

::

    model/
      model_metadata.json     runner "multitask", tasks, backbone, base_weights ("saved" | "reference"),
                              base_fingerprint, per-task data info, load plan
      multitask_config.json   head config per task, projections on/off, adapter config, S3b levels, S4 stage
      bert/                   config.json + bert_core_config.json (+ model.safetensors when the base trained
                              or has no pretrained reference)
      adapters/<name>/        PEFT's own save: adapter_config.json + adapter_model.safetensors
      strategy.safetensors    fusion modules, cross-level attention, level-2 adapters (when any)
      heads/<task>/           config.json (HeadConfig) + model.safetensors (head + task projection)
      tokenizer files

A LoRA model whose base stayed frozen stores only the *reference* to its pretrained encoder (plus a weight
fingerprint checked on load), so a folder is megabytes, not the backbone's size; the heads are always saved.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from bertkit._version import __version__
from bertkit.config import BertConfig
from bertkit.encoder import BertCore
from bertkit.errors import ModelFolderError
from bertkit.fileio import write_json_atomic
from bertkit.persistence import (
    FORMAT_VERSION,
    METADATA_FILE,
    check_model_folder,
    load_safetensors_into,
    read_json,
)

CONFIG_FILE = "multitask_config.json"
_CORE_KEYS = {
    "format_version",
    "bertkit_version",
    "runner",
    "model_kind",
    "tasks",
    "backbone",
    "model_type",
    "base_weights",
    "base_fingerprint",
}


def base_state_dict(bert: BertCore) -> dict[str, torch.Tensor]:
    """The encoder's own weights under BertCore's names (PEFT wrappers and LoRA tensors removed)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[tuple[int, tuple[int, ...]]] = set()
    items = sorted(bert.state_dict().items(), key=lambda kv: kv[0].startswith("_"))  # "model.*" names first
    for key, value in items:
        alias = (value.data_ptr(), tuple(value.shape))
        if "lora_" in key or alias in seen:  # LoRA tensors, and the `_layers` alias of the encoder layers
            continue
        seen.add(alias)
        key = key.replace("model.base_model.model.", "model.").replace(".base_layer.", ".")
        out[key] = value.detach().cpu().contiguous()
    return out


def fingerprint(state: dict[str, torch.Tensor]) -> float:
    """A cheap checksum of the floating-point base weights (sum of |w|, float64)."""
    return float(sum(float(v.double().abs().sum()) for v in state.values() if v.is_floating_point()))


def _base_is_saved(model: Any) -> bool:
    frozen_base = model.strategy is not None
    return not frozen_base or not model.bert.config.model_name_or_path


def save_multitask_model(model: Any, folder: str | os.PathLike[str]) -> Path:
    """Write ``model`` (a :class:`~bertkit.multitask.model.MultiTaskModel`) to ``folder`` atomically."""
    from safetensors.torch import save_file, save_model

    from bertkit.model import _swap_in

    target = Path(folder)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        bert = model.bert
        (tmp / "bert").mkdir()
        bert.hf_config.save_pretrained(tmp / "bert")
        write_json_atomic(tmp / "bert" / "bert_core_config.json", bert.config.to_dict())
        base = base_state_dict(bert)
        saved = _base_is_saved(model)
        if saved:
            save_file(base, str(tmp / "bert" / "model.safetensors"), metadata={"format": "pt"})
        if model.strategy is not None:
            model.strategy.save_adapters(bert, tmp / "adapters")
            if any(True for _ in model.strategy.state_dict()):
                save_model(model.strategy, str(tmp / "strategy.safetensors"), metadata={"format": "pt"})
        for task in model.task_names:
            (tmp / "heads" / task).mkdir(parents=True)
            write_json_atomic(tmp / "heads" / task / "config.json", model.get_head(task).config.to_dict())
            save_model(
                model.head.branches[task],
                str(tmp / "heads" / task / "model.safetensors"),
                metadata={"format": "pt"},
            )
        levels = {}
        if model.strategy is not None and model.strategy.hierarchy is not None:
            levels = dict(model.strategy.hierarchy.levels)
        write_json_atomic(
            tmp / CONFIG_FILE,
            {
                "tasks": model.task_names,
                "use_task_specific_projections": model.head.use_task_specific_projections,
                "adapters": {**model.adapter_config.to_dict(), **({"levels": levels} if levels else {})},
                "strategy_state": model.strategy.extra_state_dict() if model.strategy is not None else {},
            },
        )
        if model.tokenizer is not None:
            model.tokenizer.save_pretrained(str(tmp))
        meta = {
            "format_version": FORMAT_VERSION,
            "bertkit_version": __version__,
            "runner": "multitask",
            "model_kind": "multitask",
            "backbone": bert.config.model_name_or_path,
            "model_type": bert.model_type,
            "base_weights": "saved" if saved else "reference",
            "base_fingerprint": fingerprint(base),
            **model.metadata,
        }
        meta["tasks"] = {
            t: {**meta.get("tasks", {}).get(t, {}), "head_type": model.get_head(t).registry_name}
            for t in model.task_names
        }
        write_json_atomic(tmp / METADATA_FILE, meta)
        _swap_in(tmp, target)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _load_base(folder: Path, meta: dict[str, Any]) -> BertCore:
    from transformers import AutoConfig

    cfg = BertConfig.from_dict(read_json(folder / "bert" / "bert_core_config.json"))
    if meta.get("base_weights") == "saved":
        core = BertCore(cfg, hf_config=AutoConfig.from_pretrained(folder / "bert"))
        load_safetensors_into(core, folder / "bert" / "model.safetensors")
        return core
    plan = dict(meta.get("load_plan") or {})
    if plan.get("quantize_4bit"):
        from bertkit.multitask.loader import LoadPlan, load_encoder

        return load_encoder(cfg, LoadPlan(**{**plan, "gradient_checkpointing": False}))
    core = BertCore(cfg)
    expected = meta.get("base_fingerprint")
    if expected is not None:
        got = fingerprint(base_state_dict(core))
        if abs(got - float(expected)) > 1e-6 * max(1.0, abs(float(expected))):
            raise ModelFolderError(
                f"{folder}: the backbone '{cfg.model_name_or_path}' now resolves to different weights than the "
                "ones this model's adapters were trained on (fingerprint mismatch); load the original backbone"
            )
    return core


def load_multitask_model(folder: str | os.PathLike[str], load_tokenizer_files: bool = True) -> Any:
    """Rebuild a :class:`~bertkit.multitask.model.MultiTaskModel` from a folder (or a run folder)."""
    from bertkit.model import load_tokenizer
    from bertkit.multitask.config import AdapterConfig
    from bertkit.multitask.model import assemble

    folder = check_model_folder(folder)
    meta = read_json(folder / METADATA_FILE)
    if meta.get("model_kind") != "multitask":
        raise ModelFolderError(f"{folder} is not a multi-task model folder (load it with BertWithHead)")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise ModelFolderError(f"{folder} was written by a newer bertkit; upgrade bertkit")
    mt = read_json(folder / CONFIG_FILE)
    heads = {t: read_json(folder / "heads" / t / "config.json") for t in mt["tasks"]}
    adapter_cfg = AdapterConfig.from_dict(mt["adapters"])
    core = _load_base(folder, meta)
    model = assemble(core, heads, adapter_cfg, bool(mt["use_task_specific_projections"]), attach=False)
    if model.strategy is not None:
        model.strategy.attach_saved(core, folder / "adapters")
        model.strategy.set_stage(int(mt.get("strategy_state", {}).get("stage", 1)))
        if (folder / "strategy.safetensors").is_file():
            load_safetensors_into(model.strategy, folder / "strategy.safetensors")
    for task in model.task_names:
        load_safetensors_into(model.head.branches[task], folder / "heads" / task / "model.safetensors")
    if load_tokenizer_files and (folder / "tokenizer_config.json").is_file():
        model.tokenizer = load_tokenizer(str(folder))
    model.metadata = {k: v for k, v in meta.items() if k not in _CORE_KEYS}
    model.metadata["tasks"] = meta.get("tasks", {})
    model.eval()
    return model
