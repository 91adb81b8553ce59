"""Model-folder helpers: read JSON configs and safetensors weights with one-line errors.

A model folder holds names and data only — JSON configs with registry names and ``*.safetensors`` weights —
never pickles or import paths, so a folder written today still loads after the code moves.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from torch import nn

from bertkit.errors import ModelFolderError

FORMAT_VERSION = 1
METADATA_FILE = "model_metadata.json"


def read_json(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read a JSON object, raising ModelFolderError naming the file when missing or malformed."""
    path = Path(path)
    if not path.is_file():
        raise ModelFolderError(f"{path} is missing; the folder is not a complete bertkit model (re-save it)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelFolderError(
            f"{path} is not valid JSON ({exc}); the file is damaged, re-save the model"
        ) from None
    if not isinstance(data, dict):
        raise ModelFolderError(f"{path} should hold a JSON object; the file is damaged, re-save the model")
    return data


def load_safetensors_into(module: nn.Module, path: str | os.PathLike[str]) -> None:
    """Load a safetensors file into ``module`` strictly; missing/truncated/mismatched files raise one line."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model

    path = Path(path)
    if not path.is_file():
        raise ModelFolderError(f"weights file {path} is missing; the model folder is incomplete (re-save it)")
    try:
        missing, unexpected = load_model(module, str(path), strict=False)
    except SafetensorError as exc:
        raise ModelFolderError(
            f"weights file {path} is truncated or corrupt ({exc}); re-save or re-download the model"
        ) from None
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ModelFolderError(
            f"weights file {path} does not fit this model ({first}); re-save the model"
        ) from None
    if missing or unexpected:
        what = f"missing {sorted(missing)[:3]}" if missing else f"unexpected {sorted(unexpected)[:3]}"
        raise ModelFolderError(f"weights file {path} does not match its config ({what}); re-save the model")


def check_model_folder(folder: str | os.PathLike[str]) -> Path:
    """Return ``folder`` as a Path if it looks like a bertkit model folder, else raise a one-line error."""
    folder = Path(folder)
    if not folder.exists():
        raise ModelFolderError(f"model folder {folder} does not exist")
    if not folder.is_dir():
        raise ModelFolderError(f"{folder} is a file, not a model folder")
    if not (folder / METADATA_FILE).is_file():
        if (folder / "model" / METADATA_FILE).is_file():
            return folder / "model"
        raise ModelFolderError(
            f"{folder} is not a bertkit model folder (no {METADATA_FILE}); pass a folder written by "
            "save_pretrained() or a run folder from 'bertkit train'"
        )
    return folder
