"""Training on a converted/lost history: an honest AUC, a saved version, refusals."""

from __future__ import annotations

import csv
import json
import math
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sklearn

from leads.scoring import TrainingError, list_versions, read_history, train_model

HEADER = [
    "Lead ID",
    "Email",
    "Lead Source",
    "Country",
    "Time on Site",
    "Specialization",
    "Stage",
    "Converted",
]


def write_history(path: Path, rows: int = 400, seed: int = 3) -> Path:
    """Synthetic leads: referrals, long visits and company mail convert more."""
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(HEADER)
        for number in range(rows):
            source = rng.choice(["Referral", "Google", "Direct Traffic", "google"])
            seconds = rng.expovariate(1 / 400)
            free = rng.random() < 0.5
            domain = "gmail.com" if free else f"firm{number % 30}.example"
            log_odds = (
                -1.0
                + 2.0 * (source == "Referral")
                + 0.004 * (seconds - 400)
                - 1.0 * free
            )
            converted = rng.random() < 1 / (1 + math.exp(-log_odds))
            writer.writerow(
                [
                    f"L-{number:05d}",
                    f"lead{number}@{domain}",
                    source,
                    rng.choice(["India", "United States", "unknown", ""]),
                    f"{seconds:.0f}",
                    rng.choice(["Finance", "Marketing", "Select", ""]),
                    "Won" if converted else "Lost",
                    "1" if converted else "0",
                ]
            )
    return path


@pytest.fixture
def history(tmp_path: Path) -> Path:
    return write_history(tmp_path / "history.csv")


def test_a_real_signal_gives_an_auc_well_above_chance(history, tmp_path):
    lines: list[str] = []

    trained = train_model(
        history,
        label="Converted",
        exclude=["Stage"],
        model_dir=tmp_path / "models",
        progress=lines.append,
    )

    assert len(trained.fold_aucs) == 5
    assert trained.auc_mean > 0.75
    assert 0 <= trained.auc_spread < 0.1
    assert [line for line in lines if line.startswith("fold ")] == [
        f"fold {n}/5: AUC {auc:.3f}" for n, auc in enumerate(trained.fold_aucs, 1)
    ]
    assert list_versions(tmp_path / "models") == [trained.version]


def test_the_saved_model_json_says_what_was_trained_and_how_well(history, tmp_path):
    now = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)

    trained = train_model(
        history,
        label="Converted",
        exclude=["Stage"],
        model_dir=tmp_path / "models",
        now=now,
    )

    assert trained.version == "20260301-093000"
    assert (trained.path / "estimator.pkl").is_file()
    described = json.loads((trained.path / "model.json").read_text("utf-8"))
    assert described["version"] == "20260301-093000"
    assert described["trained_at"] == now.isoformat()
    assert described["label"] == "Converted"
    assert described["positive"] == "1"
    assert described["excluded"] == ["Stage"]
    assert described["rows"] == 400
    assert described["sklearn_version"] == sklearn.__version__
    assert described["auc"]["folds"] == 5
    assert described["auc"]["mean"] == round(trained.auc_mean, 4)
    assert len(described["auc"]["per_fold"]) == 5
    names = [feature["name"] for feature in described["features"]]
    assert names == ["source", "country", "Time on Site", "Specialization", "free_mail"]


class TestFeatures:
    def test_lead_fields_get_their_field_names_and_ids_are_left_out(self, history):
        read = read_history(history, label="Converted", exclude=["Stage"])

        assert {f.name: f.kind for f in read.features} == {
            "source": "category",
            "country": "category",
            "Time on Site": "number",
            "Specialization": "category",
            "free_mail": "category",
        }
        assert read.ignored == {
            "Lead ID": "a different value on most rows: an id or free text",
            "email": "identifies the lead; only its free_mail flag is used",
        }

    def test_rows_are_cleaned_as_intake_cleans_them(self, history):
        read = read_history(history, label="Converted", exclude=["Stage"])

        assert {lead.get("country") for lead in read.leads} == {"IN", "US", None}
        assert all(
            ("free_mail" in lead["flags"]) == lead["email"].endswith("@gmail.com")
            for lead in read.leads
        )

    def test_select_is_missing_not_a_value_of_its_own(self, history, tmp_path):
        trained = train_model(
            history, label="Converted", exclude=["Stage"], model_dir=tmp_path
        )

        described = json.loads((trained.path / "model.json").read_text("utf-8"))
        specialization = next(
            f for f in described["features"] if f["name"] == "Specialization"
        )
        assert set(specialization["values"]) == {
            "Specialization=Finance",
            "Specialization=Marketing",
        }

    def test_an_excluded_column_is_not_a_feature(self, history):
        read = read_history(
            history, label="Converted", exclude=["Stage", "Time on Site"]
        )

        assert "Time on Site" not in {f.name for f in read.features}
        assert read.excluded == ("Stage", "Time on Site")


class TestOutcomes:
    def test_the_converted_value_can_be_named(self, history):
        read = read_history(
            history, label="Stage", exclude=["Converted"], positive="won"
        )

        assert read.positive == "Won"
        assert 0 < read.converted < len(read.leads)

    def test_won_and_lost_are_understood_without_naming_them(self, history):
        read = read_history(history, label="Stage", exclude=["Converted"])

        assert read.positive == "Won"

    def test_the_label_is_found_by_its_mapped_field_name_too(self, tmp_path):
        path = tmp_path / "by-status.csv"
        path.write_text(
            "Lead Status,Visits\n"
            + "".join(f"{'won' if n % 2 else 'lost'},{n}\n" for n in range(20)),
            encoding="utf-8",
        )

        read = read_history(path, label="status")

        assert read.label == "status"
        assert read.converted == 10


class TestRefusals:
    def test_a_label_column_the_file_lacks(self, history):
        with pytest.raises(TrainingError) as caught:
            read_history(history, label="Outcome")

        assert "the label column 'Outcome' is not in the file" in str(caught.value)
        assert "'Converted'" in str(caught.value)

    def test_an_excluded_column_the_file_lacks_is_named(self, history):
        with pytest.raises(TrainingError, match="the excluded column 'Tags' is not"):
            read_history(history, label="Converted", exclude=["Stage", "Tags"])

    def test_a_label_with_one_class(self, tmp_path):
        path = tmp_path / "all-won.csv"
        path.write_text(
            "Source,Converted\n" + "Google,1\nReferral,1\n" * 10, encoding="utf-8"
        )

        with pytest.raises(TrainingError, match="needs converted and lost leads"):
            read_history(path, label="Converted")

    def test_a_named_converted_value_no_row_has(self, history):
        with pytest.raises(TrainingError) as caught:
            read_history(history, label="Stage", positive="Closed Won")

        assert "no row has Stage = 'Closed Won'" in str(caught.value)
        assert "'Won'" in str(caught.value) and "'Lost'" in str(caught.value)

    def test_a_label_whose_converted_value_cannot_be_told(self, tmp_path):
        path = tmp_path / "stages.csv"
        path.write_text(
            "Source,Stage\n" + "Google,Open\nReferral,Closed\nDirect,Pending\n" * 5,
            encoding="utf-8",
        )

        with pytest.raises(TrainingError, match="pass the converted value with"):
            read_history(path, label="Stage")

    def test_fewer_rows_than_folds(self, tmp_path):
        path = tmp_path / "tiny.csv"
        path.write_text(
            "Source,Converted\nGoogle,1\nReferral,0\nDirect,1\n", encoding="utf-8"
        )

        with pytest.raises(TrainingError, match="3 labelled rows, fewer than the 5"):
            train_model(path, label="Converted", model_dir=tmp_path / "models")
        assert not (tmp_path / "models").exists()

    def test_fewer_rows_of_one_outcome_than_folds(self, tmp_path):
        path = tmp_path / "rare.csv"
        rows = ["Google,0"] * 20 + ["Referral,1"] * 3
        path.write_text("Source,Converted\n" + "\n".join(rows) + "\n", "utf-8")

        with pytest.raises(TrainingError, match="only 3 of 23 labelled rows"):
            train_model(path, label="Converted", model_dir=tmp_path / "models")

    def test_a_file_with_nothing_to_learn_from(self, tmp_path):
        path = tmp_path / "ids.csv"
        path.write_text(
            "Email,Converted\n"
            + "".join(f"p{n}@firm{n}.example,{n % 2}\n" for n in range(20)),
            encoding="utf-8",
        )

        with pytest.raises(TrainingError, match="no column is left to learn from"):
            read_history(path, label="Converted")

    def test_a_file_that_is_not_a_lead_file(self, tmp_path):
        path = tmp_path / "empty.csv"
        path.write_bytes(b"")

        with pytest.raises(TrainingError, match="no header line"):
            read_history(path, label="Converted")


def test_two_trainings_in_one_second_keep_two_versions(history, tmp_path):
    now = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
    first = train_model(
        history,
        label="Converted",
        exclude=["Stage"],
        model_dir=tmp_path,
        now=now,
        folds=2,
    )
    second = train_model(
        history,
        label="Converted",
        exclude=["Stage"],
        model_dir=tmp_path,
        now=now,
        folds=2,
    )

    assert (first.version, second.version) == ("20260301-093000", "20260301-093000-2")
    assert list_versions(tmp_path) == [first.version, second.version]
