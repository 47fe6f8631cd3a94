"""Reading CRM changes back onto leads, from the sandbox as HubSpot and Salesforce."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime, timedelta

import pytest

from connectors.crm.reconcile import (
    FIRST_WINDOW,
    INDEX_LAG,
    reconcile,
    tenants_with_crm_records,
)
from connectors.crm.sync import CrmSync
from leads.store.tables import (
    AuditEvent,
    CrmReconciliation,
    Lead,
    TimelineEvent,
    utcnow,
)
from leads.suppression import unsubscribe

RUN_ID = "00000000-0000-0000-0000-0000000000aa"
# Far enough ahead that the window (which ends INDEX_LAG before "now") covers
# what the test just changed; less than the one-minute overlap of consecutive
# windows, so the next run still reads what changes after.
AHEAD = INDEX_LAG + timedelta(seconds=1)


def lead_row(store, lead_id: str, tenant: str = "default") -> Lead:
    with store.read(tenant) as scope:
        return scope.get(Lead, lead_id)


def status_changes(store, lead_id: str) -> list[TimelineEvent]:
    with store.read("default") as scope:
        return list(
            scope.session.scalars(
                scope.select(TimelineEvent)
                .where(
                    TimelineEvent.lead_id == lead_id,
                    TimelineEvent.kind == "crm.status_changed",
                )
                .order_by(TimelineEvent.id)
            )
        )


def unsubscribe_decisions(store, lead_id: str) -> list[AuditEvent]:
    with store.read("default") as scope:
        return list(
            scope.session.scalars(
                scope.select(AuditEvent)
                .where(
                    AuditEvent.action == "lead.unsubscribed",
                    AuditEvent.target_id == lead_id,
                )
                .order_by(AuditEvent.id)
            )
        )


def watermark(store, account) -> datetime | None:
    with store.read("default") as scope:
        mark = scope.session.get(CrmReconciliation, ("default", account.budget_key))
        return None if mark is None else mark.reconciled_until


@pytest.fixture
def reconciler(store) -> Iterator[Callable]:
    """Reconciles a tenant as a crm_reconcile run does: its account and connector
    from `CrmSync.connection`, kept for the test."""
    syncs: list[CrmSync] = []

    def run(settings, *, now: datetime, tenant: str = "default"):
        sync = CrmSync(store, settings, RUN_ID)
        syncs.append(sync)
        account, connector = sync.connection(tenant)
        counts = reconcile(
            store, tenant, account, connector, flow_run_id=RUN_ID, now=now
        )
        return counts, account

    yield run
    for sync in syncs:
        sync.close()


class TestHubSpot:
    @pytest.fixture
    def synced(self, store, settings, take_in, run_sync) -> Lead:
        lead = take_in(email="ada@example.com", first_name="Ada")
        assert run_sync(settings)["created"] == 1
        return lead_row(store, lead.id)

    @pytest.fixture
    def change(self, sandbox_api) -> Callable[..., None]:
        """Changes a contact as HubSpot does: `hs_email_optout` is read-only."""

        def change(crm_id: str, **properties: str) -> None:
            sandbox_api.patch(
                f"/_sandbox/hubspot/contacts/{crm_id}", json={"properties": properties}
            ).raise_for_status()

        return change

    def test_the_first_run_records_the_crm_state_of_a_synced_lead(
        self, store, settings, synced, reconciler
    ):
        counts, _ = reconciler(settings, now=utcnow() + AHEAD)

        assert counts == {"read": 1, "changed": 1}
        assert lead_row(store, synced.id).crm_state == {
            "lifecycle_stage": "lead",
            "status": None,
            "converted": False,
            "opted_out": False,
            "replied_at": None,
        }
        # Noted, but the CRM holding a lead as we wrote it is no event.
        assert status_changes(store, synced.id) == []

    def test_a_customer_who_unsubscribed_is_converted_and_opted_out_in_one_event(
        self, store, settings, change, synced, reconciler
    ):
        reconciler(settings, now=utcnow() + AHEAD)
        change(
            synced.crm_id,
            lifecyclestage="customer",
            hs_email_optout="true",
        )

        counts, _ = reconciler(settings, now=utcnow() + AHEAD)

        assert counts == {"read": 1, "changed": 1}
        state = lead_row(store, synced.id).crm_state
        assert (state["converted"], state["opted_out"]) == (True, True)
        assert state["lifecycle_stage"] == "customer"
        # A move, not a first reading: sequences enrolled before it stop.
        assert datetime.fromisoformat(state["lifecycle_stage_changed_at"])
        [event] = status_changes(store, synced.id)
        assert event.source == "crm_reconcile"
        assert event.flow_run_id == RUN_ID
        assert event.detail == {
            "crm": "sandbox",
            "provider": "hubspot",
            "account": synced.crm_account,
            "crm_id": synced.crm_id,
            "changes": {
                "lifecycle_stage": {"was": "lead", "now": "customer"},
                "converted": {"was": False, "now": True},
                "opted_out": {"was": False, "now": True},
            },
        }

    def test_an_opt_out_set_in_the_crm_is_an_audited_decision_once(
        self, store, settings, change, synced, reconciler
    ):
        reconciler(settings, now=utcnow() + AHEAD)
        assert unsubscribe_decisions(store, synced.id) == []

        change(synced.crm_id, hs_email_optout="true")
        reconciler(settings, now=utcnow() + AHEAD)
        change(synced.crm_id, lifecyclestage="customer")
        reconciler(settings, now=utcnow() + AHEAD)

        [decision] = unsubscribe_decisions(store, synced.id)
        assert decision.actor == "system"
        assert decision.detail == {"source": "crm_reconcile", "crm_id": synced.crm_id}

    def test_an_opt_out_the_product_made_read_back_is_no_new_decision(
        self, store, settings, change, synced, reconciler
    ):
        with store.write("default") as scope:
            unsubscribe(scope, scope.get(Lead, synced.id), source="one_click")
        change(synced.crm_id, hs_email_optout="true")

        reconciler(settings, now=utcnow() + AHEAD)

        assert lead_row(store, synced.id).crm_state["opted_out"] is True
        [decision] = unsubscribe_decisions(store, synced.id)
        assert decision.detail == {"source": "one_click"}

    def test_a_second_run_over_the_same_change_changes_nothing(
        self, store, settings, change, synced, reconciler
    ):
        change(synced.crm_id, hs_email_optout="true")
        reconciler(settings, now=utcnow() + AHEAD)
        before = lead_row(store, synced.id).crm_state

        # The windows overlap, so the contact is read again.
        counts, _ = reconciler(settings, now=utcnow() + AHEAD)

        assert counts == {"read": 1, "changed": 0}
        assert lead_row(store, synced.id).crm_state == before
        assert len(status_changes(store, synced.id)) == 1

    def test_the_watermark_moves_to_the_end_of_each_window_read(
        self, store, settings, synced, reconciler
    ):
        first_now = utcnow() + AHEAD
        _, account = reconciler(settings, now=first_now)
        first = watermark(store, account)
        second_now = first_now + timedelta(minutes=5)

        reconciler(settings, now=second_now)

        assert first == first_now - INDEX_LAG
        assert watermark(store, account) == second_now - INDEX_LAG

    def test_a_change_younger_than_the_index_lag_waits_for_the_next_run(
        self, store, settings, change, synced, reconciler
    ):
        reconciler(settings, now=utcnow() + AHEAD)
        change(synced.crm_id, hs_email_optout="true")
        # Five seconds after the change: HubSpot's search may not list it yet.
        now = utcnow() + timedelta(seconds=5)

        early, _ = reconciler(settings, now=now)
        seen_early = lead_row(store, synced.id).crm_state["opted_out"]
        later, _ = reconciler(settings, now=utcnow() + AHEAD)

        assert (early["changed"], seen_early) == (0, False)
        assert later["changed"] == 1
        assert lead_row(store, synced.id).crm_state["opted_out"] is True

    def test_the_first_run_looks_back_one_day_only(
        self, store, settings, sandbox_api, take_in, reconciler
    ):
        long_ago = utcnow() - FIRST_WINDOW - timedelta(hours=1)
        sandbox_api.post(
            "/_sandbox/hubspot/contacts/seed",
            json={
                "contacts": [
                    {
                        "id": 7001,
                        "properties": {
                            "email": "old@example.com",
                            "lifecyclestage": "customer",
                        },
                        "createdate": long_ago.isoformat(),
                    }
                ]
            },
        ).raise_for_status()
        lead = take_in(email="old@example.com")
        with store.write("default") as scope:
            scope.get(Lead, lead.id).crm_id = "7001"

        counts, _ = reconciler(settings, now=utcnow() + AHEAD)

        assert counts == {}
        assert lead_row(store, lead.id).crm_state == {}

    def test_contacts_of_no_lead_are_read_and_change_nothing(
        self, store, settings, sandbox_api, synced, reconciler
    ):
        sandbox_api.post(
            "/_sandbox/hubspot/contacts/seed",
            json={"contacts": [{"properties": {"email": "stranger@example.com"}}]},
        ).raise_for_status()
        reconciler(settings, now=utcnow() + AHEAD)

        counts, _ = reconciler(settings, now=utcnow() + AHEAD)

        assert counts == {"read": 2, "changed": 0}


class TestSalesforce:
    @pytest.fixture
    def synced(self, store, salesforce_settings, take_in, run_sync) -> Lead:
        lead = take_in(email="grace@example.com", last_name="Hopper", company="Navy")
        assert run_sync(salesforce_settings)["created"] == 1
        return lead_row(store, lead.id)

    @pytest.fixture
    def change(self, sandbox_api, salesforce_leads) -> Callable[..., None]:
        """Changes a Lead in Salesforce: converts it, say, which no API call does."""

        def change(crm_id: str, **values: object) -> None:
            record = salesforce_leads()[crm_id]
            # Seeding stores the record as given; without LastModifiedDate it
            # gets the current time, as any change in Salesforce would.
            kept = {
                name: value
                for name, value in record.items()
                if name not in ("attributes", "LastModifiedDate")
            }
            sandbox_api.post(
                "/_sandbox/salesforce/records/Lead", json=[kept | values]
            ).raise_for_status()

        return change

    def test_a_converted_lead_that_opted_out_gets_one_event_naming_the_changes(
        self, store, salesforce_settings, change, synced, reconciler
    ):
        reconciler(salesforce_settings, now=utcnow() + AHEAD)
        assert lead_row(store, synced.id).crm_state["status"] == "Open - Not Contacted"
        change(
            synced.crm_id,
            IsConverted=True,
            HasOptedOutOfEmail=True,
            Status="Closed - Converted",
        )

        counts, _ = reconciler(salesforce_settings, now=utcnow() + AHEAD)

        assert counts == {"read": 1, "changed": 1}
        assert lead_row(store, synced.id).crm_state == {
            "lifecycle_stage": None,
            "status": "Closed - Converted",
            "converted": True,
            "opted_out": True,
            "replied_at": None,
        }
        [event] = status_changes(store, synced.id)
        assert event.detail == {
            "crm": "sandbox",
            "provider": "salesforce",
            "account": synced.crm_account,
            "crm_id": synced.crm_id,
            "changes": {
                "status": {"was": "Open - Not Contacted", "now": "Closed - Converted"},
                "converted": {"was": False, "now": True},
                "opted_out": {"was": False, "now": True},
            },
        }

    def test_a_second_run_changes_nothing_and_the_watermark_moves(
        self, store, salesforce_settings, change, synced, reconciler
    ):
        change(synced.crm_id, HasOptedOutOfEmail=True)
        first_now = utcnow() + AHEAD
        reconciler(salesforce_settings, now=first_now)
        second_now = first_now + timedelta(seconds=30)

        counts, account = reconciler(salesforce_settings, now=second_now)

        assert counts == {"read": 1, "changed": 0}
        assert lead_row(store, synced.id).crm_state["opted_out"] is True
        assert len(status_changes(store, synced.id)) == 1
        assert watermark(store, account) == second_now - INDEX_LAG


class TestFlowBuildingBlocks:
    def test_only_tenants_with_leads_the_crm_holds_are_reconciled(
        self, store, settings, take_in, run_sync
    ):
        take_in(email="synced@example.com")
        run_sync(settings)
        take_in(tenant="waiting", email="waiting@example.com")

        assert tenants_with_crm_records(store) == ["default"]

    def test_a_tenant_without_a_crm_has_no_connection_to_reconcile_with(
        self, store, make_settings
    ):
        sync = CrmSync(store, make_settings(crm="none"), RUN_ID)
        try:
            assert sync.connection("default") is None
        finally:
            sync.close()
