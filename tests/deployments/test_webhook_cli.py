"""`orchestrator webhooks`: a source's secret, and a curl whose signature verifies."""

from __future__ import annotations

import shlex
from datetime import UTC, datetime

import pytest
from typer.testing import CliRunner

from deployments.cli import app
from leads.encryption import secret_key
from leads.settings import get_settings
from leads.webhooks.signatures import verify
from leads.webhooks.sources import configured_sources


@pytest.fixture
def data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCH_DATA_DIR", str(tmp_path))
    get_settings.cache_clear()
    yield tmp_path
    get_settings.cache_clear()


def invoke(*args: str):
    return CliRunner().invoke(app, list(args))


def test_the_printed_curl_sends_a_delivery_the_api_would_accept(data_dir):
    secret_key(get_settings())  # the stack made its key when it started
    body = data_dir / "lead.json"
    body.write_bytes(b'{"email": "ada@example.com"}')

    secret = invoke("webhooks", "secret", "forms").stdout.strip()
    result = invoke("webhooks", "curl", "forms", str(body), "--event-id", "e-1")

    assert result.exit_code == 0, result.output
    words = shlex.split(result.stdout)
    headers = dict(
        words[i + 1].split(": ", 1) for i, word in enumerate(words) if word == "-H"
    )
    assert headers["X-Event-Id"] == "e-1"
    source = configured_sources(get_settings().config_dir)["forms"]
    verify(
        source,
        secret,
        body.read_bytes(),
        headers,
        token=None,
        method="POST",
        url=words[4],
        now=datetime.now(UTC),
    )


def test_without_the_stacks_key_it_says_to_use_the_stacks_settings(data_dir):
    result = invoke("webhooks", "secret", "forms")

    assert result.exit_code != 0
    assert "ORCH_DATA_DIR" in result.output
    assert not get_settings().secret_key_file.exists()


def test_an_unknown_source_names_the_known_ones(data_dir):
    result = invoke("webhooks", "secret", "nosuch")

    assert result.exit_code != 0
    assert "forms" in result.output


def test_in_production_a_source_without_its_variable_has_no_secret(
    data_dir, monkeypatch
):
    monkeypatch.setenv("ORCH_ENV", "production")
    monkeypatch.delenv("ORCH_WEBHOOK_SECRET_FORMS", raising=False)
    get_settings.cache_clear()

    result = invoke("webhooks", "secret", "forms")

    assert result.exit_code != 0
    assert "ORCH_WEBHOOK_SECRET_FORMS" in result.output
