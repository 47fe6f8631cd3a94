"""An erased person deleted from the CRM by the sync drain, through the real clients."""

from __future__ import annotations

import json
from datetime import timedelta

from sqlalchemy import delete, update

from connectors.sandbox.hubspot import SANDBOX_TOKEN
from leads.encryption import secret_box
from leads.erasure import erase
from leads.store.outbox import CRM_SYNC
from leads.store.tables import AuditEvent, Lead, OutboxItem, TimelineEvent, utcnow

GDPR_DELETE = "POST /crm/v3/objects/contacts/gdpr-delete"


def erase_lead(store, settings, lead_id: str):
    with store.write("default") as scope:
        return erase(
            scope,
            lead_id,
            actor="key-1",
            seal=secret_box(settings).seal,
            trigger={"via": "test"},
        )


def contacts(sandbox_api) -> dict[str, dict]:
    return {
        c["properties"]["email"]: c
        for c in sandbox_api.get("/_sandbox/hubspot/contacts").json()
    }


def hubspot_calls(sandbox_api, route: str) -> list[dict]:
    latest = sandbox_api.get("/_sandbox/hubspot/requests").json()["latest"]
    method, _, path = route.partition(" ")
    return [r for r in latest if r["method"] == method and r["route"] == path]


def erase_rows(store) -> list[OutboxItem]:
    with store.read("default") as scope:
        return list(
            scope.session.scalars(
                scope.select(OutboxItem).where(
                    OutboxItem.topic == CRM_SYNC, OutboxItem.key.like("erase:%")
                )
            )
        )


def audit(store, action: str) -> list[AuditEvent]:
    with store.read("default") as scope:
        return list(
            scope.session.scalars(
                scope.select(AuditEvent).where(AuditEvent.action == action)
            )
        )


def make_due(store) -> None:
    with store.engine.begin() as connection:
        connection.execute(
            update(OutboxItem)
            .where(OutboxItem.status == "pending")
            .values(available_at=utcnow() - timedelta(seconds=1))
        )


def fault(sandbox_api, **spec) -> None:
    assert sandbox_api.post("/_sandbox/faults", json=spec).status_code == 201


class TestHubSpot:
    def test_a_synced_contact_is_gdpr_deleted_by_id_and_the_row_leaves_no_trace(
        self, store, settings, sandbox_api, take_in, run_sync
    ):
        lead = take_in(email="Mary.Somerville@example.com", first_name="Mary")
        run_sync(settings)
        contact = contacts(sandbox_api)["mary.somerville@example.com"]

        done = erase_lead(store, settings, lead.id)
        counts = run_sync(settings)

        assert done.crm_erasure_queued is True
        assert counts["erased"] == 1
        assert contacts(sandbox_api) == {}
        [call] = hubspot_calls(sandbox_api, GDPR_DELETE)
        assert json.loads(call["body"]) == {"objectId": contact["id"]}
        assert erase_rows(store) == []
        [record] = audit(store, "crm.erased")
        assert record.target_id == lead.id
        assert (record.detail["deleted"], record.detail["not_found"]) == (1, 0)

    def test_hubspot_down_is_retried_later_and_then_the_contact_is_deleted(
        self, store, settings, sandbox_api, take_in, run_sync
    ):
        lead = take_in(email="ada@example.com")
        run_sync(settings)
        erase_lead(store, settings, lead.id)
        fault(
            sandbox_api,
            vendor="hubspot",
            path="/gdpr-delete",
            status=503,
            times=50,
        )

        first = run_sync(settings)
        [waiting] = erase_rows(store)
        sandbox_api.delete("/_sandbox/faults")
        make_due(store)
        second = run_sync(settings)

        assert first["erase_retrying"] == 1
        assert (waiting.status, waiting.attempts) == ("pending", 1)
        assert waiting.available_at > utcnow()
        assert "unavailable" in waiting.last_error
        assert second["erased"] == 1
        assert contacts(sandbox_api) == {}
        assert erase_rows(store) == []
        assert len(audit(store, "crm.erased")) == 1

    def test_a_contact_written_without_its_id_coming_back_is_found_and_deleted(
        self, store, settings, sandbox_api, take_in, run_sync
    ):
        lead = take_in(email="lost.answer@example.com")
        run_sync(settings)
        contact = contacts(sandbox_api)["lost.answer@example.com"]
        # As when HubSpot wrote the contact but its answer never arrived.
        with store.engine.begin() as connection:
            connection.execute(
                update(Lead)
                .where(Lead.id == lead.id)
                .values(crm_id=None, crm_sync_status="retrying")
            )
            connection.execute(
                delete(TimelineEvent).where(TimelineEvent.kind.like("crm.%"))
            )

        erase_lead(store, settings, lead.id)
        [owed] = erase_rows(store)
        counts = run_sync(settings)

        assert "lost.answer" not in json.dumps(owed.payload)
        assert counts["erased"] == 1
        assert contacts(sandbox_api) == {}
        [call] = hubspot_calls(sandbox_api, GDPR_DELETE)
        # By the id read back, never by e-mail (which would blocklist it).
        assert json.loads(call["body"]) == {"objectId": contact["id"]}

    def test_a_contact_already_gone_from_hubspot_counts_as_deleted(
        self, store, settings, sandbox_api, take_in, run_sync
    ):
        lead = take_in(email="gone@example.com")
        run_sync(settings)
        sandbox_api.post("/_sandbox/reset").raise_for_status()

        erase_lead(store, settings, lead.id)
        counts = run_sync(settings)

        assert counts["erased"] == 1
        [record] = audit(store, "crm.erased")
        assert (record.detail["deleted"], record.detail["not_found"]) == (0, 1)

    def test_a_lead_erased_before_its_first_sync_is_never_written(
        self, store, settings, sandbox_api, take_in, run_sync
    ):
        lead = take_in(email="early@example.com")

        done = erase_lead(store, settings, lead.id)
        run_sync(settings)

        assert done.crm_erasure_queued is False
        assert contacts(sandbox_api) == {}
        assert hubspot_calls(sandbox_api, GDPR_DELETE) == []

    def test_a_refused_token_parks_the_erasure_without_its_address(
        self, store, settings, sandbox_api, take_in, run_sync
    ):
        lead = take_in(email="parked@example.com")
        run_sync(settings)
        with store.engine.begin() as connection:
            connection.execute(
                update(Lead)
                .where(Lead.id == lead.id)
                .values(crm_id=None, crm_sync_status="retrying")
            )
            connection.execute(delete(TimelineEvent))
        erase_lead(store, settings, lead.id)
        fault(sandbox_api, vendor="hubspot", path="/batch/read", status=401, times=5)

        counts = run_sync(settings)

        [parked] = erase_rows(store)
        assert counts["erase_parked"] == 1
        assert parked.status == "parked"
        assert "sealed" not in parked.payload["targets"][0]
        [record] = audit(store, "crm.erase_failed")
        assert record.detail["reason"] == "auth"


class TestSalesforce:
    def test_a_synced_lead_is_deleted_and_a_repeat_finds_it_gone(
        self,
        store,
        salesforce_settings,
        salesforce_leads,
        sandbox_api,
        take_in,
        run_sync,
    ):
        lead = take_in(email="emmy.noether@example.com", last_name="Noether")
        run_sync(salesforce_settings)
        [record_id] = salesforce_leads()

        erase_lead(store, salesforce_settings, lead.id)
        counts = run_sync(salesforce_settings)

        assert counts["erased"] == 1
        assert salesforce_leads() == {}
        requests = sandbox_api.get("/_sandbox/salesforce/requests").json()
        assert requests["delete"] == 1
        [record] = audit(store, "crm.erased")
        assert record.detail["deleted"] == 1

    def test_salesforce_down_is_retried_later_and_then_the_lead_is_deleted(
        self,
        store,
        salesforce_settings,
        salesforce_leads,
        sandbox_api,
        take_in,
        run_sync,
    ):
        lead = take_in(email="sophie.germain@example.com", last_name="Germain")
        run_sync(salesforce_settings)
        erase_lead(store, salesforce_settings, lead.id)
        fault(
            sandbox_api,
            vendor="salesforce",
            method="DELETE",
            path="/sobjects/Lead/",
            status=503,
            times=50,
        )

        first = run_sync(salesforce_settings)
        still = salesforce_leads()
        sandbox_api.delete("/_sandbox/faults")
        make_due(store)
        second = run_sync(salesforce_settings)

        assert first["erase_retrying"] == 1
        assert len(still) == 1
        assert second["erased"] == 1
        assert salesforce_leads() == {}
        assert erase_rows(store) == []


def test_the_sandbox_answers_gdpr_delete_as_hubspot_does(sandbox_api):
    headers = {"Authorization": f"Bearer {SANDBOX_TOKEN}"}
    created = sandbox_api.post(
        "/crm/v3/objects/contacts",
        json={"properties": {"email": "x@example.com"}},
        headers=headers,
    ).json()

    deleted = sandbox_api.post(
        "/crm/v3/objects/contacts/gdpr-delete",
        json={"objectId": created["id"]},
        headers=headers,
    )
    again = sandbox_api.post(
        "/crm/v3/objects/contacts/gdpr-delete",
        json={"objectId": created["id"]},
        headers=headers,
    )
    by_email = sandbox_api.post(
        "/crm/v3/objects/contacts/gdpr-delete",
        json={"objectId": "nobody@example.com", "idProperty": "email"},
        headers=headers,
    )
    missing = sandbox_api.post(
        "/crm/v3/objects/contacts/gdpr-delete", json={}, headers=headers
    )

    assert (deleted.status_code, deleted.content) == (204, b"")
    assert again.status_code == 404
    assert again.json()["status"] == "error"
    assert again.json()["category"] == "OBJECT_NOT_FOUND"
    assert "correlationId" in again.json()
    # HubSpot takes an unknown address (and blocklists it) rather than refusing.
    assert by_email.status_code == 204
    assert missing.status_code == 400
    assert missing.json()["category"] == "VALIDATION_ERROR"
