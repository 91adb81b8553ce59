"""Built-in heads. Every module is imported explicitly so registration never depends on import order."""

# every built-in head module, imported explicitly (registration never depends on import order)
from bertkit.heads import (  # noqa: F401
    classification,
    pairs,
    qa,
    ranking,
    regression,
    relation,
    sequence,
    span,
    token,
)
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
from bertkit.heads.nlp_head import (
    NLP_HEAD_PRESETS,
    NLPTaskConfig,
    NLPTaskType,
    create_nlp_head,
    nlp_head_config,
)
from bertkit.heads.pairs import ContrastiveLearningHead, TextSimilarityHead
from bertkit.heads.qa import QuestionAnsweringHead
from bertkit.heads.ranking import BiEncoderRankingHead, RankingHead
from bertkit.heads.regression import OrdinalRegressionHead, RegressionHead
from bertkit.heads.relation import RelationExtractionHead, add_entity_markers
from bertkit.heads.sequence import TimeSeriesClassificationHead, TimeSeriesRegressionHead
from bertkit.heads.span import SpanClassificationHead
from bertkit.heads.token import TokenClassificationHead

__all__ = [
    "HEADS",
    "BiEncoderRankingHead",
    "ContrastiveLearningHead",
    "RankingHead",
    "TextSimilarityHead",
    "NLP_HEAD_PRESETS",
    "NLPTaskConfig",
    "NLPTaskType",
    "QuestionAnsweringHead",
    "RelationExtractionHead",
    "SpanClassificationHead",
    "TimeSeriesClassificationHead",
    "TimeSeriesRegressionHead",
    "TokenClassificationHead",
    "add_entity_markers",
    "create_nlp_head",
    "nlp_head_config",
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
