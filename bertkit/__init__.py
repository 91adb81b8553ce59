"""bertkit: fine-tune BERT-family encoders with pluggable task heads.

The public API lives here and only here; see README.md for a tour.
"""

from bertkit._version import __version__
from bertkit.config import BertConfig, HeadConfig, HeadType, PoolingType, TrainingConfig
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
from bertkit.inference import Predictor, evaluate, load_predictor, predict
from bertkit.inference.embed import embed_texts
from bertkit.inference.export import export_model
from bertkit.model import BertWithHead, load_tokenizer
from bertkit.multitask import (
    AdapterConfig,
    MultiTaskHead,
    MultiTaskModel,
    MultiTaskTrainer,
    assert_parameter_parity,
    build_ablation_models,
    count_trainable_parameters,
    create_multi_task_model,
    create_multi_task_nlp_head,
)
from bertkit.pooling import Pooler
from bertkit.runconfig import RunConfig, build_run_config
from bertkit.training import Trainer, TrainResult
from bertkit.training.ablate import ablate
from bertkit.training.blend import blend_runs
from bertkit.training.cv import cross_validate
from bertkit.training.pretrain import pretrain
from bertkit.training.run import train_run

__all__ = [
    # training, prediction and export (also reachable from the CLI)
    "Predictor",
    "RunConfig",
    "TrainResult",
    "Trainer",
    "TrainingConfig",
    "ablate",
    "blend_runs",
    "build_run_config",
    "cross_validate",
    "embed_texts",
    "evaluate",
    "export_model",
    "load_predictor",
    "predict",
    "pretrain",
    "train_run",
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
    # multi-task (bertkit.multitask)
    "AdapterConfig",
    "MultiTaskHead",
    "MultiTaskModel",
    "MultiTaskTrainer",
    "assert_parameter_parity",
    "build_ablation_models",
    "count_trainable_parameters",
    "create_multi_task_model",
    "create_multi_task_nlp_head",
]
