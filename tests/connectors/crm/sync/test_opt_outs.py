"""A lead's e-mail opt-out reaching the CRM on its next sync (EM-02)."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta

import pytest

from connectors.crm.accounts import account_from_settings
from connectors.crm.mapping import load_mapping_document
from connectors.crm.reconcile import INDEX_LAG, reconcile
from connectors.crm.sync import CrmSync
from connectors.sandbox.hubspot import SANDBOX_TOKEN
from connectors.sandbox.hubspot.subscriptions import Definition
from leads.store.outbox import CRM_SYNC
from leads.store.tables import Lead, OutboxItem, TimelineEvent, utcnow

RUN_ID = "00000000-0000-0000-0000-0000000000e2"
UNSUBSCRIBE = "POST /communication-preferences/v3/unsubscribe"
# The reconciliation window ends INDEX_LAG before "now": a little ahead covers
# what a test just changed.
AHEAD = INDEX_LAG + timedelta(seconds=1)


def lead_row(store, lead_id: str) -> Lead:
    with store.read("default") as scope:
        return scope.get(Lead, lead_id)


def outbox_row(store, lead_id: str) -> OutboxItem:
    with store.read("default") as scope:
        return scope.session.scalars(
            scope.select(OutboxItem).where(
                OutboxItem.lead_id == lead_id, OutboxItem.topic == CRM_SYNC
            )
        ).one()


def events(store, lead_id: str, kind: str) -> list[TimelineEvent]:
    with store.read("default") as scope:
        return list(
            scope.session.scalars(
                scope.select(TimelineEvent).where(
                    TimelineEvent.lead_id == lead_id, TimelineEvent.kind == kind
                )
            )
        )


def hubspot_requests(sandbox_api) -> dict[str, int]:
    return sandbox_api.get("/_sandbox/hubspot/requests").json()["counts"]


def unsubscribed(sandbox_api) -> list[tuple[str, str]]:
    listed = sandbox_api.get("/_sandbox/hubspot/subscriptions").json()
    return [(item["email"], item["subscription_id"]) for item in listed]


def contact(sandbox_api, email: str) -> dict:
    listed = sandbox_api.get("/_sandbox/hubspot/contacts").json()
    return next(c for c in listed if c["properties"]["email"] == email)


def fault(sandbox_api, **spec) -> None:
    spec = {"vendor": "hubspot"} | spec
    assert sandbox_api.post("/_sandbox/faults", json=spec).status_code == 201


def with_opt_out(settings, **rule):
    """The sandbox account, its mapping's `opt_out` replaced by `rule`."""
    account = account_from_settings(settings)
    document = {
        "provider": "hubspot",
        "fields": {"firstname": {"source": "first_name"}},
        "opt_out": rule,
    }
    return replace(account, mapping=load_mapping_document(document, origin="test"))


class TestHubSpot:
    def test_an_opted_out_lead_is_unsubscribed_and_shows_opted_out(
        self, store, settings, sandbox_api, take_in, opt_out, run_sync
    ):
        lead = take_in(email="Nia.Cole@Example.com", first_name="Nia")
        opt_out(lead.id)

        counts = run_sync(settings)

        assert counts["created"] == 1
        assert unsubscribed(sandbox_api) == [("nia.cole@example.com", "1001")]
        held = contact(sandbox_api, "nia.cole@example.com")
        assert held["properties"]["hs_email_optout"] == "true"
        stored = lead_row(store, lead.id)
        assert (stored.crm_sync_status, stored.crm_id) == ("synced", held["id"])
        assert outbox_row(store, lead.id).status == "done"

    def test_a_lead_not_opted_out_makes_no_preferences_call(
        self, settings, sandbox_api, take_in, run_sync
    ):
        take_in(email="ada@example.com")
        sandbox_api.delete("/_sandbox/hubspot/requests")

        assert run_sync(settings)["created"] == 1

        assert not [
            route
            for route in hubspot_requests(sandbox_api)
            if "/communication-preferences/" in route
        ]

    def test_once_reconciliation_reads_the_opt_out_back_no_more_unsubscribes(
        self, store, settings, sandbox_api, take_in, opt_out, run_sync
    ):
        lead = take_in(email="nia@example.com")
        opt_out(lead.id)
        run_sync(settings)
        sync = CrmSync(store, settings, RUN_ID)
        try:
            account, connector = sync.connection("default")
            reconcile(store, "default", account, connector, now=utcnow() + AHEAD)
        finally:
            sync.close()
        assert lead_row(store, lead.id).crm_state["opted_out"] is True
        sandbox_api.delete("/_sandbox/hubspot/requests")
        take_in(email="nia@example.com", company="Cole & Co")

        counts = run_sync(settings)

        assert counts["updated"] == 1
        assert UNSUBSCRIBE not in hubspot_requests(sandbox_api)
        assert contact(sandbox_api, "nia@example.com")["properties"]["company"] == (
            "Cole & Co"
        )

    def test_an_opt_out_read_from_an_account_left_behind_is_written_again(
        self, store, settings, sandbox_api, take_in, opt_out, run_sync
    ):
        lead = take_in(email="nia@example.com")
        with store.write("default") as scope:
            moved = scope.get(Lead, lead.id)
            moved.crm_account = "hubspot:another-portal"
            moved.crm_state = {"opted_out": True}
        opt_out(lead.id)

        run_sync(settings)

        assert unsubscribed(sandbox_api) == [("nia@example.com", "1001")]

    def test_before_reconciliation_a_second_sync_unsubscribes_again_harmlessly(
        self, store, settings, sandbox_api, take_in, opt_out, run_sync
    ):
        lead = take_in(email="nia@example.com")
        opt_out(lead.id)
        run_sync(settings)
        take_in(email="nia@example.com", company="Cole & Co")

        counts = run_sync(settings)

        # HubSpot answers 400 "already unsubscribed"; the opt-out holds.
        assert counts["updated"] == 1
        assert hubspot_requests(sandbox_api)[UNSUBSCRIBE] == 2
        assert lead_row(store, lead.id).crm_sync_status == "synced"

    def test_an_address_unsubscribed_before_is_synced(
        self, store, settings, sandbox_api, take_in, opt_out, run_sync
    ):
        sandbox_api.post(
            "/communication-preferences/v3/unsubscribe",
            json={"emailAddress": "nia@example.com", "subscriptionId": "1001"},
            headers={"Authorization": f"Bearer {SANDBOX_TOKEN}"},
        ).raise_for_status()
        lead = take_in(email="nia@example.com")
        opt_out(lead.id)

        counts = run_sync(settings)

        assert counts["created"] == 1
        assert lead_row(store, lead.id).crm_sync_status == "synced"
        assert unsubscribed(sandbox_api) == [("nia@example.com", "1001")]

    def test_a_429_then_success_on_the_unsubscribe_syncs_the_lead_once(
        self, store, settings, sandbox_api, take_in, opt_out, run_sync
    ):
        lead = take_in(email="nia@example.com")
        opt_out(lead.id)
        fault(
            sandbox_api,
            path="/communication-preferences/v3/unsubscribe",
            status=429,
            headers={"Retry-After": "1"},
        )

        counts = run_sync(settings)

        assert (counts["created"], counts.get("retrying")) == (1, None)
        assert len(events(store, lead.id, "crm.created")) == 1
        assert events(store, lead.id, "crm.retrying") == []
        assert hubspot_requests(sandbox_api)[UNSUBSCRIBE] == 1
        assert unsubscribed(sandbox_api) == [("nia@example.com", "1001")]

    def test_an_unsubscribe_still_failing_leaves_the_lead_retrying_not_synced(
        self, store, settings, sandbox_api, take_in, opt_out, run_sync
    ):
        lead = take_in(email="nia@example.com")
        opt_out(lead.id)
        fault(sandbox_api, path="/unsubscribe", status=503, times=5)

        counts = run_sync(settings)

        assert (counts["retrying"], counts.get("created")) == (1, None)
        stored = lead_row(store, lead.id)
        assert (stored.crm_sync_status, stored.crm_sync_reason) == (
            "retrying",
            "unavailable",
        )
        assert stored.crm_synced_at is None
        assert outbox_row(store, lead.id).status == "pending"
        assert unsubscribed(sandbox_api) == []

    def test_a_400_parks_the_lead_with_the_vendors_reason(
        self, store, settings, sandbox_api, take_in, opt_out, run_sync
    ):
        account = with_opt_out(settings, subscription_id="999")
        lead = take_in(email="nia@example.com")
        opt_out(lead.id)

        counts = run_sync(settings, accounts=lambda tenant: account)

        assert (counts["parked"], counts.get("created")) == (1, None)
        stored = lead_row(store, lead.id)
        assert (stored.crm_sync_status, stored.crm_sync_reason) == (
            "parked",
            "VALIDATION_ERROR",
        )
        row = outbox_row(store, lead.id)
        assert row.status == "parked"
        assert "Subscription 999 does not exist" in row.last_error
        [parked] = events(store, lead.id, "crm.parked")
        assert parked.detail["code"] == "VALIDATION_ERROR"
        assert parked.detail["reason"] == "VALIDATION_ERROR"

    def test_without_a_single_marketing_type_the_lead_is_parked_naming_the_setting(
        self, store, settings, sandbox, sandbox_api, take_in, opt_out, run_sync
    ):
        _, state = sandbox
        state.hubspot.subscriptions.definitions = [
            Definition("1", "Marketing Information", "", "Marketing"),
            Definition("2", "Newsletter", "", "Marketing"),
        ]
        lead = take_in(email="nia@example.com")
        opt_out(lead.id)

        counts = run_sync(settings)

        assert (counts["parked"], counts.get("created")) == (1, None)
        assert lead_row(store, lead.id).crm_sync_reason == "config"
        last_error = outbox_row(store, lead.id).last_error
        assert "set `opt_out.subscription_id` in the HubSpot mapping" in last_error
        assert "1 (Marketing Information), 2 (Newsletter)" in last_error


class TestSalesforce:
    def test_an_opted_out_lead_gets_has_opted_out_of_email(
        self,
        store,
        salesforce_settings,
        salesforce_leads,
        take_in,
        opt_out,
        run_sync,
    ):
        lead = take_in(email="nia@example.com", last_name="Cole", company="Co")
        opt_out(lead.id)

        assert run_sync(salesforce_settings)["created"] == 1

        [held] = salesforce_leads().values()
        assert held["HasOptedOutOfEmail"] is True
        assert held["Web_Lead_Id__c"] == lead.id

    @pytest.mark.parametrize("opted_out_with_us", [False, True])
    def test_an_opt_out_a_salesperson_set_is_never_undone(
        self,
        store,
        salesforce_settings,
        salesforce_leads,
        sandbox_api,
        take_in,
        opt_out,
        run_sync,
        opted_out_with_us,
    ):
        lead = take_in(email="nia@example.com", last_name="Cole", company="Co")
        run_sync(salesforce_settings)
        [held] = salesforce_leads().values()
        assert held["HasOptedOutOfEmail"] is False
        # A salesperson ticks Email Opt Out in Salesforce (seeding stores the
        # Lead as given, which no API call of ours would).
        kept = {
            name: value
            for name, value in held.items()
            if name not in ("attributes", "LastModifiedDate")
        }
        sandbox_api.post(
            "/_sandbox/salesforce/records/Lead",
            json=[kept | {"HasOptedOutOfEmail": True}],
        ).raise_for_status()
        take_in(email="nia@example.com", company="Cole & Co")
        if opted_out_with_us:
            opt_out(lead.id)

        assert run_sync(salesforce_settings)["updated"] == 1

        [after] = salesforce_leads().values()
        assert (after["HasOptedOutOfEmail"], after["Company"]) == (True, "Cole & Co")
