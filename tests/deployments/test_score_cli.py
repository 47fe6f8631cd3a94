"""`orchestrator score train` as a user runs it: AUC printed, a version saved."""

from __future__ import annotations

import csv
import json
import math
import random
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from deployments.cli import app
from deployments.score_cli import score

runner = CliRunner()


def write_history(path: Path, rows: int = 300, seed: int = 5) -> Path:
    """Synthetic leads where referrals and long visits convert."""
    rng = random.Random(seed)
    with path.open("w", newline="", encoding="utf-8") as file:
        writer = csv.writer(file)
        writer.writerow(["Lead Source", "Time on Site", "Tags", "Converted"])
        for _ in range(rows):
            source = rng.choice(["Referral", "Google", "Direct Traffic"])
            seconds = rng.expovariate(1 / 400)
            log_odds = -1.2 + 2.5 * (source == "Referral") + 0.004 * (seconds - 400)
            converted = rng.random() < 1 / (1 + math.exp(-log_odds))
            tag = "Will revert" if converted else "Ringing"
            writer.writerow(
                [source, f"{seconds:.0f}", tag, "Yes" if converted else "No"]
            )
    return path


@pytest.fixture
def data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("ORCH_DATA_DIR", str(tmp_path / "data"))
    return tmp_path / "data"


def train(*args: str):
    return runner.invoke(score, ["train", *args])


def test_train_prints_the_auc_and_saves_a_version(tmp_path, data_dir):
    history = write_history(tmp_path / "history.csv")

    result = train(str(history), "--label", "Converted", "--exclude", "Tags")

    assert result.exit_code == 0, result.output
    assert "read 300 rows" in result.stdout
    assert [line for line in result.stdout.splitlines() if line.startswith("fold")]
    assert "AUC 0." in result.stdout and "over 5 folds" in result.stdout
    versions = [p for p in (data_dir / "models").iterdir() if p.is_dir()]
    assert len(versions) == 1
    assert f"saved model {versions[0].name} to {versions[0]}" in result.stdout
    described = json.loads((versions[0] / "model.json").read_text("utf-8"))
    assert described["positive"] == "Yes"
    assert described["excluded"] == ["Tags"]
    assert described["auc"]["mean"] > 0.75


def test_a_leaking_column_is_pointed_out(tmp_path, data_dir):
    history = write_history(tmp_path / "history.csv")

    result = train(str(history), "--label", "Converted", "--folds", "3")

    assert result.exit_code == 0, result.output
    assert "note: an AUC this high often means a column" in result.stdout


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (
            ["--label", "Outcome"],
            "error: the label column 'Outcome' is not in the file",
        ),
        (
            ["--label", "Converted", "--exclude", "Lead Quality"],
            "error: the excluded column 'Lead Quality' is not in the file",
        ),
        (
            ["--label", "Converted", "--positive", "Won"],
            "error: no row has Converted = 'Won'",
        ),
    ],
)
def test_refusals_are_one_error_line_and_exit_1(tmp_path, data_dir, arguments, message):
    history = write_history(tmp_path / "history.csv")

    result = train(str(history), *arguments)

    assert result.exit_code == 1
    assert result.stderr.startswith(message)
    assert result.stderr.count("\n") == 1
    assert not (data_dir / "models").exists()


def test_a_label_with_one_class_is_refused(tmp_path, data_dir):
    history = tmp_path / "won.csv"
    history.write_text("Source,Converted\n" + "Google,1\n" * 12, encoding="utf-8")

    result = train(str(history), "--label", "Converted")

    assert result.exit_code == 1
    assert "needs converted and lost leads" in result.stderr


def test_fewer_rows_than_folds_is_refused(tmp_path, data_dir):
    history = tmp_path / "tiny.csv"
    history.write_text("Source,Converted\nGoogle,1\nReferral,0\n", encoding="utf-8")

    result = train(str(history), "--label", "Converted", "--folds", "3")

    assert result.exit_code == 1
    assert "fewer than the 3 folds" in result.stderr


def test_a_file_that_does_not_exist_is_refused_by_the_command_line(tmp_path):
    result = train(str(tmp_path / "nope.csv"), "--label", "Converted")

    assert result.exit_code == 2
    # Click's usage error comes in a box wrapped at 80 columns, where the
    # temporary path's length decides where the lines break.
    unboxed = " ".join(re.sub("[│╭╮╰╯─]", " ", result.stderr).split())
    assert "does not exist" in unboxed


def test_score_is_a_command_group_of_orchestrator():
    result = runner.invoke(app, ["score", "train", "--help"])

    assert result.exit_code == 0
    assert "--label" in result.stdout and "--exclude" in result.stdout
