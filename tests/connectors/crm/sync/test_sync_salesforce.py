"""CRM sync of queued leads into the sandbox through the real Salesforce connector."""

from __future__ import annotations

from dataclasses import replace

import pytest

from connectors.crm.accounts import account_from_settings
from connectors.crm.mapping import load_mapping_document
from connectors.crm.sync import CrmSync
from leads.intake import submit_batch
from leads.store.outbox import CRM_SYNC
from leads.store.tables import Lead, OutboxItem, TimelineEvent
from tasks.drain import DrainLimits, drain

RUN_ID = "00000000-0000-0000-0000-000000000002"


def lead_row(store, lead_id: str) -> Lead:
    with store.read("default") as scope:
        return scope.get(Lead, lead_id)


def synced_events(store, lead_id: str) -> list[TimelineEvent]:
    with store.read("default") as scope:
        return list(
            scope.session.scalars(
                scope.select(TimelineEvent)
                .where(
                    TimelineEvent.lead_id == lead_id,
                    TimelineEvent.kind.in_(("crm.created", "crm.updated")),
                )
                .order_by(TimelineEvent.id)
            )
        )


def outbox_status(store, lead_id: str) -> str:
    with store.read("default") as scope:
        row = scope.session.scalars(
            scope.select(OutboxItem).where(
                OutboxItem.lead_id == lead_id, OutboxItem.topic == CRM_SYNC
            )
        ).one()
        return row.status


@pytest.fixture
def requests_served(sandbox_api):
    """Salesforce requests the sandbox served since the call, by kind."""
    sandbox_api.delete("/_sandbox/salesforce/requests").raise_for_status()
    return lambda: sandbox_api.get("/_sandbox/salesforce/requests").json()


@pytest.fixture
def drain_with(store):
    """Drains the CRM outbox with a CrmSync the test built, then closes it."""

    def run(sync: CrmSync, **limits: object) -> dict[str, int]:
        try:
            return drain(
                store,
                CRM_SYNC,
                owner="test-run",
                handle=sync.handle,
                limits=DrainLimits(idle_grace_seconds=0, **limits),
            )
        finally:
            sync.close()

    return run


class TestByExternalId:
    def test_a_new_lead_is_created_keyed_by_our_lead_id(
        self, store, salesforce_settings, salesforce_leads, take_in, run_sync
    ):
        lead = take_in(
            email="Ada.Lovelace@Example.com",
            first_name="Ada",
            last_name="Lovelace",
            company="Analytical Engines",
        )

        counts = run_sync(salesforce_settings)

        assert counts["created"] == 1
        [record] = salesforce_leads().values()
        assert record["Web_Lead_Id__c"] == lead.id
        assert record["Email"] == "ada.lovelace@example.com"
        assert (record["LastName"], record["Company"]) == (
            "Lovelace",
            "Analytical Engines",
        )
        stored = lead_row(store, lead.id)
        assert (stored.crm_sync_status, stored.crm_id) == ("synced", record["Id"])
        [event] = synced_events(store, lead.id)
        assert event.kind == "crm.created"
        assert (event.detail["crm"], event.detail["provider"]) == (
            "sandbox",
            "salesforce",
        )
        assert event.detail["account"] == stored.crm_account

    def test_a_second_sync_updates_the_same_lead(
        self, store, salesforce_settings, salesforce_leads, take_in, run_sync
    ):
        lead = take_in(email="grace@example.com", company="Navy")
        run_sync(salesforce_settings)
        take_in(email="grace@example.com", company="Remington Rand")

        counts = run_sync(salesforce_settings)

        assert counts["updated"] == 1
        [record] = salesforce_leads().values()
        assert record["Company"] == "Remington Rand"
        assert lead_row(store, lead.id).crm_id == record["Id"]
        kinds = [event.kind for event in synced_events(store, lead.id)]
        assert kinds == ["crm.created", "crm.updated"]

    def test_each_two_hundred_leads_take_one_upsert_call_and_a_run_one_describe(
        self, store, salesforce_settings, salesforce_leads, requests_served, run_sync
    ):
        submit_batch(
            store,
            "default",
            [{"email": f"bulk{n}@example.com"} for n in range(400)],
            channel="api",
            region="US",
        )

        # Two batches of 200 in one run.
        counts = run_sync(salesforce_settings, batch_size=200)

        assert counts["created"] == 400
        assert len(salesforce_leads()) == 400
        served = requests_served()
        assert served["composite_upsert"] == 2
        assert served["describe"] == 1
        assert sum(served.values()) == 2 + 1 + served["token"]
        assert served["token"] == 1


class TestDuplicateRule:
    """SF-06: the org's duplicate rule refuses the create and names its Lead."""

    @pytest.fixture
    def existing(self, sandbox_api) -> str:
        sandbox_api.patch(
            "/_sandbox/salesforce/settings", json={"duplicate_rule": True}
        ).raise_for_status()
        seeded = sandbox_api.post(
            "/_sandbox/salesforce/records/Lead",
            json=[
                {"Email": "mara@example.com", "LastName": "Quill", "Company": "Q Ltd"}
            ],
        )
        seeded.raise_for_status()
        [lead_id] = seeded.json()["ids"]
        return lead_id

    def test_the_lead_is_written_into_the_lead_the_rule_named(
        self, store, salesforce_settings, salesforce_leads, existing, take_in, run_sync
    ):
        lead = take_in(email="Mara@Example.com", first_name="Mara", company="Quill")

        counts = run_sync(salesforce_settings)

        assert counts["updated"] == 1
        records = salesforce_leads()
        assert list(records) == [existing]
        assert records[existing]["FirstName"] == "Mara"
        assert records[existing]["Web_Lead_Id__c"] == lead.id
        stored = lead_row(store, lead.id)
        assert (stored.crm_sync_status, stored.crm_id) == ("synced", existing)
        [event] = synced_events(store, lead.id)
        assert event.detail["note"] == "duplicate_rule"
        assert event.detail["crm_id"] == existing

    def test_the_next_sync_finds_it_by_our_id_without_the_rule(
        self,
        store,
        salesforce_settings,
        salesforce_leads,
        existing,
        take_in,
        run_sync,
    ):
        lead = take_in(email="mara@example.com", company="Quill")
        run_sync(salesforce_settings)
        take_in(email="mara@example.com", company="Quill & Daughters")

        counts = run_sync(salesforce_settings)

        assert counts["updated"] == 1
        assert list(salesforce_leads()) == [existing]
        assert salesforce_leads()[existing]["Company"] == "Quill & Daughters"
        assert "note" not in synced_events(store, lead.id)[-1].detail


class TestRefusals:
    def test_a_value_the_org_refuses_parks_the_lead_naming_the_field(
        self, store, salesforce_settings, salesforce_leads, take_in, drain_with
    ):
        account = account_from_settings(salesforce_settings)
        # Title holds 128 characters, and this mapping does not truncate it.
        document = {
            "provider": "salesforce",
            "fields": {
                "LastName": {"source": "last_name", "fallback": "[not provided]"},
                "Company": {"source": "company", "fallback": "[not provided]"},
                "Title": {"source": "job_title"},
            },
        }
        strict = replace(
            account, mapping=load_mapping_document(document, origin="test")
        )
        refused = take_in(email="long@example.com", job_title="Chief " * 30)
        fine = take_in(email="short@example.com", job_title="Engineer")

        counts = drain_with(
            CrmSync(store, salesforce_settings, RUN_ID, accounts=lambda t: strict)
        )

        assert (counts["parked"], counts["created"]) == (1, 1)
        stored = lead_row(store, refused.id)
        assert (stored.crm_sync_status, stored.crm_sync_reason) == (
            "parked",
            "validation:Title",
        )
        assert outbox_status(store, refused.id) == "parked"
        assert lead_row(store, fine.id).crm_sync_status == "synced"
        [record] = salesforce_leads().values()
        assert record["Web_Lead_Id__c"] == fine.id


class TestExpiredSession:
    """SF-01: the org ends the session mid-run; one fresh login, nothing lost."""

    def test_a_session_expired_between_batches_is_renewed_once(
        self,
        store,
        salesforce_settings,
        salesforce_leads,
        sandbox_api,
        requests_served,
        take_in,
    ):
        for n in range(3):
            take_in(email=f"s{n}@example.com")
        sync = CrmSync(store, salesforce_settings, RUN_ID)
        expired = False

        def sync_then_expire(claims):
            nonlocal expired
            counts = sync.handle(claims)
            if not expired:
                # The org ends every session between the run's two batches.
                sandbox_api.post(
                    "/_sandbox/salesforce/sessions/expire", json={}
                ).raise_for_status()
                expired = True
            return counts

        try:
            counts = drain(
                store,
                CRM_SYNC,
                owner="test-run",
                handle=sync_then_expire,
                limits=DrainLimits(idle_grace_seconds=0, batch_size=2),
            )
        finally:
            sync.close()

        assert counts["created"] == 3
        assert len(salesforce_leads()) == 3
        served = requests_served()
        assert served["token"] == 2
        # The upsert that met the expired session, and its replay.
        assert served["upsert"] == 2
        assert served["composite_upsert"] == 1
