"""The CRM routes over HTTP: configuration tested live, status, failures, previews."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import httpx
import pytest
from sqlalchemy import update

from connectors.crm.sync import CrmSync
from connectors.sandbox import hubspot as hubspot_sandbox
from connectors.sandbox.server import running_sandbox
from leads.intake import submit
from leads.settings import Settings
from leads.store.outbox import CRM_SYNC
from leads.store.tables import CrmAccount, Lead, OutboxItem
from tasks.drain import DrainLimits, drain


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def sandbox() -> Iterator[str]:
    with running_sandbox() as (url, _state):
        yield url


@pytest.fixture
def settings(sandbox, store, tmp_path) -> Settings:
    httpx.post(f"{sandbox}/_sandbox/reset").raise_for_status()
    return Settings(
        data_dir=tmp_path,
        database_url=store.url,
        crm="sandbox",
        sandbox_port=int(sandbox.rsplit(":", 1)[1]),
        prefect_api_url=f"http://127.0.0.1:{closed_port()}/api",
    )


@pytest.fixture
def api(serve_api, settings) -> Iterator[httpx.Client]:
    server = serve_api(settings)
    with server.client() as http:
        yield http


def sandbox_config(sandbox: str, **changes: object) -> dict:
    return {
        "provider": "hubspot",
        "credentials": {"access_token": hubspot_sandbox.SANDBOX_TOKEN, "host": sandbox},
    } | changes


def sync_now(store, settings) -> dict[str, int]:
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


class TestConfig:
    def test_a_working_account_is_saved_with_its_secrets_sealed_and_masked(
        self, api, store, sandbox
    ):
        response = api.post("/api/crm/config", json=sandbox_config(sandbox))

        assert response.status_code == 200, response.text
        view = response.json()
        assert view["origin"] == "stored"
        assert view["credentials"]["access_token"] == "***"
        assert hubspot_sandbox.SANDBOX_TOKEN not in response.text
        assert api.get("/api/crm/config").json() == view
        with store.read("default") as scope:
            row = scope.get(CrmAccount, "default")
        assert row.provider == "hubspot"
        assert hubspot_sandbox.SANDBOX_TOKEN not in (row.secrets or "")
        assert hubspot_sandbox.SANDBOX_TOKEN not in str(row.settings)

    def test_refused_credentials_are_422_and_nothing_is_saved(
        self, api, store, sandbox
    ):
        config = sandbox_config(
            sandbox, credentials={"access_token": "wrong", "host": sandbox}
        )

        response = api.post("/api/crm/config", json=config)

        assert response.status_code == 422
        problem = response.json()
        assert problem["errors"][0]["field"] == "credentials"
        assert problem["errors"][0]["reason"] == "auth"
        assert "wrong" not in response.text
        with store.read("default") as scope:
            assert scope.get(CrmAccount, "default") is None

    def test_a_mapping_that_does_not_fit_the_crm_names_each_field(self, api, sandbox):
        mapping = {
            "provider": "hubspot",
            "fields": {
                "firstname": {"source": "first_name"},
                "fistname": {"source": "last_name"},
                "lifecyclestage": {"constant": "champion"},
            },
        }

        response = api.post(
            "/api/crm/config", json=sandbox_config(sandbox, mapping=mapping)
        )

        assert response.status_code == 422
        fields = {error["field"] for error in response.json()["errors"]}
        assert fields == {"mapping.fields.fistname", "mapping.fields.lifecyclestage"}
        messages = " ".join(e["message"] for e in response.json()["errors"])
        assert "firstname" in messages  # the closest real name is suggested

    def test_missing_credentials_are_named(self, api, sandbox):
        response = api.post(
            "/api/crm/config",
            json={"provider": "salesforce", "credentials": {"flow": "password"}},
        )

        assert response.status_code == 422
        assert "token_url" in response.json()["detail"]


class TestStatusAndFailures:
    def test_status_counts_what_waits_and_what_was_synced(self, api, store, settings):
        for n in range(3):
            submit(
                store,
                "default",
                {"email": f"s{n}@example.com"},
                channel="api",
                region="US",
            )

        before = api.get("/api/crm/status").json()
        sync_now(store, settings)
        after = api.get("/api/crm/status").json()

        assert before["connected"] is True
        assert before["provider"] == "hubspot" and before["origin"] == "sandbox"
        assert (before["pending"], before["synced"]) == (3, 0)
        assert (after["pending"], after["synced"]) == (0, 3)
        assert after["last_sync_at"] is not None
        assert after["budget"]["calls_made"] >= 2
        assert after["budget"]["calls_per_window"] == 190

    def test_an_unreachable_crm_is_reported_not_connected(self, api, sandbox):
        httpx.post(
            f"{sandbox}/_sandbox/faults",
            json={"vendor": "hubspot", "status": 503, "times": 100},
        ).raise_for_status()
        try:
            status = api.get("/api/crm/status").json()
        finally:
            httpx.delete(f"{sandbox}/_sandbox/faults")

        assert status["connected"] is False
        assert status["detail"].startswith("unavailable")

    def test_failures_list_parked_leads_with_the_vendors_reason(
        self, api, store, settings, sandbox
    ):
        lead = submit(
            store, "default", {"email": "p@example.com"}, channel="api", region="US"
        ).lead
        httpx.post(
            f"{sandbox}/_sandbox/faults",
            json={
                "vendor": "hubspot",
                "path": "/batch/",
                "status": 429,
                "body": {"status": "error", "message": "daily", "policyName": "DAILY"},
                "times": 5,
            },
        ).raise_for_status()

        sync_now(store, settings)
        page = api.get("/api/crm/failures").json()["data"]

        assert [(f["lead_id"], f["status"], f["reason"]) for f in page] == [
            (lead.id, "parked", "rate_limited_daily")
        ]
        assert page[0]["error"].startswith("rate_limited_daily")
        assert page[0]["next_attempt_at"] is not None


class TestPreview:
    def test_a_waiting_lead_shows_what_would_be_created_then_nothing_to_change(
        self, api, store, settings
    ):
        lead = submit(
            store,
            "default",
            {"email": "prev@example.com", "first_name": "Pre", "company": "View"},
            channel="api",
            region="US",
        ).lead

        first = api.post("/api/crm/preview", json={}).json()
        sync_now(store, settings)
        second = api.post("/api/crm/preview", json={"lead_ids": [lead.id]}).json()

        [item] = first["data"]
        assert item["action"] == "create"
        changes = {c["field"]: c for c in item["changes"]}
        assert changes["firstname"] == {
            "field": "firstname",
            "current": None,
            "new": "Pre",
        }
        [again] = second["data"]
        assert again["action"] == "no_change", again
        assert again["crm_id"]

    def test_a_preview_writes_nothing(self, api, store, sandbox):
        submit(store, "default", {"email": "n@example.com"}, channel="api", region="US")

        api.post("/api/crm/preview", json={})

        assert httpx.get(f"{sandbox}/_sandbox/hubspot/contacts").json() == []


class TestRunsWithPrefectDown:
    def test_sync_now_is_503_and_says_leads_stay_queued(self, api):
        response = api.post("/api/crm/sync")

        assert response.status_code == 503
        assert response.headers["Retry-After"]

    def test_retry_requeues_parked_leads_even_when_no_run_can_start(
        self, api, store, settings, sandbox
    ):
        lead = submit(
            store, "default", {"email": "r@example.com"}, channel="api", region="US"
        ).lead
        with store.write("default") as scope:
            scope.session.execute(
                update(OutboxItem)
                .where(OutboxItem.lead_id == lead.id)
                .values(status="parked")
            )
            scope.session.execute(
                update(Lead).where(Lead.id == lead.id).values(crm_sync_status="parked")
            )

        response = api.post("/api/crm/retry", json={"lead_ids": [lead.id]})

        assert response.status_code == 503
        assert api.get(f"/api/leads/{lead.id}").json()["crm_sync_status"] == "pending"
        assert sync_now(store, settings)["created"] == 1


def test_failures_come_a_page_at_a_time_and_a_foreign_cursor_is_refused(api, store):
    for n in range(3):
        submit(
            store, "default", {"email": f"f{n}@example.com"}, channel="api", region="US"
        )
    with store.write("default") as scope:
        scope.session.execute(
            update(Lead).values(crm_sync_status="parked", crm_sync_reason="auth")
        )

    first = api.get("/api/crm/failures", params={"limit": 2}).json()
    second = api.get(
        "/api/crm/failures", params={"limit": 2, "cursor": first["next_cursor"]}
    ).json()
    bad = api.get("/api/crm/failures", params={"cursor": "bm90IG91cnM"})

    assert len(first["data"]) == 2 and second["next_cursor"] is None
    ids = [f["lead_id"] for f in first["data"] + second["data"]]
    assert len(set(ids)) == 3
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "cursor"


def test_forgetting_the_saved_account_brings_back_the_environments(api, sandbox):
    assert api.post("/api/crm/config", json=sandbox_config(sandbox)).status_code == 200
    assert api.get("/api/crm/config").json()["origin"] == "stored"

    assert api.delete("/api/crm/config").status_code == 204

    assert api.get("/api/crm/config").json()["origin"] == "sandbox"
    assert api.delete("/api/crm/config").status_code == 404
