"""Settings: the ORCH_ prefix, defaults, bounds and a description on every field."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from leads.settings import Settings


def test_every_setting_has_a_description():
    missing = [
        name for name, field in Settings.model_fields.items() if not field.description
    ]

    assert missing == []


def test_reads_the_orch_prefix(monkeypatch):
    monkeypatch.setenv("ORCH_API_PORT", "9001")
    monkeypatch.setenv("ORCH_DEFAULT_REGION", "gb")

    settings = Settings()

    assert settings.api_port == 9001
    assert settings.default_region == "GB"


def test_default_store_is_sqlite_in_the_data_dir(tmp_path):
    settings = Settings(data_dir=tmp_path)

    assert settings.store_url == f"sqlite:///{tmp_path / 'orchestrator.db'}"


def test_an_explicit_database_url_wins():
    url = "postgresql+psycopg://u@127.0.0.1/x"

    assert Settings(database_url=url, data_dir=Path("d")).store_url == url


@pytest.mark.parametrize(
    ("name", "value"), [("api_port", 0), ("max_body_bytes", 10), ("env", "staging")]
)
def test_out_of_bounds_values_are_refused_naming_the_setting(name, value):
    with pytest.raises(ValidationError, match=name):
        Settings(**{name: value})
