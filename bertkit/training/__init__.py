"""Training: the loop, optimiser/schedules, checkpoints and cross-validation."""

from bertkit.training.trainer import EnhancedTrainer, Trainer, TrainingInterrupted, TrainResult

__all__ = ["EnhancedTrainer", "TrainResult", "Trainer", "TrainingInterrupted"]
