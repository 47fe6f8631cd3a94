"""What can go wrong when scoring leads: the config, training, or a saved model."""

from __future__ import annotations

from leads.tracebacks import PlainMessage


class ScoringError(Exception):
    """Root of every lead-scoring error."""


class ScoringConfigError(PlainMessage, ScoringError, ValueError):
    """`scoring.yaml` cannot be read or is wrong; the message names the key path."""


class TrainingError(ScoringError, ValueError):
    """A history file cannot train a model; the message says why and what to do."""


class ModelLoadError(PlainMessage, ScoringError, RuntimeError):
    """A saved model is missing, damaged, or not one this install can use."""


class ModelVersionError(ModelLoadError):
    """A saved model was made by another scikit-learn version; retrain it."""
