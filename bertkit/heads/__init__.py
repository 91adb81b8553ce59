"""Built-in heads. Every module is imported explicitly so registration never depends on import order."""

from bertkit.heads import classification, regression  # noqa: F401  (registers the built-in heads)
from bertkit.heads import qa, relation, span, token  # noqa: F401  (token-level and relation heads)
from bertkit.heads import sequence  # noqa: F401,E402  (timeseries heads)
from bertkit.heads.base import (
    HEADS,
    BaseHead,
    create_head,
    get_head_class,
    head_description,
    heads_for_competition,
    list_heads,
    register_head,
)
from bertkit.heads.classification import (
    BinaryClassificationHead,
    EnsembleClassificationHead,
    HierarchicalClassificationHead,
    MulticlassClassificationHead,
    MultilabelClassificationHead,
)
from bertkit.heads.regression import OrdinalRegressionHead, RegressionHead

__all__ = [
    "HEADS",
    "BaseHead",
    "BinaryClassificationHead",
    "EnsembleClassificationHead",
    "HierarchicalClassificationHead",
    "MulticlassClassificationHead",
    "MultilabelClassificationHead",
    "OrdinalRegressionHead",
    "RegressionHead",
    "create_head",
    "get_head_class",
    "head_description",
    "heads_for_competition",
    "list_heads",
    "register_head",
]
