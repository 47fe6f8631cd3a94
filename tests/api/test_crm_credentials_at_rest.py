"""CRM credentials at rest: sealed with the secret key, never returned, never logged.

Accounts are saved through `POST /api/crm/config` against the sandbox over
real HTTP, used for a sync, and then every column of every table of the store
(SQLite and PostgreSQL) is read back as text and searched for each secret in
clear, as is every answer the API gave and every log record any logger wrote.
Credentials from environment variables are used the same way and must leave
no trace in the store at all.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from sqlalchemy import inspect, text

from connectors.crm.sync import CrmSync
from connectors.sandbox import hubspot as hubspot_sandbox
from connectors.sandbox import salesforce as salesforce_sandbox
from connectors.sandbox.server import running_sandbox
from leads.encryption import SecretBox, SecretKeyError
from leads.intake import submit
from leads.settings import Settings
from leads.store.outbox import CRM_SYNC
from leads.store.tables import CrmAccount
from tasks.drain import DrainLimits, drain

SECRET_KEY = "zq7rest-secret-key-not-the-default"


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[tuple[str, Any]]:
    with running_sandbox() as running:
        yield running


@pytest.fixture
def settings(sandbox, store, tmp_path) -> Settings:
    url, _ = sandbox
    httpx.post(f"{url}/_sandbox/reset").raise_for_status()
    return Settings(
        data_dir=tmp_path,
        database_url=store.url,
        crm="sandbox",
        sandbox_port=int(url.rsplit(":", 1)[1]),
        prefect_api_url=f"http://127.0.0.1:{closed_port()}/api",
        secret_key=SECRET_KEY,
    )


@pytest.fixture
def all_logs(caplog) -> pytest.LogCaptureFixture:
    """Every record of every logger, DEBUG included."""
    caplog.set_level(logging.DEBUG)
    return caplog


def hubspot_token(url: str) -> dict[str, Any]:
    return {
        "provider": "hubspot",
        "credentials": {"access_token": hubspot_sandbox.SANDBOX_TOKEN, "host": url},
    }


def hubspot_oauth(url: str) -> dict[str, Any]:
    return {
        "provider": "hubspot",
        "credentials": {
            "client_id": hubspot_sandbox.SANDBOX_CLIENT_ID,
            "client_secret": hubspot_sandbox.SANDBOX_CLIENT_SECRET,
            "refresh_token": hubspot_sandbox.SANDBOX_REFRESH_TOKEN,
            "host": url,
        },
    }


def salesforce_password(url: str) -> dict[str, Any]:
    return {
        "provider": "salesforce",
        "credentials": {
            "flow": "password",
            "token_url": f"{url}/services/oauth2/token",
            "client_id": salesforce_sandbox.SANDBOX_CLIENT_ID,
            "client_secret": salesforce_sandbox.SANDBOX_CLIENT_SECRET,
            "username": "sync@sandbox.example.com",
            "password": "sandbox-password",
            "security_token": "SANDBOXTOKEN",
            "external_id_field": "Web_Lead_Id__c",
        },
    }


# Each account, and the credential fields that are secrets.
ACCOUNTS = {
    "hubspot private app": (hubspot_token, ("access_token",)),
    "hubspot oauth": (hubspot_oauth, ("client_secret", "refresh_token")),
    "salesforce password": (
        salesforce_password,
        ("client_secret", "password", "security_token"),
    ),
}


def stored_text(store) -> dict[str, str]:
    """Every row of every table of the store, as text, by table."""
    found: dict[str, str] = {}
    with store.engine.connect() as connection:
        for table in inspect(connection).get_table_names():
            rows = connection.execute(text(f'SELECT * FROM "{table}"')).all()
            found[table] = "\n".join(
                " | ".join(_as_text(value) for value in row) for row in rows
            )
    return found


def _as_text(value: object) -> str:
    if isinstance(value, bytes | memoryview):
        return bytes(value).decode("utf-8", "replace")
    if isinstance(value, dict | list):
        return json.dumps(value)
    return "" if value is None else str(value)


def found_in(places: dict[str, str], secrets: dict[str, str]) -> list[str]:
    return [
        f"{label} in {place}"
        for place, content in places.items()
        for label, secret in secrets.items()
        if secret.lower() in content.lower()
    ]


def logged(caplog) -> dict[str, str]:
    formatter = logging.Formatter("%(levelname)s %(name)s: %(message)s")
    return {
        f"log record {n} ({r.name})": formatter.format(r)
        for n, r in enumerate(caplog.records)
    }


def sync_once(store, settings: Settings) -> dict[str, int]:
    sync = CrmSync(store, settings, flow_run_id=None)
    try:
        return drain(
            store,
            CRM_SYNC,
            owner="test",
            handle=sync.handle,
            limits=DrainLimits(idle_grace_seconds=0),
        )
    finally:
        sync.close()


@pytest.mark.parametrize("account", list(ACCOUNTS))
def test_saved_credentials_are_sealed_never_returned_and_never_logged(
    account, serve_api, settings, store, sandbox, all_logs
):
    url, state = sandbox
    make, secret_fields = ACCOUNTS[account]
    config = make(url)
    secrets = {name: config["credentials"][name] for name in secret_fields}
    submit(store, "default", {"email": "rest@example.com"}, channel="api", region="US")
    answers: dict[str, str] = {}

    with serve_api(settings).client() as api:
        saved = api.post("/api/crm/config", json=config)
        assert saved.status_code == 200, saved.text
        counts = sync_once(store, settings)
        for name, response in {
            "POST /api/crm/config": saved,
            "GET /api/crm/config": api.get("/api/crm/config"),
            "GET /api/crm/status": api.get("/api/crm/status"),
            "POST /api/crm/preview": api.post("/api/crm/preview", json={}),
            "GET /api/crm/failures": api.get("/api/crm/failures"),
        }.items():
            assert response.status_code == 200, (name, response.text)
            answers[name] = response.text

    # The account worked, and was the stored one.
    assert counts.get("created") == 1, counts
    view = json.loads(answers["GET /api/crm/config"])
    assert view["origin"] == "stored"
    assert {view["credentials"][name] for name in secret_fields} == {"***"}
    # Tokens the CRM issued for the credentials are secrets too.
    issued = {"a HubSpot OAuth access token": "sandbox-oauth-"}
    issued |= {
        f"Salesforce session {n}": token
        for n, token in enumerate(state.salesforce.sessions)
    }
    everything = secrets | issued
    tables = stored_text(store)
    # The search reads the saved row: its plain settings are there to see.
    assert url in tables["crm_accounts"]
    assert found_in(tables, everything) == []
    assert found_in(answers, everything) == []
    assert found_in(logged(all_logs), everything) == []
    # Sealed with ORCH_SECRET_KEY: that key opens them, another does not.
    with store.read("default") as scope:
        row = scope.get(CrmAccount, "default")
    assert SecretBox(SECRET_KEY).open(row.secrets) == secrets
    with pytest.raises(SecretKeyError):
        SecretBox("another key").open(row.secrets)


def test_refused_credentials_leave_nothing_behind(
    serve_api, settings, store, sandbox, all_logs
):
    url, _ = sandbox
    wrong_token = "zq7rest-wrong-hubspot-token"
    wrong_password = "zq7rest-wrong-salesforce-password"
    refused = salesforce_password(url)
    refused["credentials"]["password"] = wrong_password

    with serve_api(settings).client() as api:
        answers = {
            "hubspot": api.post(
                "/api/crm/config",
                json={
                    "provider": "hubspot",
                    "credentials": {"access_token": wrong_token, "host": url},
                },
            ),
            "salesforce": api.post("/api/crm/config", json=refused),
        }

    assert {name: a.status_code for name, a in answers.items()} == {
        "hubspot": 422,
        "salesforce": 422,
    }
    secrets = {"the refused token": wrong_token, "the refused password": wrong_password}
    assert found_in({n: a.text for n, a in answers.items()}, secrets) == []
    assert found_in(stored_text(store), secrets) == []
    assert found_in(logged(all_logs), secrets) == []


def test_credentials_from_the_environment_are_never_stored(
    serve_api, settings, store, sandbox, all_logs, monkeypatch
):
    url, _ = sandbox
    token = hubspot_sandbox.SANDBOX_TOKEN
    monkeypatch.setenv("ORCH_HUBSPOT_ACCESS_TOKEN", token)
    monkeypatch.setenv("ORCH_HUBSPOT_HOST", url)
    from_environment = settings.model_copy(update={"crm": "hubspot"})
    submit(store, "default", {"email": "env@example.com"}, channel="api", region="US")

    with serve_api(from_environment).client() as api:
        shown = api.get("/api/crm/config")
        status = api.get("/api/crm/status")
    counts = sync_once(store, from_environment)

    assert counts.get("created") == 1, counts
    assert shown.json()["origin"] == "environment"
    assert shown.json()["credentials"]["access_token"] == "***"
    assert status.json()["connected"] is True, status.text
    secrets = {"the environment's token": token}
    assert found_in({"config": shown.text, "status": status.text}, secrets) == []
    assert found_in(stored_text(store), secrets) == []
    assert found_in(logged(all_logs), secrets) == []
    with store.read("default") as scope:
        assert scope.get(CrmAccount, "default") is None
