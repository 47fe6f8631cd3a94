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


class TestEmailSettings:
    @pytest.mark.parametrize(
        "url", ["mail.example.com", "ftp://example.com", "https://", "https://a b.com"]
    )
    def test_a_public_base_url_links_cannot_be_made_from_is_refused(self, url):
        with pytest.raises(ValidationError, match="public_base_url"):
            Settings(public_base_url=url)

    def test_an_unknown_default_timezone_is_refused(self):
        with pytest.raises(ValidationError, match="IANA time zone"):
            Settings(default_timezone="Mars/Olympus")

    def test_https_addresses_and_zones_are_taken(self):
        settings = Settings(
            public_base_url="https://crm.example.com/orchestrator",
            default_timezone="Europe/Oslo",
        )

        assert settings.public_base_url == "https://crm.example.com/orchestrator"
        assert settings.default_timezone == "Europe/Oslo"


class TestPublicAddress:
    def test_unset_it_follows_the_api_port_so_links_reach_a_moved_stack(self):
        assert Settings(api_port=28000).public_base_url == "http://127.0.0.1:28000"
        assert Settings(api_host="0.0.0.0").public_base_url == "http://127.0.0.1:8000"

    def test_set_it_is_kept_whatever_the_port(self):
        settings = Settings(api_port=28000, public_base_url="https://leads.example.com")

        assert settings.public_base_url == "https://leads.example.com"
