"""What a report says of the code it measured."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from bench import machine


def git(folder: Path, *arguments: str) -> str:
    return subprocess.run(
        ["git", "-C", str(folder), *arguments],
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


@pytest.fixture
def checkout(tmp_path, monkeypatch) -> Path:
    git(tmp_path, "init", "-q")
    (tmp_path / "bench" / "results").mkdir(parents=True)
    (tmp_path / "code.py").write_text("x = 1\n")
    (tmp_path / "README.md").write_text("# table\n")
    (tmp_path / "bench" / "results" / "a-latest.md").write_text("old\n")
    git(tmp_path, "add", ".")
    git(
        tmp_path,
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@example.com",
        "commit",
        "-qm",
        "one",
    )
    monkeypatch.setattr(machine, "REPO_ROOT", tmp_path)
    return tmp_path


def test_results_and_the_table_written_by_earlier_benchmarks_leave_it_clean(
    checkout,
):
    (checkout / "bench" / "results" / "a-latest.md").write_text("new\n")
    (checkout / "bench" / "results" / "b-headline.json").write_text("{}\n")
    (checkout / "README.md").write_text("# table, rebuilt\n")

    assert machine.code_version() == git(checkout, "rev-parse", "--short", "HEAD")


def test_a_changed_or_new_source_file_is_said(checkout):
    (checkout / "code.py").write_text("x = 2\n")

    assert machine.code_version().endswith(" with uncommitted changes")


def test_a_new_untracked_source_file_is_said(checkout):
    (checkout / "new_module.py").write_text("y = 1\n")

    assert machine.code_version().endswith(" with uncommitted changes")
