"""`orchestrator import` as a user runs it: --local into a real store, or via the API.

One test runs the console script in a real process; the rest invoke the same
Typer app in this process, which is quicker and reads the same settings.
"""

from __future__ import annotations

import csv
import os
import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from sqlalchemy import func, select
from typer.testing import CliRunner

from deployments.cli import app
from leads.settings import get_settings
from leads.store import Store
from leads.store.schema import upgrade
from leads.store.tables import Lead, LeadImport

ORCHESTRATOR = str(Path(sys.executable).with_name("orchestrator"))
FIXTURES = Path(__file__).parents[1] / "fixtures" / "csv"
SALESFORCE_LEADS = FIXTURES / "salesforce_trailhead" / "Lead_Data.csv"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def count(url: str, model: type) -> int:
    store = Store(url)
    try:
        with store.engine.connect() as connection:
            query = select(func.count()).select_from(model)
            return connection.execute(query).scalar_one()
    finally:
        store.dispose()


@pytest.fixture
def store_url(backend: str, new_store_url) -> str:
    """A new, migrated, empty store of each backend."""
    url = new_store_url(backend)
    store = Store(url)
    upgrade(store.engine)
    store.dispose()
    return url


@pytest.fixture
def settings_env(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[dict[str, str]]:
    """ORCH_* variables naming the store and a data dir, in this process too."""
    for name in list(os.environ):
        if name.startswith("ORCH_"):
            monkeypatch.delenv(name)
    variables = {
        "ORCH_DATA_DIR": str(tmp_path / "data"),
        "ORCH_DATABASE_URL": store_url,
    }
    for name, value in variables.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield variables
    get_settings.cache_clear()


def orchestrator(*args: str) -> Result:
    """Runs the command in this process, as the console script would."""
    return CliRunner().invoke(app, list(args))


def test_a_local_import_in_a_real_process_prints_the_counts(settings_env, store_url):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}

    result = subprocess.run(
        [ORCHESTRATOR, "import", "--local", str(SALESFORCE_LEADS)],
        env=env | settings_env,
        capture_output=True,
        text=True,
        timeout=120,
    )

    assert result.returncode == 0, result.stderr
    assert re.search(r"^import [0-9a-f-]{36}: finished$", result.stdout, re.M)
    assert "read as utf-8, delimiter ','" in result.stdout
    assert "  created: 11\n" in result.stdout
    assert "  rejected: 0\n" in result.stdout
    assert count(store_url, Lead) == 11


class TestLocal:
    def test_a_dry_run_says_nothing_was_written(self, settings_env, store_url):
        result = orchestrator("import", "--local", "--dry-run", str(SALESFORCE_LEADS))

        assert result.exit_code == 0, result.output
        assert "(dry run: nothing written)" in result.stdout
        assert "  would be created: 11\n" in result.stdout
        assert count(store_url, Lead) == 0

    def test_rejects_are_written_to_the_file_named(self, settings_env, tmp_path):
        source = tmp_path / "leads.csv"
        source.write_text(
            "Email,First Name,Phone\r\nada@example.com,Ada,\r\n,Zoë,\r\nN/A,Pat,12\r\n",
            encoding="utf-8",
        )
        rejects = tmp_path / "rejects.csv"

        result = orchestrator(
            "import", "--local", "--rejects", str(rejects), str(source)
        )

        assert result.exit_code == 0, result.output
        assert "  rejected: 2\n" in result.stdout
        assert rejects.read_bytes().startswith(b"\xef\xbb\xbf")
        with rejects.open(encoding="utf-8-sig", newline="") as file:
            rows = list(csv.DictReader(file))
        assert [
            (row["record"], row["line"], row["field"], row["First Name"])
            for row in rows
        ] == [("2", "3", "email, phone", "Zoë"), ("3", "4", "email; phone", "Pat")]
        assert rows[1]["Phone"] == "12"

    def test_a_mapping_file_sends_columns_where_it_says(
        self, settings_env, store_url, tmp_path
    ):
        source = tmp_path / "leads.csv"
        source.write_text("Mail,Given\r\nada@example.com,Ada\r\n")
        mapping = tmp_path / "mapping.yaml"
        mapping.write_text("Mail: email\nGiven: first_name\n")

        result = orchestrator(
            "import", "--local", "--mapping", str(mapping), str(source)
        )

        assert result.exit_code == 0, result.output
        assert "  created: 1\n" in result.stdout
        assert count(store_url, Lead) == 1

    @pytest.mark.parametrize(
        "text",
        [
            pytest.param("email: [unclosed\n", id="not YAML"),
            pytest.param("- email\n- first_name\n", id="not an object"),
            pytest.param("Surname: last_name\n", id="names a missing column"),
        ],
    )
    def test_a_bad_mapping_file_is_one_error_line_and_exit_1(
        self, settings_env, store_url, tmp_path, text
    ):
        mapping = tmp_path / "mapping.yaml"
        mapping.write_text(text)

        result = orchestrator(
            "import", "--local", "--mapping", str(mapping), str(SALESFORCE_LEADS)
        )

        assert result.exit_code == 1
        assert result.stderr.startswith("error: ")
        assert result.stderr.strip().count("\n") == 0, result.stderr
        assert count(store_url, LeadImport) == 0

    def test_an_unreadable_file_is_one_error_line_and_exit_1(
        self, settings_env, store_url, tmp_path
    ):
        source = tmp_path / "leads.csv"
        source.write_text("email,,last_name\r\nada@example.com,x,Lovelace\r\n")

        result = orchestrator("import", "--local", str(source))

        assert result.exit_code == 1
        assert result.stderr.startswith("error: column 2 of the header line")
        assert result.stderr.strip().count("\n") == 0
        assert list((Path(settings_env["ORCH_DATA_DIR"]) / "imports").iterdir()) == []

    def test_a_file_that_breaks_off_mid_way_is_reported_failed(
        self, settings_env, tmp_path
    ):
        # A physical line over the reader's 1 MiB limit after good records.
        source = tmp_path / "leads.csv"
        source.write_text(
            "email,notes\r\nada@example.com,fine\r\n"
            f"bob@example.com,{'x' * (1024 * 1024 + 10)}\r\n"
        )

        result = orchestrator("import", "--local", str(source))

        assert result.exit_code == 1, result.stdout
        assert "failed" in result.stdout
        assert "error: the import failed: line 3 is longer than" in result.stderr


class TestThroughTheApi:
    def test_without_a_running_api_names_make_run_the_port_and_local(
        self, settings_env, monkeypatch
    ):
        port = free_port()
        monkeypatch.setenv("ORCH_API_PORT", str(port))
        get_settings.cache_clear()

        result = orchestrator("import", str(SALESFORCE_LEADS))

        assert result.exit_code == 1
        assert result.stderr.startswith("error: ")
        assert f"http://127.0.0.1:{port} is not answering" in result.stderr
        # A stack started on other ports is found through the same settings.
        assert "`make run`" in result.stderr and "ORCH_API_PORT" in result.stderr
        assert "--local" in result.stderr
        assert result.stderr.strip().count("\n") == 0
