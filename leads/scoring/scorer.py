"""Scoring a lead from 0 to 100 with reasons, by the rules and a trained model.

How the two combine is `combine` in `scoring.yaml`:

- `model_plus_fit` (the default): the model's probability × 100 is the base
  and the fit rules add their points. Intent rules are left out because the
  model already learned from the lead's source and activity; counting them
  again would move a lead twice for one thing.
- `model_plus_rules`: the model's probability × 100 plus every rule's points.
- `model`: the model alone; the rules are not applied.
- `rules`: the rules alone (their `base` plus points), even with a model.

Until a model has been trained, every choice scores by the rules alone.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from leads.scoring.config import CONFIG_FILE, ScoringConfig, load_config
from leads.scoring.model import LeadModel
from leads.scoring.rules import Hit, Rules
from leads.scoring.versions import load_model

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Score:
    """A lead's score and why.

    Attributes:
        value: 0 to 100.
        reasons: short strings, model reasons first (`source=Referral +`),
            then the rules that fired (`title_seniority:director +15`).
        model_version: the trained model used, or None for rules alone.
    """

    value: int
    reasons: tuple[str, ...]
    model_version: str | None


class Scorer:
    """Scores leads by the rules of a config and, if given, a trained model.

    Args:
        config: the scoring settings.
        model: a trained model; None scores by the rules alone.
    """

    def __init__(self, config: ScoringConfig, model: LeadModel | None = None) -> None:
        self.config = config
        self.model = model if config.combine != "rules" else None
        self._rules = Rules(config.rules)
        self._reasons = config.model.reasons

    def score(self, values: Mapping[str, Any]) -> Score:
        """Scores one lead.

        Args:
            values: the lead's stored columns (`job_title`, `country` as an ISO
                code, `source`, `flags`…), custom fields under `custom`.
        """
        if self.model is None:
            fired = self._rules.fit(values) + self._rules.intent(values)
            return Score(_clamp(self._rules.base, fired), _reasons((), fired), None)

        probability, reasons = self.model.explain(values, self._reasons)
        base = math.floor(100 * probability + 0.5)
        combine = self.config.combine
        hits: list[Hit] = []
        if combine in ("model_plus_fit", "model_plus_rules"):
            hits = self._rules.fit(values)
        if combine == "model_plus_rules":
            hits += self._rules.intent(values)
        return Score(_clamp(base, hits), _reasons(reasons, hits), self.model.version)

    def score_many(self, leads: Iterable[Mapping[str, Any]]) -> list[Score]:
        """Scores leads in order; one `score` call each, as each costs microseconds."""
        return [self.score(values) for values in leads]


def _clamp(base: int, hits: list[Hit]) -> int:
    return max(0, min(100, base + sum(points for _, points in hits)))


def _reasons(model: tuple[str, ...], hits: list[Hit]) -> tuple[str, ...]:
    return model + tuple(reason for reason, _ in hits)


def load_scorer(config_dir: Path, model_dir: Path) -> Scorer:
    """The scorer `scoring.yaml` describes, with the model it names or the newest.

    Args:
        config_dir: the folder holding `scoring.yaml`.
        model_dir: the folder of saved models (`Settings().model_dir`).

    Raises:
        ScoringConfigError: `scoring.yaml` is missing or wrong.
        ModelLoadError: the model named in `scoring.yaml` is not saved, or the
            one to use is damaged.
        ModelVersionError: the model to use was saved by another scikit-learn
            version and must be retrained.
    """
    config = load_config(config_dir / CONFIG_FILE)
    model = None
    if config.combine != "rules":
        model = load_model(model_dir, config.model.version)
    if model is None:
        logger.info("scoring by rules alone (combine: %s)", config.combine)
    else:
        logger.info(
            "scoring with model %s (combine: %s)", model.version, config.combine
        )
    return Scorer(config, model)
