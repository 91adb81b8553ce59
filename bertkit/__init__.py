"""bertkit: fine-tune BERT-family encoders with pluggable task heads.

The public API lives here and only here; see README.md for a tour.
"""

from bertkit._version import __version__
from bertkit.config import BertConfig, HeadConfig, HeadType, PoolingType
from bertkit.encoder import BertCore, BertOutput
from bertkit.errors import BertkitError, ConfigError, DataError, ModelFolderError, RegistryError
from bertkit.factory import (
    COMPETITION_DEFAULTS,
    create_bert_core,
    create_bert_for_competition,
    create_bert_for_task,
    create_bert_with_head,
    create_model,
)
from bertkit.heads import (
    NLP_HEAD_PRESETS,
    BaseHead,
    BinaryClassificationHead,
    EnsembleClassificationHead,
    HierarchicalClassificationHead,
    MulticlassClassificationHead,
    MultilabelClassificationHead,
    NLPTaskConfig,
    NLPTaskType,
    OrdinalRegressionHead,
    QuestionAnsweringHead,
    RegressionHead,
    RelationExtractionHead,
    SpanClassificationHead,
    TimeSeriesClassificationHead,
    TimeSeriesRegressionHead,
    TokenClassificationHead,
    create_head,
    create_nlp_head,
    get_head_class,
    heads_for_competition,
    list_heads,
    register_head,
)
from bertkit.model import BertWithHead, load_tokenizer
from bertkit.pooling import Pooler

__all__ = [
    "COMPETITION_DEFAULTS",
    "BaseHead",
    "BertConfig",
    "BertCore",
    "BertOutput",
    "BertWithHead",
    "BertkitError",
    "BinaryClassificationHead",
    "ConfigError",
    "DataError",
    "EnsembleClassificationHead",
    "HeadConfig",
    "HeadType",
    "HierarchicalClassificationHead",
    "ModelFolderError",
    "NLP_HEAD_PRESETS",
    "NLPTaskConfig",
    "NLPTaskType",
    "QuestionAnsweringHead",
    "RelationExtractionHead",
    "SpanClassificationHead",
    "TimeSeriesClassificationHead",
    "TimeSeriesRegressionHead",
    "TokenClassificationHead",
    "create_nlp_head",
    "MulticlassClassificationHead",
    "MultilabelClassificationHead",
    "OrdinalRegressionHead",
    "Pooler",
    "PoolingType",
    "RegistryError",
    "RegressionHead",
    "__version__",
    "create_bert_core",
    "create_bert_for_competition",
    "create_bert_for_task",
    "create_bert_with_head",
    "create_head",
    "create_model",
    "get_head_class",
    "heads_for_competition",
    "list_heads",
    "load_tokenizer",
    "register_head",
]
