"""Scoring with a trained model: the newest version, its reasons, and the rules."""

from __future__ import annotations

import csv
import json
import math
import random
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest

from leads.scoring import (
    ModelLoadError,
    ModelVersionError,
    Scorer,
    TrainedModel,
    load_scorer,
    train_model,
)

RULES = """
combine: {combine}
model:
  version: {version}
  reasons: 2
rules:
  base: 50
  fit:
    title_seniority:
      - {{level: director, points: 15, keywords: [director]}}
    free_mail: -10
  intent:
    source: {{referral: 30}}
"""


def write_history(path: Path, rows: int = 500, seed: int = 11) -> Path:
    """Synthetic leads: referrals and long visits convert; `Select` says nothing."""
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["Lead Source", "Time on Site", "Specialization", "Converted"])
        for _ in range(rows):
            source = rng.choice(["Referral", "Google", "Direct Traffic"])
            seconds = rng.expovariate(1 / 400)
            log_odds = -1.2 + 2.5 * (source == "Referral") + 0.004 * (seconds - 400)
            converted = rng.random() < 1 / (1 + math.exp(-log_odds))
            writer.writerow(
                [
                    source,
                    f"{seconds:.0f}",
                    rng.choice(["Finance", "Marketing", "Select", ""]),
                    int(converted),
                ]
            )
    return path


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedModel:
    folder = tmp_path_factory.mktemp("history")
    return train_model(
        write_history(folder / "history.csv"),
        label="Converted",
        model_dir=folder / "models",
        folds=3,
        now=datetime(2026, 3, 1, 9, 30, tzinfo=UTC),
    )


def scorer_for(
    tmp_path: Path,
    model_dir: Path,
    combine: str = "model_plus_fit",
    version: str = "",
) -> Scorer:
    (tmp_path / "scoring.yaml").write_text(
        RULES.format(combine=combine, version=version), encoding="utf-8"
    )
    return load_scorer(tmp_path, model_dir)


def copy_model(trained: TrainedModel, models: Path) -> Path:
    """A model dir of its own holding the trained version, for a test to change."""
    shutil.copytree(trained.path, models / trained.version)
    return models


REFERRAL = {
    "source": "Referral",
    "job_title": "Director of Sales",
    "flags": ["free_mail"],
    "custom": {"Time on Site": "1500", "Specialization": "Finance"},
}
COLD = {"source": "Google", "custom": {"Time on Site": "10"}}


class TestTheModelScores:
    def test_the_newest_model_is_used_with_its_reasons(self, trained, tmp_path):
        scorer = scorer_for(tmp_path, trained.path.parent, combine="model")

        hot, cold = scorer.score(REFERRAL), scorer.score(COLD)

        assert hot.model_version == trained.version
        assert hot.value > 70 > 30 > cold.value
        assert set(hot.reasons) == {"source=Referral +", "Time on Site very high +"}
        assert cold.reasons[0] in ("source=Google -", "Time on Site very low -")
        assert all(reason.endswith(" -") for reason in cold.reasons)

    def test_the_score_is_the_estimators_probability_rounded(self, trained, tmp_path):
        scorer = scorer_for(tmp_path, trained.path.parent, combine="model")
        leads = [REFERRAL, COLD, {}, {"custom": {"Time on Site": "n/a"}}]

        probabilities = scorer.model.estimator.predict_proba(leads)[:, 1]

        assert [s.value for s in scorer.score_many(leads)] == [
            math.floor(100 * p + 0.5) for p in probabilities
        ]
        for lead, expected in zip(leads, probabilities, strict=True):
            assert scorer.model.explain(lead, 0)[0] == pytest.approx(expected)

    def test_select_scores_exactly_like_a_missing_value(self, trained, tmp_path):
        scorer = scorer_for(tmp_path, trained.path.parent, combine="model")

        def lead(specialization: object) -> dict:
            return {"source": "Google", "custom": {"Specialization": specialization}}

        assert scorer.score(lead("Select")) == scorer.score(lead(""))
        assert scorer.score(lead("Select")) == scorer.score(lead(None))

    def test_a_custom_field_sent_under_another_spelling_is_read(
        self, trained, tmp_path
    ):
        scorer = scorer_for(tmp_path, trained.path.parent, combine="model")
        sent = {"source": "Referral", "custom": {"time_on_site": 1500}}
        imported = {"source": "Referral", "custom": {"Time on Site": "1500"}}

        assert scorer.score(sent) == scorer.score(imported)


class TestCombiningWithRules:
    def test_model_plus_fit_adds_the_fit_rules_only(self, trained, tmp_path):
        model_only = scorer_for(tmp_path, trained.path.parent, "model")
        scorer = scorer_for(tmp_path, trained.path.parent, "model_plus_fit")

        base = model_only.score(REFERRAL)
        result = scorer.score(REFERRAL)

        assert result.value == min(100, base.value + 15 - 10)
        assert result.reasons == base.reasons + (
            "title_seniority:director +15",
            "free_mail -10",
        )

    def test_model_plus_rules_adds_the_intent_rules_too(self, trained, tmp_path):
        model_only = scorer_for(tmp_path, trained.path.parent, "model")
        scorer = scorer_for(tmp_path, trained.path.parent, "model_plus_rules")
        lead = {**COLD, "source": "Referral"}

        result = scorer.score(lead)

        assert result.value == min(100, model_only.score(lead).value + 30)
        assert result.reasons[-1] == "source:referral +30"

    def test_rules_ignores_the_model(self, trained, tmp_path):
        scorer = scorer_for(tmp_path, trained.path.parent, "rules")

        result = scorer.score(REFERRAL)

        assert result.model_version is None
        assert result.value == 50 + 15 - 10 + 30
        assert scorer.model is None

    def test_without_a_model_every_choice_scores_by_the_rules(self, tmp_path):
        scorer = scorer_for(tmp_path, tmp_path / "no-models", "model_plus_fit")

        result = scorer.score(REFERRAL)

        assert result == scorer_for(tmp_path, tmp_path, "rules").score(REFERRAL)
        assert result.reasons[-1] == "source:referral +30"


class TestVersions:
    def test_the_version_named_in_the_config_is_used(self, trained, tmp_path):
        models = copy_model(trained, tmp_path / "models")
        newer = train_model(
            trained.history.path,
            label="Converted",
            model_dir=models,
            folds=2,
            now=datetime(2026, 3, 2, tzinfo=UTC),
        )

        assert scorer_for(tmp_path, models).model.version == newer.version
        named = scorer_for(tmp_path, models, version=trained.version)
        assert named.score(COLD).model_version == trained.version

    def test_a_named_version_that_is_not_saved_is_refused(self, trained, tmp_path):
        with pytest.raises(ModelLoadError, match="no scoring model '20990101-000000'"):
            scorer_for(tmp_path, trained.path.parent, version="20990101-000000")

    def test_a_model_from_another_sklearn_version_is_refused_asking_to_retrain(
        self, trained, tmp_path
    ):
        copy = copy_model(trained, tmp_path / "models") / trained.version
        described = json.loads((copy / "model.json").read_text("utf-8"))
        described["sklearn_version"] = "1.5.0"
        (copy / "model.json").write_text(json.dumps(described), "utf-8")

        with pytest.raises(ModelVersionError) as caught:
            scorer_for(tmp_path, tmp_path / "models")

        message = str(caught.value)
        assert "saved with scikit-learn 1.5.0" in message
        assert "retrain it with `orchestrator score train" in message

    def test_a_damaged_estimator_file_is_refused(self, trained, tmp_path):
        copy = copy_model(trained, tmp_path / "models") / trained.version
        (copy / "estimator.pkl").write_bytes(b"not a pickle")

        with pytest.raises(ModelLoadError, match="does not match the checksum"):
            scorer_for(tmp_path, tmp_path / "models")

    def test_a_half_written_version_is_never_picked(self, trained, tmp_path):
        models = tmp_path / "models"
        models.mkdir()
        (models / ".20990101-000000.partial").mkdir()
        (models / "20990101-000000").mkdir()

        assert scorer_for(tmp_path, models).model is None
