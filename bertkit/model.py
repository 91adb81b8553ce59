"""BertWithHead: one encoder × one head, with freezing and a safetensors model folder."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bertkit._version import __version__
from bertkit.config import HeadConfig
from bertkit.encoder import BertCore, resolve_model_path
from bertkit.errors import ConfigError, ModelFolderError, RegistryError
from bertkit.fileio import write_json_atomic
from bertkit.heads import BaseHead, create_head
from bertkit.persistence import (
    FORMAT_VERSION,
    METADATA_FILE,
    check_model_folder,
    load_safetensors_into,
    read_json,
)


def load_tokenizer(name_or_path: str | None) -> Any:
    """Fast tokenizer for a backbone: its own for a pretrained model, the bundled WordPiece otherwise."""
    from transformers import AutoTokenizer

    path = resolve_model_path(name_or_path or "minilm")
    try:
        return AutoTokenizer.from_pretrained(path, use_fast=True)
    except (OSError, ValueError) as exc:
        raise ConfigError(
            f"cannot load a tokenizer for '{name_or_path}': {str(exc).splitlines()[0]}"
        ) from None


class BertWithHead(nn.Module):
    """An encoder (:class:`BertCore`) and a head (:class:`BaseHead`) behind one ``forward``.

    Args:
        bert: the encoder.
        head: the task head; its ``input_size`` must equal the encoder's hidden size.
        tokenizer: optional tokenizer saved with the model folder.
        metadata: extra JSON-able facts saved in ``model_metadata.json`` (data profile, max_length...).
    """

    def __init__(
        self,
        bert: BertCore,
        head: BaseHead,
        tokenizer: Any | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if head.config.input_size != bert.hidden_size:
            raise ConfigError(
                f"head input_size={head.config.input_size} does not match the encoder's hidden_size="
                f"{bert.hidden_size}; build the head with input_size={bert.hidden_size}"
            )
        self.bert = bert
        self.head = head
        self.tokenizer = tokenizer
        self.metadata: dict[str, Any] = dict(metadata or {})
        # heads that read only the [CLS] state let the last encoder layer skip the other tokens (first_token.py)
        self.first_token_shortcut = True
        if tokenizer is not None and bert.decoder_only:
            tokenizer.padding_side = "left"

    # ------------------------------------------------------------------ access
    def get_bert(self) -> BertCore:
        """The encoder."""
        return self.bert

    def get_head(self) -> BaseHead:
        """The head."""
        return self.head

    @property
    def task(self) -> str:
        """The head's task family ("binary", "multiclass", ...)."""
        return self.head.task

    # ----------------------------------------------------------------- freeze
    def freeze_bert(self, num_layers: int | None = None) -> None:
        """Freeze the whole encoder, or its embeddings and first ``num_layers`` layers."""
        self.bert.freeze(num_layers)

    def unfreeze_bert(self) -> None:
        """Make the whole encoder trainable again."""
        self.bert.unfreeze()

    # ---------------------------------------------------------------- forward
    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: Any | None = None,
        **kwargs: Any,
    ) -> dict[str, torch.Tensor]:
        """Encode, run the head, and add ``"loss"`` when ``labels`` are given.

        Returns:
            The head's output dict (``"logits"``, ``"predictions"``, ``"probabilities"`` where meaningful).
        """
        if input_ids.dim() == 3:  # [B, S, T]: S time-ordered documents per example (sequence heads)
            outputs = self._forward_documents(input_ids, attention_mask, token_type_ids, **kwargs)
        elif self.head.level == "bi_encoder":
            outputs = self.head.forward_encoder(
                self.bert, input_ids, attention_mask, token_type_ids, **kwargs
            )
        else:
            first_only = self.first_token_shortcut and self.head.reads_first_token_only
            encoded = self.bert(input_ids, attention_mask, token_type_ids, first_token_only=first_only)
            outputs = self.head(encoded, encoded.attention_mask, input_ids=input_ids, **kwargs)
        if labels is not None:
            outputs["loss"] = self.head.compute_loss(outputs, labels)
        return outputs

    def _forward_documents(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None,
        token_type_ids: torch.Tensor | None,
        **kwargs: Any,
    ) -> dict[str, torch.Tensor]:
        """Encode each real document once, pool it (``extra.document_pooling``: mean | cls), then run the head
        over the ``[B, S, H]`` document sequence with ``sequence_mask [B, S]`` (the sequence heads' input)."""
        B, S, T = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        doc_mask = attention_mask.any(dim=-1)  # [B, S] real documents
        real = doc_mask.reshape(-1).nonzero().squeeze(1)  # [N]
        flat = lambda x: x.reshape(B * S, T)[real]  # noqa: E731  [N, T]
        encoded = self.bert(
            flat(input_ids), flat(attention_mask), None if token_type_ids is None else flat(token_type_ids)
        )
        how = str(self.head.config.extra.get("document_pooling", "mean"))
        vectors = encoded.cls_output if how == "cls" else encoded.mean_pooled  # [N, H]
        docs = vectors.new_zeros(B * S, vectors.size(-1))
        docs[real] = vectors
        return self.head(docs.view(B, S, -1), sequence_mask=doc_mask.long(), **kwargs)

    # ------------------------------------------------------------ persistence
    def save_pretrained(self, folder: str | os.PathLike[str]) -> Path:
        """Write the model folder (see docs/model-format.md); an existing folder is replaced atomically."""
        from safetensors.torch import save_model

        target = Path(folder)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        try:
            self.bert.save(tmp / "bert")
            (tmp / "head").mkdir()
            write_json_atomic(tmp / "head" / "config.json", self.head.config.to_dict())
            save_model(self.head, str(tmp / "head" / "model.safetensors"), metadata={"format": "pt"})
            if self.tokenizer is not None:
                self.tokenizer.save_pretrained(str(tmp))
            meta = {
                "format_version": FORMAT_VERSION,
                "bertkit_version": __version__,
                "task": self.head.task,
                "head_type": self.head.registry_name,
                "label_names": self.head.label_names(),
                "backbone": self.bert.config.model_name_or_path,
                "model_type": self.bert.model_type,
                **self.metadata,
            }
            write_json_atomic(tmp / METADATA_FILE, meta)
            _swap_in(tmp, target)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return target

    @classmethod
    def from_pretrained(
        cls, folder: str | os.PathLike[str], load_tokenizer_files: bool = True
    ) -> BertWithHead:
        """Load a folder written by :meth:`save_pretrained` (or a run folder holding ``model/``)."""
        folder = check_model_folder(folder)
        meta = read_json(folder / METADATA_FILE)
        if int(meta.get("format_version", 0)) > FORMAT_VERSION:
            raise ModelFolderError(
                f"{folder} was written by a newer bertkit (format {meta['format_version']}); upgrade bertkit"
            )
        bert = BertCore.load(folder / "bert")
        head_cfg = read_json(folder / "head" / "config.json")
        try:
            head = create_head(HeadConfig.from_dict(head_cfg))
        except RegistryError as exc:
            raise ModelFolderError(
                f"{folder} uses a head that is not registered here ({exc}); import the module that registers it"
            ) from None
        load_safetensors_into(head, folder / "head" / "model.safetensors")
        tokenizer = None
        if load_tokenizer_files and (folder / "tokenizer_config.json").is_file():
            tokenizer = load_tokenizer(str(folder))
        extra = {k: v for k, v in meta.items() if k not in _CORE_META_KEYS}
        model = cls(bert, head, tokenizer=tokenizer, metadata=extra)
        model.eval()
        return model


_CORE_META_KEYS = {
    "format_version",
    "bertkit_version",
    "task",
    "head_type",
    "label_names",
    "backbone",
    "model_type",
}


def _swap_in(new: Path, target: Path) -> None:
    """Replace ``target`` by ``new`` so that a crash leaves either the old or the new folder."""
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        if old.exists():
            shutil.rmtree(old)
        os.replace(target, old)
        os.replace(new, target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, target)
