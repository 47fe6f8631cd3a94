"""Lead scoring: rules from `scoring.yaml` and a model trained on converted leads."""

from leads.scoring.config import ScoringConfig, load_config
from leads.scoring.errors import (
    ModelLoadError,
    ModelVersionError,
    ScoringConfigError,
    ScoringError,
    TrainingError,
)
from leads.scoring.model import LeadModel
from leads.scoring.scorer import Score, Scorer, load_scorer
from leads.scoring.training import (
    History,
    TrainedModel,
    cross_validate,
    read_history,
    train_model,
)
from leads.scoring.versions import list_versions, load_model

__all__ = [
    "History",
    "LeadModel",
    "ModelLoadError",
    "ModelVersionError",
    "Score",
    "Scorer",
    "ScoringConfig",
    "ScoringConfigError",
    "ScoringError",
    "TrainedModel",
    "TrainingError",
    "cross_validate",
    "list_versions",
    "load_config",
    "load_model",
    "load_scorer",
    "read_history",
    "train_model",
]
