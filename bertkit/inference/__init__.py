"""Inference: batched prediction in input order, the Predictor, export and serving."""

from bertkit.inference.predictor import Predictor, evaluate, load_predictor, predict

__all__ = ["Predictor", "evaluate", "load_predictor", "predict"]
