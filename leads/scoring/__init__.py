"""Lead scoring: rules from `scoring.yaml` and a model trained on converted leads.

The names below are loaded on first use: scikit-learn takes about a second to
import, and a flow run that never scores a lead (a CRM sync, an e-mail batch)
should not pay it while a lead waits for the run to start.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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

# Each exported name, by the module that defines it.
_HOMES = {
    "ScoringConfig": "config",
    "load_config": "config",
    "ModelLoadError": "errors",
    "ModelVersionError": "errors",
    "ScoringConfigError": "errors",
    "ScoringError": "errors",
    "TrainingError": "errors",
    "LeadModel": "model",
    "Score": "scorer",
    "Scorer": "scorer",
    "load_scorer": "scorer",
    "History": "training",
    "TrainedModel": "training",
    "cross_validate": "training",
    "read_history": "training",
    "train_model": "training",
    "list_versions": "versions",
    "load_model": "versions",
}

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


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
