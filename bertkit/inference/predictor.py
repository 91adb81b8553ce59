"""Prediction and evaluation from a saved model or run folder, for files, DataFrames and raw strings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from bertkit.data import DatasetProfile, TokenizedDataset, prepare_frame, read_table, tokenize_texts
from bertkit.data.tokenize import Collator
from bertkit.errors import ConfigError, DataError
from bertkit.inference.batched import predict_outputs
from bertkit.model import BertWithHead
from bertkit.persistence import check_model_folder
from bertkit.training.chunks import chunked_outputs
from bertkit.training.postprocess import apply_postprocess, apply_to_model, load_postprocess


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` → cuda, then mps, then cpu."""
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device='cuda' was asked for but CUDA is not available; use --device cpu")
    return torch.device(device)


class Predictor:
    """Runs a trained model on new data the way it was trained (same columns, template, max_length).

    Args:
        model: a loaded :class:`BertWithHead` whose metadata holds the training data profile.
        batch_size: texts per forward pass.
        device: "auto", "cpu", "cuda" or "mps".
    """

    def __init__(
        self,
        model: BertWithHead,
        batch_size: int = 64,
        device: str = "auto",
        postprocess: dict[str, Any] | None = None,
    ) -> None:
        if model.tokenizer is None:
            raise ConfigError("the model has no tokenizer; save it with one (create_bert_with_head adds it)")
        self.model = model.eval()
        self.device = pick_device(device)
        self.model.to(self.device)
        self.batch_size = batch_size
        data = model.metadata.get("data")
        self.profile = DatasetProfile.from_dict(data) if data else None
        self.max_length = int(model.metadata.get("max_length", 128))
        self.truncation = str(model.metadata.get("truncation", "head"))
        side = "left" if model.bert.decoder_only else "right"
        self.collator = Collator.from_tokenizer(model.tokenizer, padding_side=side)
        self.chunk_stride = int(model.metadata.get("chunk_stride", 0) or 0)  # sliding windows (chunks.py)
        self.chunk_aggregation = str(model.metadata.get("chunk_aggregation", "mean"))
        self.postprocess = postprocess  # fitted on OOF/validation outputs (training/postprocess.py)
        apply_to_model(self.model, postprocess)

    @classmethod
    def from_dir(cls, path: str | Path, **kwargs: Any) -> Predictor:
        """Load from a model folder or a run folder (which holds ``model/``)."""
        folder = check_model_folder(path)
        model = BertWithHead.from_pretrained(folder)
        if "pair" in model.metadata:  # trained by the pair runner: scores (a, b) pairs, embeds single texts
            from bertkit.tasks.pair_runner import PairPredictor

            return PairPredictor(model, **kwargs)
        if model.metadata.get("runner") == "docseq":  # its examples are groups of documents, not texts
            raise ConfigError(
                f"{folder} reads time-ordered groups of documents, not single texts; predict with "
                f"`bertkit predict {path} DATA -o OUT` or bertkit.runners.runner_for_model(path).predict(...)"
            )
        kwargs.setdefault("postprocess", load_postprocess(folder))
        return cls(model, **kwargs)

    @property
    def label_names(self) -> list[str]:
        return self.model.head.label_names()

    # ------------------------------------------------------------ raw strings
    def outputs(
        self, texts_a: list[str], texts_b: list[str] | None = None, targets: np.ndarray | None = None
    ) -> dict[str, np.ndarray]:
        """Raw head outputs (numpy, input order) for lists of texts (pairs when ``texts_b`` is given)."""
        features = tokenize_texts(
            self.model.tokenizer,
            texts_a,
            texts_b,
            max_length=self.max_length,
            truncation=self.truncation if texts_b is None else "head",
        )
        ds = TokenizedDataset(features, targets)
        if self.chunk_stride and texts_b is None:
            out = chunked_outputs(
                self.forward_module,
                texts_a,
                self.max_length,
                self.chunk_stride,
                self.chunk_aggregation,
                self.batch_size,
                self.device,
            )
            if targets is not None:
                out["loss"] = self.dataset_outputs(ds)["loss"]
        else:
            out = self.dataset_outputs(ds)
        return apply_postprocess(self.postprocess, out)

    @property
    def forward_module(self) -> Any:
        """The module that maps a padded batch to head outputs (the PyTorch model here)."""
        return self.model

    def dataset_outputs(self, dataset: Any) -> dict[str, np.ndarray]:
        """Outputs over a tokenized dataset with length-sorted batches, returned in input order."""
        return predict_outputs(self.forward_module, dataset, self.collator, self.batch_size, self.device)

    def _split(self, texts: list[Any]) -> tuple[list[str], list[str] | None]:
        if isinstance(texts, str):
            texts = [texts]
        if texts and isinstance(texts[0], tuple | list):
            return [str(t[0]) for t in texts], [str(t[1]) for t in texts]
        return [str(t) for t in texts], None

    def predict(self, texts: list[Any]) -> list[Any]:
        """Decoded predictions: label names, label sets, type strings ("INTJ") or numbers."""
        a, b = self._split(texts)
        out = self.outputs(a, b)
        cols = self.model.head.format_predictions(out)
        if "prediction" in cols:
            return list(cols["prediction"])
        names = self.label_names
        return [[n for n in names if cols[n][i]] for i in range(len(a))]

    def predict_proba(self, texts: list[Any]) -> list[dict[str, float]]:
        """Probabilities keyed by label name, one dict per text."""
        a, b = self._split(texts)
        out = self.outputs(a, b)
        if "probabilities" not in out:
            raise ConfigError(f"a {self.model.head.task} model has no probabilities; use predict()")
        names = self.label_names
        return [{n: float(p[i]) for i, n in enumerate(names)} for p in out["probabilities"]]

    # ----------------------------------------------------------------- frames
    def _profile(self) -> DatasetProfile:
        if self.profile is None:
            raise ConfigError(
                "this model was not trained from a data file, so columns are unknown; "
                "use predict()/predict_proba() with raw strings"
            )
        return self.profile

    def predict_frame(
        self, data: str | Path | pd.DataFrame, proba: bool = False, id_column: str | None = None
    ) -> pd.DataFrame:
        """Submission-style frame in input order: id column + prediction column(s) (or probabilities)."""
        from bertkit.training.run import prediction_frame

        df = read_table(data)
        profile = self._profile()
        prepared = prepare_frame(
            df, profile, require_labels=False, sep_token=self.model.tokenizer.sep_token or "[SEP]"
        )
        out = self.outputs(prepared.texts_a, prepared.texts_b)
        id_col = id_column or (profile.id_column if profile.id_column in df.columns else None)
        if id_column and id_column not in df.columns:
            raise DataError(
                f"id column '{id_column}' is not in the data; columns: {', '.join(map(str, df.columns))}"
            )
        ids = df[id_col].iloc[prepared.row_index].tolist() if id_col else None
        label_col = profile.label_columns[0] if len(profile.label_columns) == 1 else None
        return prediction_frame(
            self.model, out, prepared.row_index, len(df), ids, id_col, label_col, proba=proba
        )

    def evaluate(self, data: str | Path | pd.DataFrame) -> dict[str, float]:
        """The head's metrics (and loss) on labelled data."""
        df = read_table(data)
        profile = self._profile()
        missing = [c for c in profile.label_columns if c not in df.columns]
        if missing:
            raise DataError(
                f"cannot evaluate: label column(s) {missing} missing; columns: {', '.join(map(str, df.columns))}"
            )
        prepared = prepare_frame(
            df, profile, require_labels=True, sep_token=self.model.tokenizer.sep_token or "[SEP]"
        )
        out = self.outputs(prepared.texts_a, prepared.texts_b, prepared.targets)
        metrics = {"loss": float(out.pop("loss"))} if "loss" in out else {}
        metrics.update(self.model.head.compute_metrics(out, np.asarray(prepared.targets)))
        metrics["rows"] = len(prepared.texts_a)
        return metrics


def load_predictor(path: str | Path, **kwargs: Any) -> Predictor:
    """Load a :class:`Predictor` from a run or model folder, or an ONNX Runtime one from an export folder."""
    from bertkit.inference.onnx_predictor import OnnxPredictor, is_export_dir

    if is_export_dir(path):
        return OnnxPredictor.from_dir(path, **kwargs)
    return Predictor.from_dir(path, **kwargs)


def predict(
    model_dir: str | Path, data: str | Path | pd.DataFrame, proba: bool = False, id_column: str | None = None
) -> pd.DataFrame:
    """Predictions for a data file/DataFrame as a submission-style frame (labels, or probabilities)."""
    return load_predictor(model_dir).predict_frame(data, proba=proba, id_column=id_column)


def evaluate(model_dir: str | Path, data: str | Path | pd.DataFrame) -> dict[str, float]:
    """Metrics of a saved model on labelled data."""
    return load_predictor(model_dir).evaluate(data)
