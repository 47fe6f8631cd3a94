"""A trained scoring model: a lead's probability to convert, and what moved it."""

from __future__ import annotations

import heapq
import math
from collections.abc import Mapping
from typing import Any

from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline

from leads.scoring.errors import ModelLoadError
from leads.scoring.features import LeadEncoder

# Log-odds below which a feature hardly moved a lead (a factor of about 1.05
# on its odds); such features are not given as reasons.
MIN_EFFECT = 0.05


class LeadModel:
    """A saved estimator, read into the tables that score one lead cheaply.

    The estimator is a logistic regression over one-hot blocks, one column
    set per feature, so the log-odds of a lead is the intercept plus one
    weight per feature: no scikit-learn call is needed per lead. A feature's
    effect on a lead is its weight less the average weight of its block over
    the training leads, which is how far it moved this lead away from the
    typical one; the largest effects are the reasons.

    Attributes:
        version: the model's folder name under the model dir.
        metadata: the model's `model.json`.
        estimator: the fitted scikit-learn pipeline.
    """

    def __init__(
        self, version: str, estimator: Pipeline, metadata: Mapping[str, Any]
    ) -> None:
        steps = estimator.named_steps if isinstance(estimator, Pipeline) else {}
        encoder = steps.get("features")
        classifier = steps.get("classifier")
        if not isinstance(encoder, LeadEncoder) or not isinstance(
            classifier, LogisticRegression
        ):
            raise ModelLoadError(
                f"model {version} is not a lead-scoring pipeline (features, then "
                "a logistic regression); retrain it with `orchestrator score train`"
            )
        if list(classifier.classes_) != [0, 1]:
            raise ModelLoadError(
                f"model {version} was fitted on outcomes {list(classifier.classes_)}"
                ", expected 0 and 1; retrain it with `orchestrator score train`"
            )
        self.version = version
        self.metadata = dict(metadata)
        self.estimator = estimator
        self._blocks = list(encoder.blocks_)
        self._labels = list(encoder.labels_)
        self._weights = [float(w) for w in classifier.coef_[0]]
        self._intercept = float(classifier.intercept_[0])

        self._baselines: list[float] = []
        start = 0
        for block in self._blocks:
            # Each block's columns are contiguous and end with its `missing`.
            span = range(start, block.missing + 1)
            self._baselines.append(
                sum(self._weights[c] * encoder.frequencies_[c] for c in span)
            )
            start = block.missing + 1

    def explain(
        self, values: Mapping[str, Any], reasons: int
    ) -> tuple[float, tuple[str, ...]]:
        """The lead's probability to convert, and its strongest reasons.

        Args:
            values: the lead's stored columns, custom fields under `custom`.
            reasons: most reasons to give, strongest first.

        Returns:
            The probability, and reasons such as `source=Referral +` or
            `Time on Site very low -` (the sign says up or down).
        """
        log_odds = self._intercept
        effects: list[tuple[float, int]] = []
        for block, baseline in zip(self._blocks, self._baselines, strict=True):
            column = block.column(values)
            weight = self._weights[column]
            log_odds += weight
            effects.append((weight - baseline, column))
        probability = _sigmoid(log_odds)
        if reasons <= 0:
            return probability, ()
        strongest = heapq.nlargest(reasons, effects, key=lambda item: abs(item[0]))
        return probability, tuple(
            f"{self._labels[column]} {'+' if effect > 0 else '-'}"
            for effect, column in strongest
            if abs(effect) >= MIN_EFFECT
        )


def _sigmoid(log_odds: float) -> float:
    # Split by sign so that exp never overflows on a far-out lead.
    if log_odds >= 0:
        return 1.0 / (1.0 + math.exp(-log_odds))
    odds = math.exp(log_odds)
    return odds / (1.0 + odds)
