"""Multi-task learning on one shared encoder: named heads, task sampling, loss weighting, PCGrad, LoRA
adapter strategies (S1–S5) with fusion modules, parameter parity, and named binary dimensions (MBTI).

See ``docs/multitask.md``.
"""

from bertkit.multitask.adapters import AdapterStrategy, AttentionFusion, ConcatFusion, GatedResidual
from bertkit.multitask.config import (
    MBTI_DIMENSIONS,
    AdapterConfig,
    ModelOptions,
    MultiTaskConfig,
    MultiTaskTrainingConfig,
    TaskSpec,
    load_multitask_config,
)
from bertkit.multitask.hierarchical import CrossLevelAttention, FeatureAdapter, HierarchicalFeatures
from bertkit.multitask.loader import LoadPlan, find_batch_size, plan_loading
from bertkit.multitask.model import (
    MultiTaskHead,
    MultiTaskModel,
    create_multi_task_model,
    create_multi_task_nlp_head,
)
from bertkit.multitask.parity import (
    ParityError,
    assert_parameter_parity,
    build_ablation_models,
    count_trainable_parameters,
)
from bertkit.multitask.pcgrad import PCGradAccumulator, balance_norms, pcgrad_project
from bertkit.multitask.sampling import TaskSampler, UncertaintyWeighting, sampling_probabilities
from bertkit.multitask.trainer import MultiTaskResult, MultiTaskTrainer

__all__ = [
    "MBTI_DIMENSIONS",
    "AdapterConfig",
    "AdapterStrategy",
    "AttentionFusion",
    "ConcatFusion",
    "CrossLevelAttention",
    "FeatureAdapter",
    "GatedResidual",
    "HierarchicalFeatures",
    "LoadPlan",
    "ModelOptions",
    "MultiTaskConfig",
    "MultiTaskHead",
    "MultiTaskModel",
    "MultiTaskResult",
    "MultiTaskTrainer",
    "MultiTaskTrainingConfig",
    "PCGradAccumulator",
    "ParityError",
    "TaskSampler",
    "TaskSpec",
    "UncertaintyWeighting",
    "assert_parameter_parity",
    "balance_norms",
    "build_ablation_models",
    "count_trainable_parameters",
    "create_multi_task_model",
    "create_multi_task_nlp_head",
    "find_batch_size",
    "load_multitask_config",
    "pcgrad_project",
    "plan_loading",
    "sampling_probabilities",
]
